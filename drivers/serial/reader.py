"""The async owner of one serial port: open, frame, turn frames into samples, survive unplugging.

Life of a reader (each arrow is reported once, through ``on_status`` and the log)::

    STARTING -> WAITING (port open) -> ONLINE (a valid frame) <-> STALE (no valid frame for
    `stale_after` seconds) ... -> UNAVAILABLE (the port cannot be opened, or vanished: retry with
    jittered, capped exponential backoff) -> WAITING -> ONLINE ("recovered") ... -> CLOSED

Why not ``serial_asyncio_fast``: its transport closes the port from an untracked background task
through the thread-pool executor, so after an unplug there is no way to know when the file
descriptor is really gone, and the close outlives a cancelled reader. Here pyserial opens and
configures the port (termios: baud rate, parity, exclusive lock), and the reader watches the file
descriptor with ``loop.add_reader`` and reads it with ``os.read``: a hang-up shows up at once as
end of file or ``EIO``, and closing is synchronous. Works the same on ptys and USB adapters.

Samples (device = ``settings.device``):

- ``sds011``: ``pm25``, ``pm10`` (µg/m³);
- ``nmea``: ``latitude``, ``longitude`` (degrees), ``altitude`` (m), ``satellites``,
  ``fix_quality`` (0 = no fix); each epoch with status A also calls ``on_time_fix(utc)``;
- ``lines``: one point per named group of the pattern.

Quality: an SDS011 frame that arrived whole (both markers in place) but failed its checksum gives
``pm25``/``pm10`` with ``Quality.BAD_DATA`` and value None: the sensor is there, its data is not to
be trusted. Bytes that cannot be pinned to a point (garbage, partial frames, unmatched lines, NMEA
sentences) are only counted (``stats()``) and passed to ``on_error``. Entering STALE gives every
point once with ``Quality.TIMEOUT``, entering UNAVAILABLE once with ``Quality.UNAVAILABLE``, so
the latest-values table never keeps presenting an old value as current.

Callbacks run on the event loop and must not block or raise: an exception from one stops the
reader and is raised from :meth:`SerialReader.run` (or :meth:`SerialReader.aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import Any, Self

import serial

from drivers.backoff import Backoff
from drivers.sample import Quality, Sample
from drivers.serial.framers import (
    LINE_MAX,
    NMEA_MAX_LINE,
    DustReading,
    ErrorKind,
    Frame,
    FrameError,
    Framer,
    GpsFix,
    LineFramer,
    LineReading,
    NmeaFramer,
    Sds011Framer,
)

__all__ = [
    "ErrorCallback",
    "FrameCallback",
    "LinkState",
    "Parity",
    "ReaderStats",
    "SamplesCallback",
    "SerialProtocol",
    "SerialReader",
    "SerialSettings",
    "StatusCallback",
    "TimeFixCallback",
    "make_framer",
]

log = logging.getLogger(__name__)

SDS011_POINTS = ("pm25", "pm10")
NMEA_POINTS = ("latitude", "longitude", "altitude", "satellites", "fix_quality")
READ_SIZE = 4096


class SerialProtocol(StrEnum):
    SDS011 = "sds011"
    NMEA = "nmea"
    LINES = "lines"


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class LinkState(StrEnum):
    """Where a reader is in its life; every change is reported once."""

    STARTING = "starting"        # created, port not tried yet
    WAITING = "waiting"          # port open, no valid frame since it opened
    ONLINE = "online"            # valid frames arriving
    STALE = "stale"              # port open, but no valid frame for `stale_after` seconds
    UNAVAILABLE = "unavailable"  # the port cannot be opened or vanished; retrying with backoff
    CLOSED = "closed"            # stopped for good


_PROBLEMS = (LinkState.STALE, LinkState.UNAVAILABLE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSettings:
    """Everything a reader needs to know about one serial sensor, with no config-file types.

    `period` is how often the sensor is expected to send (seconds); the line is STALE after
    `stale_periods` periods without a valid frame. `scales`/`offsets` apply to the named groups
    of a `lines` pattern: value = raw x scale + offset.
    """

    name: str                                   # the bus name, used in logs and errors
    port: str                                   # a device path; a stable symlink (by-id) is best
    protocol: SerialProtocol
    device: str                                 # the device name samples are reported under
    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: float = 1
    pattern: str | None = None                  # `lines` only: a regex with named groups
    scales: Mapping[str, float] = field(default_factory=dict)
    offsets: Mapping[str, float] = field(default_factory=dict)
    period: float = 1.0
    stale_periods: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    max_line: int | None = None                 # default: 120 for NMEA, 256 for lines

    def __post_init__(self) -> None:
        where = f"serial {self.name}"
        object.__setattr__(self, "protocol", SerialProtocol(self.protocol))
        object.__setattr__(self, "parity", Parity(self.parity))
        object.__setattr__(self, "scales", MappingProxyType(dict(self.scales)))
        object.__setattr__(self, "offsets", MappingProxyType(dict(self.offsets)))
        if self.baudrate <= 0:
            raise ValueError(f"{where}: baudrate must be positive, not {self.baudrate}")
        if self.bytesize not in (5, 6, 7, 8):
            raise ValueError(f"{where}: bytesize must be 5, 6, 7 or 8, not {self.bytesize}")
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"{where}: stopbits must be 1, 1.5 or 2, not {self.stopbits}")
        if not self.period > 0 or not self.stale_periods > 0:
            raise ValueError(f"{where}: period and stale_periods must be positive")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError(f"{where}: need 0 < reconnect_min <= reconnect_max")
        if self.protocol is SerialProtocol.LINES:
            if not self.pattern:
                raise ValueError(f"{where}: protocol lines needs a pattern with named groups")
            try:
                make_framer(self)
            except (re.error, ValueError) as err:
                raise ValueError(f"{where}: pattern: {err}") from err
        elif self.pattern is not None or self.scales or self.offsets:
            raise ValueError(
                f"{where}: pattern, scales and offsets apply to protocol lines only, "
                f"not {self.protocol}")

    @property
    def stale_after(self) -> float:
        """Seconds without a valid frame before the line counts as stale."""
        return self.period * self.stale_periods

    @property
    def points(self) -> tuple[str, ...]:
        """The point names this sensor's samples can carry."""
        if self.protocol is SerialProtocol.SDS011:
            return SDS011_POINTS
        if self.protocol is SerialProtocol.NMEA:
            return NMEA_POINTS
        assert self.pattern is not None
        return tuple(re.compile(self.pattern).groupindex)


