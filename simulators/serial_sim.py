"""Simulated serial sensors on pseudo-terminals, with the faults real serial lines have.

Each simulator owns a pty: it writes the device's frames on the master side, and the driver opens
the slave side as if it were ``/dev/ttyUSB0``. The driver is given a **stable symlink** to the
slave (``.path``), like ``/dev/serial/by-id/...`` on a gateway: a pty gets a new name each time it
is created, so :meth:`SerialSimulator.unplug` closes the pty (the driver's port hangs up) and
removes the symlink, and :meth:`SerialSimulator.replug` creates a new pty and points the symlink at
it, exactly what a USB adapter does when it is pulled out and plugged back.

Faults: :meth:`SerialSimulator.inject` queues GARBAGE (a burst of random bytes before the next
frame), BAD_CHECKSUM (the next frame with a wrong checksum) or PARTIAL (only the first half of the
next frame); :meth:`SerialSimulator.pause` stops the device talking (silence) while it stays
plugged in. Bytes the driver does not read in time are dropped, as a UART overrun would.

Ptys ignore baud rates, and the frame period is configurable, so tests run far faster than the
1 frame/s of the real devices.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import random
import shutil
import tempfile
import tty
from abc import ABC, abstractmethod
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

from drivers.serial.framers import nmea_checksum, sds011_frame

__all__ = [
    "Fault",
    "GpsSimulator",
    "PtyPort",
    "Sds011Simulator",
    "SerialSimulator",
    "WaterLevelSimulator",
    "gps_sentences",
]


class Fault(StrEnum):
    GARBAGE = "garbage"              # a burst of random bytes before the next frame
    BAD_CHECKSUM = "bad_checksum"    # the next frame with a wrong checksum (lines: a bad digit)
    PARTIAL = "partial"              # only the first half of the next frame


class PtyPort:
    """A pseudo-terminal playing a serial device, reachable at the stable symlink `path`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._master: int | None = None
        self._slave: int | None = None
        self.pty_name: str | None = None
        self.dropped_bytes = 0

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        """Create a new pty and point the symlink at it (no-op when already plugged)."""
        if self._master is not None:
            return
        if self.path.exists() and not self.path.is_symlink():
            raise FileExistsError(f"{self.path} exists and is not a symlink: not replacing it")
        master, slave = os.openpty()
        try:
            tty.setraw(slave)                 # no echo, no line editing, no CR/LF mapping
            os.set_blocking(master, False)    # a full line drops bytes instead of stalling us
            name = os.ttyname(slave)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
            tmp.unlink(missing_ok=True)
            os.symlink(name, tmp)
            os.replace(tmp, self.path)        # atomic: the path is never half-made
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # The slave stays open here too, so the pty (and its raw settings) outlives the driver
        # closing and reopening its side.
        self._master, self._slave, self.pty_name = master, slave, name

    def unplug(self) -> None:
        """Remove the symlink and close the pty: the driver's open port hangs up."""
        self.path.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self.pty_name = None

    def write(self, data: bytes) -> int:
        """Write to the line; return the bytes written. Unplugged or full: the rest is dropped."""
        if self._master is None or not data:
            self.dropped_bytes += len(data)
            return 0
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError as err:
            if err.errno != errno.EIO:    # EIO: the other side is gone, like a dead line
                raise
            n = 0
        self.dropped_bytes += len(data) - n
        return n


