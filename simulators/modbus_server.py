"""Serve `SimulatedDevice`s on real pymodbus 3.16 servers: Modbus TCP, and RTU over a pty pair.

``async with ModbusTcpSim([lamp1, lamp2], port=0) as sim:`` serves the devices by unit id on
``127.0.0.1:sim.port``; ``async with ModbusRtuSim([env, meter]) as sim:`` serves them over RTU on
a pseudo-terminal pair whose client end is ``sim.client_path`` (optionally symlinked to a fixed
path). Both are real `pymodbus.server` servers; our devices are plugged in through a custom
server context, and three pymodbus hooks give the behaviours a real bus has:

- a unit id nobody serves is **silent** (``ignore_missing_devices``), as on RS-485, so a bus scan
  sees timeouts, not exception responses;
- a device's `Fault` is applied per request: `SILENT` raises pymodbus' `NoSuchIdException`
  (no answer), `SLOW` sleeps before answering, `EXCEPTION` returns an `ExcCodes` (an exception
  response), `GARBAGE` lets the answer be built and then spoils the outgoing frame in the
  `trace_packet` hook (RTU: the CRC inverted; TCP: the MBAP protocol id set to 0xFFFF), which a
  pymodbus client discards and then times out on;
- requests are counted in the `trace_pdu` hook, per device (``device.requests``,
  ``requests_by_function``, ``responses``) and per server (``sim.requests``,
  ``sim.unknown_requests``, ``sim.responses``).

`PtyLink` is the RS-485 cable: two pseudo-terminals bridged by a thread, with an optional
wire-time mode that delays each frame by its length at the configured baud rate plus the
3.5-character end-of-frame silence, so a 9600-baud bus is as slow as a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.transaction import TransactionManager

from drivers.modbus.registers import Table
from simulators.devices import FaultMode, Refused, SimulatedDevice

# function code -> the table it works on
FC_TABLE: dict[int, Table] = {
    1: Table.COIL, 5: Table.COIL, 15: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 22: Table.HOLDING, 23: Table.HOLDING,
    4: Table.INPUT,
}
READ_FCS = frozenset({1, 2, 3, 4, 23})
# pymodbus makes one or two datastore calls per request; the fault is applied at the first:
# a get for reads and mask-write (22), a set for writes and read-write (23), whose second call
# is a read-back.
_FIRST_CALL_IS_GET = frozenset({1, 2, 3, 4, 22})
_FIRST_CALL_IS_SET = frozenset({5, 6, 15, 16, 23})


def _exc(code: int) -> ExcCodes:
    try:
        return ExcCodes(code)
    except ValueError:
        return ExcCodes.DEVICE_FAILURE


class _Context(ModbusServerContext):
    """The pymodbus datastore seam, answering from our devices.

    ModbusServerContext.__init__ is skipped on purpose: it wants pymodbus' own (deprecated)
    device contexts and logs a deprecation warning. `old_simulator = True` makes the server
    call our async_getValues/async_setValues directly.
    """

    def __init__(self, owner: _ModbusSim) -> None:  # no super().__init__(): see above
        self.old_simulator = True
        self.simdevices = []
        self._owner = owner

    def device_ids(self) -> list[int]:
        return sorted(self._owner.devices)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1,
    ) -> list[int] | list[bool] | ExcCodes:
        owner = self._owner
        dev = owner.lookup(device_id)
        if func_code in _FIRST_CALL_IS_GET and (exc := await owner.apply_fault(dev)):
            return exc
        table = FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            if table.is_bits:
                values: list[int] | list[bool] = dev.read_bits(table, address, count)
            else:
                values = dev.read_words(table, address, count)
        except Refused as err:
            return _exc(err.code)
        if func_code in READ_FCS:
            dev.registers_read += count
        return values

    async def async_setValues(
        self, device_id: int, func_code: int, address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        owner = self._owner
        dev = owner.lookup(device_id)
        if func_code in _FIRST_CALL_IS_SET and (exc := await owner.apply_fault(dev)):
            return exc
        table = FC_TABLE.get(func_code)
        if table is None or not table.is_writable:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            if table.is_bits:
                dev.write_bits(table, address, [bool(v) for v in values])
            else:
                dev.write_words(table, address, [int(v) for v in values])
        except Refused as err:
            return _exc(err.code)
        return None


log = logging.getLogger(__name__)


class _Handler(ServerRequestHandler):
    """pymodbus' per-connection request handler, made safe for slow answers.

    pymodbus 3.16.1 keeps the request being served in `self.last_pdu` and reads it again after
    the datastore call returns; a request arriving meanwhile (a client that timed out on a
    SLOW device and moved on) would make the late answer carry the *new* request's unit id and
    transaction id. Here each request is served by its own task that holds its own PDU, and
    the tasks are tracked by the simulator so that close() can wait for them.
    """

    server: _SimServer

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        try:
            used_len = TransactionManager.callback_data(self, data, addr)
        except ModbusIOException as exc:   # as pymodbus does: an undecodable request
            response = ExceptionResponse(
                0 if exc.fcode is None else exc.fcode, exception_code=ExcCodes.ILLEGAL_FUNCTION,
                device_id=exc.dev_id, transaction=exc.transaction_id)
            self.pdu_send(response, addr=addr)
            return len(data)
        if self.last_pdu:
            self.server.sim.spawn(self._serve(self.last_pdu, self.last_addr))
        return int(used_len)

    async def _serve(self, pdu: ModbusPDU, addr: tuple[str, int] | None) -> None:
        try:
            response = await pdu.datastore_update(self.server.sim.context, pdu.dev_id)
        except NoSuchIdException:
            return                            # not ours, or faulted silent: say nothing
        except Exception:  # a bug of ours must not kill the server: answer device failure
            log.exception("simulated unit %s failed to serve %s", pdu.dev_id, pdu)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if self.transport:                    # the client may have gone while we were slow
            self.pdu_send(response, addr=addr)


class _SimServer(ModbusBaseServer):
    """The pymodbus server classes, with our request handler."""

    sim: _ModbusSim

    def callback_new_connection(self) -> ServerRequestHandler:
        return _Handler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _TcpServer(_SimServer, ModbusTcpServer):
    pass


class _SerialServer(_SimServer, ModbusSerialServer):
    pass


class _ModbusSim:
    """What the TCP and RTU simulators share: devices by unit, faults, counters, lifecycle."""

    _unit_offset: int  # where the unit id sits in an outgoing frame

    def __init__(self, devices: Iterable[SimulatedDevice]) -> None:
        self.devices: dict[int, SimulatedDevice] = {}
        for dev in devices:
            self.add(dev)
        self.requests = 0            # every request received, any unit
        self.unknown_requests = 0    # requests for a unit nobody here serves (left unanswered)
        self.responses = 0           # answers sent
        self.server: _SimServer | None = None
        self._closing = asyncio.Event()
        self._garble: dict[int, int] = {}
        self._progress = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.context = _Context(self)
        self._closed = False

    # ------------------------------------------------------------------------- devices
    def add(self, device: SimulatedDevice) -> None:
        """Serve one more device (also while running)."""
        if device.unit in self.devices:
            raise ValueError(f"unit {device.unit} is served twice "
                             f"({self.devices[device.unit].name} and {device.name})")
        self.devices[device.unit] = device

    def remove(self, unit: int) -> SimulatedDevice:
        """Stop serving a unit: from now on it is silent, as if unplugged."""
        return self.devices.pop(unit)

    def device(self, name: str) -> SimulatedDevice:
        """A served device by name."""
        for dev in self.devices.values():
            if dev.name == name:
                return dev
        raise KeyError(f"no device named {name!r} here "
                       f"({', '.join(d.name for d in self.devices.values())})")

    def lookup(self, unit: int) -> SimulatedDevice:
        """The device for a unit id; NoSuchIdException keeps the server silent for others."""
        dev = self.devices.get(unit)
        if dev is None or self._closing.is_set():
            raise NoSuchIdException(f"unit {unit} is not served here")
        return dev

    # -------------------------------------------------------------------------- faults
    async def apply_fault(self, dev: SimulatedDevice) -> ExcCodes | None:
        """Apply the device's wire fault to one request: None means "answer normally"."""
        fault = dev.fault
        if fault.mode is FaultMode.NONE:
            return None
        if fault.rate < 1.0 and dev.rng.random() >= fault.rate:
            return None
        if fault.mode is FaultMode.SILENT:
            raise NoSuchIdException(f"unit {dev.unit} is faulted silent")
        if fault.mode is FaultMode.EXCEPTION:
            return _exc(fault.code)
        if fault.mode is FaultMode.GARBAGE:
            self._garble[dev.unit] = self._garble.get(dev.unit, 0) + 1
            return None
        # SLOW: wait, unless the server closes meanwhile (then stay silent)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(fault.delay):
                await self._closing.wait()
        if self._closing.is_set():
            raise NoSuchIdException("server closing")
        return None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Serve one request in a task of its own, tracked until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self} request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --------------------------------------------------------------------- pymodbus hooks
    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        dev = self.devices.get(pdu.dev_id)
        if sending:
            self.responses += 1
            if dev is not None:
                dev.responses += 1
        else:
            self.requests += 1
            if dev is None:
                self.unknown_requests += 1
            else:
                dev.requests += 1
                dev.requests_by_function[pdu.function_code] += 1
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
        return pdu

    async def wait_requests(self, count: int, *, unit: int | None = None) -> None:
        """Wait until `count` requests arrived in all (or for `unit`), counted since the start."""
        def seen() -> int:
            if unit is None:
                return self.requests
            dev = self.devices.get(unit)
            return 0 if dev is None else dev.requests

        while seen() < count:
            await self._progress.wait()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not self._garble or len(data) <= self._unit_offset:
            return data
        unit = data[self._unit_offset]
        pending = self._garble.get(unit, 0)
        if not pending:
            return data
        if pending == 1:
            del self._garble[unit]
        else:
            self._garble[unit] = pending - 1
        return self._spoil(data)

    def _spoil(self, frame: bytes) -> bytes:
        raise NotImplementedError

    # ------------------------------------------------------------------------ lifecycle
    def _build(self, context: _Context) -> _SimServer:
        raise NotImplementedError

    async def start(self) -> None:
        """Start serving (in the background, on the running loop)."""
        if self.server is not None:
            raise RuntimeError(f"{self} is already started")
        self._closed = False
        self._closing.clear()
        server = self._build(self.context)
        server.sim = self
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise OSError(f"{self}: cannot listen ({err})") from err
        self.server = server

    async def close(self) -> None:
        """Stop serving: slow answers in progress are dropped. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self.server is not None:
            server, self.server = self.server, None
            await server.shutdown()  # type: ignore[no-untyped-call]
        if self._tasks:   # slow answers wake on `_closing` and end silently
            await asyncio.wait(list(self._tasks))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class ModbusTcpSim(_ModbusSim):
    """Devices served by one pymodbus Modbus TCP server; `port=0` lets the OS pick (`.port`)."""

    _unit_offset = 6  # MBAP: transaction 2, protocol 2, length 2, unit 1

    def __init__(self, devices: Iterable[SimulatedDevice], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(devices)
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"modbus-tcp simulator {self.host}:{self.port}"

    def _build(self, context: _Context) -> _SimServer:
        return _TcpServer(
            context, address=(self.host, self.port), ignore_missing_devices=True,
            trace_packet=self._trace_packet, trace_pdu=self._trace_pdu,
        )

    async def start(self) -> None:
        await super().start()
        assert self.server is not None
        listener = self.server.transport
        sockets = getattr(listener, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def _spoil(self, frame: bytes) -> bytes:
        # a Modbus/TCP peer must drop a frame whose protocol id is not 0
        return frame[:2] + b"\xff\xff" + frame[4:]


class ModbusRtuSim(_ModbusSim):
    """Devices served by one pymodbus RTU server on a `PtyLink`; clients open `.client_path`."""

    _unit_offset = 0  # RTU: unit, function, data, CRC

    def __init__(
        self,
        devices: Iterable[SimulatedDevice],
        *,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: Literal[1, 2] = 1,
        wire_time: bool = False,
        link_path: str | Path | None = None,
    ) -> None:
        super().__init__(devices)
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.wire_time = wire_time
        self.link_path = Path(link_path) if link_path is not None else None
        self.link: PtyLink | None = None

    def __str__(self) -> str:
        where = self.link.client_path if self.link else "(not started)"
        return f"modbus-rtu simulator on {where}"

    @property
    def client_path(self) -> str:
        """The pty a client (the gateway) opens; the symlink, if any, points here."""
        if self.link is None:
            raise RuntimeError("the RTU simulator is not started")
        return self.link.client_path

    def _build(self, context: _Context) -> _SimServer:
        assert self.link is not None
        return _SerialServer(
            context, framer=FramerType.RTU, port=self.link.device_path,
            baudrate=self.baudrate, parity=self.parity, stopbits=self.stopbits,
            ignore_missing_devices=True,
            trace_packet=self._trace_packet, trace_pdu=self._trace_pdu,
        )

    async def start(self) -> None:
        self.link = PtyLink(baudrate=self.baudrate, parity=self.parity, stopbits=self.stopbits,
                            wire_time=self.wire_time, link_path=self.link_path)
        try:
            await super().start()
        except BaseException:
            self.link.close()
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.link is not None:
                self.link.close()

    def _spoil(self, frame: bytes) -> bytes:
        # the same bytes with the CRC inverted: what line noise does to a frame
        return frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])


# ------------------------------------------------------------------------------------ pty link
def char_bits(*, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits on the wire per character: start + data + parity + stop (8N1 = 10, 8E1 = 11)."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


@dataclass(slots=True)
class _Burst:
    due: float
    dst: int
    data: bytearray


class PtyLink:
    """Two pseudo-terminals joined like the two ends of an RS-485 cable.

    The simulator's server opens `device_path`, the gateway opens `client_path` (or `link_path`,
    a symlink to it). A thread copies bytes between the two pty masters; the slave ends stay
    open here too, so a side that closes and reopens its port never makes the masters fail
    with EIO. With `wire_time`, every burst reaches the other side only after its length at
    `baudrate` plus a 3.5-character silence, and bursts queue on the one half-duplex wire.
    Bytes sent while nobody listens on the other side are lost, as on a cable.
    """

    def __init__(
        self,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        wire_time: bool = False,
        link_path: str | Path | None = None,
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        self.baudrate = baudrate
        self.wire_time = wire_time
        self.char_time = char_bits(bytesize=bytesize, parity=parity, stopbits=stopbits) / baudrate
        self.link_path = Path(link_path) if link_path is not None else None
        self.bytes_forwarded = 0
        self._thread: threading.Thread | None = None
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        self._dev_master, self._dev_slave, self.device_path = self._open_pty()
        self._cli_master: int | None = None
        self._cli_slave: int | None = None
        self.client_path = ""
        self._closed = False
        try:
            self._plug_client()
            self._start_thread()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PtyLink({self.device_path} <-> {self.client_path})"

    @staticmethod
    def _open_pty() -> tuple[int, int, str]:
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        return master, slave, os.ttyname(slave)

    def _plug_client(self) -> None:
        self._cli_master, self._cli_slave, self.client_path = self._open_pty()
        if self.link_path is not None:
            self._make_symlink(self.link_path, self.client_path)

    @staticmethod
    def _make_symlink(link: Path, target: str) -> None:
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink: will not replace it")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(link)   # atomic: a reader never sees the link missing

    def _remove_symlink(self) -> None:
        link = self.link_path
        if link is not None and link.is_symlink() and os.readlink(link) == self.client_path:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()

    # -------------------------------------------------------------------------- lifecycle
    def _start_thread(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"ptylink {self.client_path}",
                                        daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        with contextlib.suppress(BlockingIOError):
            os.set_blocking(self._wake_r, False)
            while os.read(self._wake_r, 64):
                pass

    def unplug(self) -> None:
        """Pull the adapter: the client's pty vanishes (its reads fail) and the symlink goes."""
        if self._closed or self._cli_master is None:
            return
        self._stop_thread()
        self._remove_symlink()
        for fd in (self._cli_master, self._cli_slave):
            if fd is not None:
                os.close(fd)
        self._cli_master = self._cli_slave = None
        self._start_thread()   # keeps draining the device side while unplugged

    def replug(self) -> None:
        """Plug an adapter back: a new client pty (a new `client_path`), the symlink renewed."""
        if self._closed or self._cli_master is not None:
            return
        self._stop_thread()
        self._plug_client()
        self._start_thread()

    @property
    def plugged(self) -> bool:
        return self._cli_master is not None

    def close(self) -> None:
        """Stop the bridge, close every fd, remove the symlink. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop_thread()
        self._remove_symlink()
        for fd in (self._dev_master, self._dev_slave, self._cli_master, self._cli_slave,
                   self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._cli_master = self._cli_slave = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ----------------------------------------------------------------------------- bridge
    def _run(self) -> None:
        dev, cli = self._dev_master, self._cli_master
        sources = [dev, self._wake_r] if cli is None else [dev, cli, self._wake_r]
        pending: deque[_Burst] = deque()
        wire_free = 0.0
        while not self._stop:
            timeout = None
            if pending:
                timeout = max(0.0, pending[0].due - time.monotonic())
            try:
                ready, _, _ = select.select(sources, [], [], timeout)
            except (OSError, ValueError):   # an fd closed under us: we are being stopped
                return
            for src in ready:
                if src == self._wake_r:
                    continue
                try:
                    data = os.read(src, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:               # EIO: that side is gone for good
                    sources.remove(src)
                    continue
                dst = cli if src == dev else dev
                if dst is None or not data:
                    continue                  # nobody on the other end: the bytes are lost
                if not self.wire_time:
                    self._write(dst, data)
                    continue
                now = time.monotonic()
                if pending and pending[-1].dst == dst and pending[-1].due > now:
                    burst = pending[-1]       # the same frame, still on the wire: extend it
                    burst.data += data
                    burst.due += len(data) * self.char_time
                else:
                    start = max(now, wire_free)
                    due = start + (len(data) + 3.5) * self.char_time
                    burst = _Burst(due, dst, bytearray(data))
                    pending.append(burst)
                wire_free = burst.due
            now = time.monotonic()
            while pending and pending[0].due <= now:
                burst = pending.popleft()
                self._write(burst.dst, bytes(burst.data))

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except (BlockingIOError, InterruptedError):
                return                        # the reader is not reading: the rest is lost
            except OSError:
                return
            self.bytes_forwarded += n
            view = view[n:]