def make_framer(settings: SerialSettings) -> Framer:
    """The framer for a protocol, configured from the settings."""
    if settings.protocol is SerialProtocol.SDS011:
        return Sds011Framer()
    if settings.protocol is SerialProtocol.NMEA:
        return NmeaFramer(max_line=settings.max_line or NMEA_MAX_LINE)
    assert settings.pattern is not None
    return LineFramer(settings.pattern, scales=settings.scales, offsets=settings.offsets,
                      max_line=settings.max_line or LINE_MAX)


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of one reader, for quality reports and `edgegw check`."""

    state: LinkState
    frames: int                          # valid frames delivered
    errors: Mapping[ErrorKind, int]      # framing errors by kind
    dropped_bytes: int
    opens: int                           # times the port was opened
    open_failures: int                   # attempts to open it that failed
    losses: int                          # times an open port was lost (unplug, read error)
    last_frame: float | None             # wall-clock time of the last valid frame

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


SamplesCallback = Callable[[list[Sample]], object]
StatusCallback = Callable[[LinkState, str], object]
TimeFixCallback = Callable[[datetime], object]
ErrorCallback = Callable[[FrameError], object]
FrameCallback = Callable[[Frame], object]


class SerialReader:
    """Reads one serial sensor for as long as it runs; see the module docstring.

    Use it as an async context manager (it runs in its own named task), or ``await run()``
    inside the caller's task group.
    """

    def __init__(
        self,
        settings: SerialSettings,
        *,
        on_samples: SamplesCallback,
        on_status: StatusCallback | None = None,
        on_time_fix: TimeFixCallback | None = None,
        on_error: ErrorCallback | None = None,
        on_frame: FrameCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._on_samples = on_samples
        self._on_status = on_status
        self._on_time_fix = on_time_fix
        self._on_error = on_error
        self._on_frame = on_frame
        self._clock = clock
        self._framer = make_framer(settings)
        self._state = LinkState.STARTING
        self._problem_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._closed = False
        self._waiters: list[tuple[frozenset[LinkState], asyncio.Future[LinkState]]] = []
        self._last_good_mono = 0.0
        self._last_frame: float | None = None
        self._frames = 0
        self._opens = 0
        self._open_failures = 0
        self._losses = 0
        self._good_since_open = False

    def __repr__(self) -> str:
        s = self.settings
        return f"<SerialReader {s.name} {s.port} {s.protocol} {self._state}>"

    # --------------------------------------------------------------------------- public API
    @property
    def state(self) -> LinkState:
        return self._state

    def stats(self) -> ReaderStats:
        fs = self._framer.stats()
        return ReaderStats(
            state=self._state,
            frames=self._frames,
            errors=fs.errors,
            dropped_bytes=fs.dropped_bytes,
            opens=self._opens,
            open_failures=self._open_failures,
            losses=self._losses,
            last_frame=self._last_frame,
        )

    async def wait_for_state(self, *states: LinkState) -> LinkState:
        """Return as soon as the reader is in one of `states` (at once if it already is)."""
        if self._state in states:
            return self._state
        fut: asyncio.Future[LinkState] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._waiters.append(entry)
        try:
            return await fut
        finally:
            self._waiters.remove(entry)

    async def __aenter__(self) -> Self:
        if self._closed or self._task is not None or self._running:
            raise RuntimeError(f"{self!r} is already running or closed")
        self._task = asyncio.create_task(self.run(), name=f"serial:{self.settings.name}")
        self._task.add_done_callback(self._log_death)
        return self

    def _log_death(self, task: asyncio.Task[None]) -> None:
        # Nobody awaits our own task until aclose(): say at once why the sensor went quiet.
        if not task.cancelled() and task.exception() is not None:
            log.error("serial %s: reader stopped by an error (raised again from aclose): %r",
                      self.settings.name, task.exception())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the port; safe to call twice, re-raises a callback's error."""
        task, self._task = self._task, None
        if task is None:
            if self._running:
                raise RuntimeError(f"{self!r} runs in the caller's task: cancel that task")
            self._closed = True
            self._set_state(LinkState.CLOSED, "closed")
            return
        self._closed = True
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise          # we are being cancelled ourselves: never swallow that
        finally:
            self._set_state(LinkState.CLOSED, "closed")

    async def run(self) -> None:
        """Own the port until cancelled: open, read, and reopen whenever it is lost.

        For a caller that runs its readers in its own task group; stop it by cancelling.
        """
        if self._running or self._closed:
            raise RuntimeError(f"{self!r} is already running or closed")
        self._running = True
        s = self.settings
        backoff = Backoff(first=s.reconnect_min, cap=max(s.reconnect_min, s.reconnect_max))
        try:
            while True:
                try:
                    port = await self._open()
                except (serial.SerialException, OSError) as err:
                    self._open_failures += 1
                    self._set_state(LinkState.UNAVAILABLE, f"cannot open {s.port}: {err}")
                else:
                    self._opens += 1
                    self._good_since_open = False
                    self._set_state(LinkState.WAITING, f"{s.port} open")
                    try:
                        reason = await self._pump(port)
                    finally:
                        self._close_port(port)
                    self._losses += 1
                    self._handle(self._framer.flush(), live=False)
                    self._set_state(LinkState.UNAVAILABLE, reason)
                    if self._good_since_open:
                        backoff.reset()
                # jittered: readers on one hub that died together do not hammer it in step
                # when it comes back
                await asyncio.sleep(backoff.next())
        finally:
            self._running = False
            self._set_state(LinkState.CLOSED, "stopped")

    # --------------------------------------------------------------------------- the port
    async def _open(self) -> Any:
        """Open the port in a worker thread: a USB adapter's open can take a while."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._open_blocking)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_close_when_opened)
            raise

    def _open_blocking(self) -> Any:
        s = self.settings
        port = serial.Serial()
        try:
            port.port = s.port
            port.baudrate = s.baudrate
            port.bytesize = s.bytesize
            port.parity = str(s.parity)
            port.stopbits = s.stopbits
            port.timeout = 0
            port.exclusive = True      # a second process on the same sensor would steal bytes
            port.open()
        except ValueError as err:      # a parameter the port does not support: permanent
            raise ValueError(f"serial {s.name}: cannot configure {s.port}: {err}") from err
        return port

    @staticmethod
    def _close_port(port: Any) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()

    async def _pump(self, port: Any) -> str:
        """Read until the port is lost; return why. Marks the line stale while it is silent."""
        loop = asyncio.get_running_loop()
        fd: int = port.fileno()
        lost: asyncio.Future[str] = loop.create_future()
        stale_after = self.settings.stale_after
        self._last_good_mono = loop.time()
        loop.add_reader(fd, self._readable, fd, lost)
        try:
            while not lost.done():
                remaining = self._last_good_mono + stale_after - loop.time()
                if remaining <= 0:
                    self._set_state(LinkState.STALE,
                                    f"no valid frame for {stale_after:g} s")
                    gone = _port_replaced(self.settings.port, fd)
                    if gone is not None:
                        return gone
                    remaining = stale_after
                await asyncio.wait((lost,), timeout=remaining)
            return lost.result()
        finally:
            loop.remove_reader(fd)

    def _readable(self, fd: int, lost: asyncio.Future[str]) -> None:
        if lost.done():
            return
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._lose(fd, lost, f"read from {self.settings.port} failed: {err}")
            return
        if not data:
            self._lose(fd, lost, f"{self.settings.port} hung up (device unplugged?)")
            return
        try:
            self._handle(self._framer.feed(data), live=True)
        except Exception as err:   # a callback's (or a framer's) bug: stop the reader with it
            asyncio.get_running_loop().remove_reader(fd)
            lost.set_exception(err)

    @staticmethod
    def _lose(fd: int, lost: asyncio.Future[str], reason: str) -> None:
        asyncio.get_running_loop().remove_reader(fd)   # a hung-up fd stays readable: stop now
        lost.set_result(reason)

    # --------------------------------------------------------------------------- frames
    def _handle(self, items: Iterable[Frame | FrameError], *, live: bool) -> None:
        """Deliver what the framer produced; `live` is False for leftovers of a closed port."""
        ts: int | None = None
        for item in items:
            if ts is None:
                ts = int(self._clock() * 1000)
            if isinstance(item, FrameError):
                if self._on_error is not None:
                    self._on_error(item)
                if (item.kind is ErrorKind.BAD_CHECKSUM
                        and self.settings.protocol is SerialProtocol.SDS011):
                    self._emit_all(ts, Quality.BAD_DATA)
                continue
            self._frames += 1
            self._last_frame = ts / 1000
            if live:
                self._good_since_open = True
                self._last_good_mono = asyncio.get_running_loop().time()
                self._set_state(LinkState.ONLINE, "receiving frames")
            if self._on_frame is not None:
                self._on_frame(item)
            samples = self._samples(item, ts)
            if samples:
                self._on_samples(samples)
            if (live and isinstance(item, GpsFix) and item.utc is not None
                    and self._on_time_fix is not None):
                self._on_time_fix(item.utc)

    def _samples(self, frame: Frame, ts: int) -> list[Sample]:
        dev = self.settings.device
        if isinstance(frame, DustReading):
            return [Sample(dev, "pm25", ts, frame.pm25), Sample(dev, "pm10", ts, frame.pm10)]
        if isinstance(frame, LineReading):
            return [Sample(dev, name, ts, v) for name, v in frame.values.items()]
        assert isinstance(frame, GpsFix)
        values: dict[str, float | int | None] = {
            "latitude": frame.latitude,
            "longitude": frame.longitude,
            "altitude": frame.altitude,
            "satellites": frame.satellites,
            "fix_quality": None if frame.fix_quality is None else int(frame.fix_quality),
        }
        return [Sample(dev, k, ts, v) for k, v in values.items() if v is not None]

    def _emit_all(self, ts: int, quality: Quality) -> None:
        dev = self.settings.device
        self._on_samples([Sample(dev, p, ts, None, quality) for p in self.settings.points])

    # --------------------------------------------------------------------------- state
    def _set_state(self, new: LinkState, detail: str) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        s = self.settings
        where = f"serial {s.name} ({s.port}, {s.protocol})"
        f = {"bus": s.name}                  # the journal's EDGEGW_BUS (gateway/journal.py)
        now = time.monotonic()
        if new in _PROBLEMS:
            if old not in _PROBLEMS:
                self._problem_since = now
            if new is LinkState.UNAVAILABLE:
                log.warning("%s: unavailable: %s; retrying with backoff up to %g s",
                            where, detail, s.reconnect_max, extra=f)
            else:
                log.warning("%s: stale: %s", where, detail, extra=f)
        elif new is LinkState.ONLINE:
            if self._problem_since is not None:
                log.info("%s: recovered after %.1f s", where, now - self._problem_since,
                         extra=f)
                self._problem_since = None
            else:
                log.info("%s: receiving frames", where, extra=f)
        else:
            log.debug("%s: %s: %s", where, new, detail)
        for states, fut in self._waiters:
            if new in states and not fut.done():
                fut.set_result(new)
        if self._on_status is not None:
            self._on_status(new, detail)
        if new is LinkState.STALE:
            self._emit_all(int(self._clock() * 1000), Quality.TIMEOUT)
        elif new is LinkState.UNAVAILABLE:
            self._emit_all(int(self._clock() * 1000), Quality.UNAVAILABLE)


def _close_when_opened(fut: asyncio.Future[Any]) -> None:
    """Close a port whose open finished after the opener was cancelled."""
    if not fut.cancelled() and fut.exception() is None:
        SerialReader._close_port(fut.result())


def _port_replaced(path: str, fd: int) -> str | None:
    """Why the open port no longer is the device at `path` (None while it still is).

    A USB adapter that vanishes normally hangs the port up at once; this catches the rarer case of
    a silent descriptor whose path has gone or now names another device.
    """
    try:
        now = os.stat(path).st_rdev
    except OSError as err:
        return f"{path} vanished ({err.strerror})"
    try:
        mine = os.fstat(fd).st_rdev
    except OSError as err:
        return f"open port unusable ({err.strerror})"
    return None if now == mine else f"{path} now names another device"