class SerialSimulator(ABC):
    """A device writing frames every `period` seconds to a pty; an async context manager.

    `path` is where the stable symlink goes; by default a fresh temporary directory (removed on
    close). `seed` makes the garbage and the noise reproducible.
    """

    kind = "serial"

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        period: float = 1.0,
        seed: int | None = None,
        garbage_size: int = 32,
    ) -> None:
        if not period > 0:
            raise ValueError(f"period must be positive, not {period}")
        self._tmpdir: str | None = None
        self._port: PtyPort | None = None if path is None else PtyPort(path)
        self.period = period
        self.garbage_size = garbage_size
        self.rng = random.Random(seed)
        self._faults: deque[Fault] = deque()
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.frames_sent = 0               # frames written whole and valid
        self.faults_sent: Counter[Fault] = Counter()

    # --------------------------------------------------------------------------- life
    @property
    def port(self) -> PtyPort:
        """The pty; with no `path` given, it exists once the simulator has started."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__}: no path until started")
        return self._port

    @property
    def path(self) -> str:
        """The stable path the driver opens (a symlink to the current pty)."""
        return str(self.port.path)

    @property
    def pty_name(self) -> str | None:
        return self.port.pty_name

    @property
    def plugged(self) -> bool:
        return self._port is not None and self._port.plugged

    @property
    def dropped_bytes(self) -> int:
        return 0 if self._port is None else self._port.dropped_bytes

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Plug in and start talking (called by ``async with``)."""
        if self._closed or self._task is not None:
            raise RuntimeError(f"{type(self).__name__} at {self.path} already started or closed")
        if self._port is None:
            self._tmpdir = tempfile.mkdtemp(prefix="edgegw-serial-")
            self._port = PtyPort(Path(self._tmpdir) / f"tty-{self.kind}")
        self._port.plug()
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.kind}:{self.path}")

    async def aclose(self) -> None:
        """Stop, unplug and remove the temporary directory; safe to call twice."""
        self._closed = True
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if me is not None and me.cancelling():
                        raise
        finally:
            if self._port is not None:
                self._port.unplug()
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if self.plugged and not self._paused:
                self.emit()
            # Keep the cadence: a late wake-up does not push every later frame back.
            next_at = max(next_at + self.period, loop.time())
            await asyncio.sleep(next_at - loop.time())

    # --------------------------------------------------------------------------- faults
    def unplug(self) -> None:
        """Pull the USB adapter: the pty closes and the path vanishes."""
        self.port.unplug()

    def replug(self) -> None:
        """Plug it back: a new pty at the same path."""
        if self._closed:
            raise RuntimeError("simulator closed")
        self.port.plug()

    def pause(self) -> None:
        """Silence: stay plugged in but send nothing."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def inject(self, fault: Fault, count: int = 1) -> None:
        """Apply `fault` to each of the next `count` frames."""
        self._faults.extend([Fault(fault)] * count)

    def write_garbage(self, size: int | None = None) -> bytes:
        """Write a burst of random bytes now; return them."""
        junk = self.rng.randbytes(self.garbage_size if size is None else size)
        self.port.write(junk)
        return junk

    def write_raw(self, data: bytes) -> int:
        """Write bytes as they are (to build a test's exact scenario)."""
        return self.port.write(data)

    def emit(self) -> None:
        """Send the next frame now, with the next queued fault if any."""
        pieces = self.render()
        fault = self._faults.popleft() if self._faults else None
        if fault is Fault.GARBAGE:
            self.write_garbage()
        elif fault is Fault.BAD_CHECKSUM:
            pieces = [self.corrupt(p) for p in pieces]
        elif fault is Fault.PARTIAL:
            pieces = [pieces[0][: len(pieces[0]) // 2]]
        self.port.write(b"".join(pieces))
        if fault is None or fault is Fault.GARBAGE:
            self.frames_sent += 1
        if fault is not None:
            self.faults_sent[fault] += 1

    # --------------------------------------------------------------------------- the device
    @abstractmethod
    def render(self) -> list[bytes]:
        """The next frame, as the pieces the device writes (NMEA: one per sentence)."""

    @abstractmethod
    def corrupt(self, piece: bytes) -> bytes:
        """`piece` with its checksum (or, lacking one, its content) made wrong."""


class Sds011Simulator(SerialSimulator):
    """A Nova SDS011 in its default continuous mode: one measurement frame a period (1 s).

    Set `pm25`/`pm10` to change what the air holds; `noise` adds uniform jitter (µg/m³).
    """

    kind = "sds011"

    def __init__(
        self,
        *,
        pm25: float = 12.3,
        pm10: float = 20.5,
        noise: float = 0.0,
        sensor_id: int = 0x1234,
        path: str | os.PathLike[str] | None = None,
        period: float = 1.0,
        seed: int | None = None,
        garbage_size: int = 32,
    ) -> None:
        super().__init__(path=path, period=period, seed=seed, garbage_size=garbage_size)
        self.pm25 = pm25
        self.pm10 = pm10
        self.noise = noise
        self.sensor_id = sensor_id
        self.last: tuple[float, float] | None = None   # the last values sent, 0.1 resolution

    def render(self) -> list[bytes]:
        def value(v: float) -> float:
            return max(0.0, round(v + self.rng.uniform(-self.noise, self.noise), 1))

        pm25, pm10 = value(self.pm25), value(self.pm10)
        self.last = (pm25, pm10)
        return [sds011_frame(pm25, pm10, sensor_id=self.sensor_id)]

    def corrupt(self, piece: bytes) -> bytes:
        return piece[:8] + bytes(((piece[8] + 1) & 0xFF,)) + piece[9:]


def _nmea(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode("ascii")


def _coord(value: float, *, deg_digits: int, hemis: str) -> tuple[str, str]:
    minutes_total = round(abs(value) * 60, 4)
    deg = int(minutes_total // 60)
    minutes = minutes_total - deg * 60
    return f"{deg:0{deg_digits}d}{minutes:07.4f}", hemis[0] if value >= 0 else hemis[1]


def gps_sentences(
    t: datetime,
    *,
    latitude: float,
    longitude: float,
    altitude: float = 0.0,
    satellites: int = 9,
    fix: bool = True,
    talker: str = "GP",
) -> list[bytes]:
    """The RMC and GGA sentences of one epoch at UTC `t` (hundredths of a second)."""
    t = t.astimezone(UTC)
    hms = f"{t:%H%M%S}.{t.microsecond // 10_000:02d}"
    dmy = f"{t:%d%m%y}"
    if not fix:
        return [
            _nmea(f"{talker}RMC,{hms},V,,,,,,,{dmy},,,N"),
            _nmea(f"{talker}GGA,{hms},,,,,0,{satellites:02d},99.99,,,,,,"),
        ]
    lat, ns = _coord(latitude, deg_digits=2, hemis="NS")
    lon, ew = _coord(longitude, deg_digits=3, hemis="EW")
    return [
        _nmea(f"{talker}RMC,{hms},A,{lat},{ns},{lon},{ew},0.02,,{dmy},,,A"),
        _nmea(f"{talker}GGA,{hms},{lat},{ns},{lon},{ew},1,{satellites:02d},0.9,"
              f"{altitude:.1f},M,2.5,M,,"),
    ]


class GpsSimulator(SerialSimulator):
    """A GPS receiver printing RMC then GGA once a period (1 s) at its simulated time.

    With `start`, the simulated UTC starts there and advances one second per epoch, whatever the
    period (tests run fast and still see consecutive seconds); without it, each epoch carries the
    real current time. `fix=False` plays a receiver that has not found satellites yet (status V,
    quality 0, empty position). `sent_times` keeps the UTC of every epoch sent.
    """

    kind = "gps"

    def __init__(
        self,
        *,
        latitude: float = 10.7769,
        longitude: float = 106.7009,
        altitude: float = 12.0,
        satellites: int = 9,
        fix: bool = True,
        start: datetime | None = None,
        talker: str = "GP",
        path: str | os.PathLike[str] | None = None,
        period: float = 1.0,
        seed: int | None = None,
        garbage_size: int = 32,
    ) -> None:
        super().__init__(path=path, period=period, seed=seed, garbage_size=garbage_size)
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be an aware datetime (UTC)")
        self.latitude = latitude
        self.longitude = longitude
        self.altitude = altitude
        self.satellites = satellites
        self.fix = fix
        self.talker = talker
        self._next = start.astimezone(UTC) if start is not None else None
        self.sent_times: list[datetime] = []

    def _now(self) -> datetime:
        if self._next is None:
            now = datetime.now(UTC)
            return now.replace(microsecond=now.microsecond // 10_000 * 10_000)
        now, self._next = self._next, self._next + timedelta(seconds=1)
        return now

    def render(self) -> list[bytes]:
        t = self._now()
        self.sent_times.append(t)
        return gps_sentences(t, latitude=self.latitude, longitude=self.longitude,
                             altitude=self.altitude, satellites=self.satellites, fix=self.fix,
                             talker=self.talker)

    def corrupt(self, piece: bytes) -> bytes:
        star = piece.rindex(b"*")
        wrong = int(piece[star + 1: star + 3], 16) ^ 0x5A
        return piece[: star + 1] + f"{wrong:02X}".encode() + piece[star + 3:]


class WaterLevelSimulator(SerialSimulator):
    """An ultrasonic range sensor (MaxBotix style) printing ``R1234\\r``: distance in mm.

    `distance_mm` is the distance to the water surface (300..9999, clamped); `noise_mm` jitter.
    BAD_CHECKSUM (the line has no checksum) garbles a digit instead.
    """

    kind = "water"

    def __init__(
        self,
        *,
        distance_mm: float = 1234,
        noise_mm: float = 0.0,
        path: str | os.PathLike[str] | None = None,
        period: float = 1.0,
        seed: int | None = None,
        garbage_size: int = 32,
    ) -> None:
        super().__init__(path=path, period=period, seed=seed, garbage_size=garbage_size)
        self.distance_mm = distance_mm
        self.noise_mm = noise_mm
        self.last: int | None = None

    def render(self) -> list[bytes]:
        d = self.distance_mm + self.rng.uniform(-self.noise_mm, self.noise_mm)
        mm = 9999 if math.isnan(d) else max(300, min(9999, round(d)))
        self.last = mm
        return [f"R{mm:04d}\r".encode("ascii")]

    def corrupt(self, piece: bytes) -> bytes:
        return piece[:2] + b"?" + piece[3:]
