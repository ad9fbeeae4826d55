"""One Modbus bus (an RS-485 line or a Modbus TCP endpoint), owned by one task.

The task serialises every transaction on the bus (RS-485 is half-duplex with one master), polls
each device by its plans, and serves queued reads and writes in between polls, ahead of them;
queued writes (a lamp's new level) go before queued reads, so an operator's reads of a silent
unit never hold up the lamps.
A device that stops answering is backed off exponentially (capped), so the others keep their
poll rate; its going offline and coming back are reported once each.

States of the bus connection::

    DISCONNECTED --connect ok--> CONNECTED --transport lost--> DISCONNECTED (retry, backoff)

On TCP, "transport lost" includes a connection that answers nothing to several requests in a row
(drivers/modbus/tcp.py drops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import termios
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from drivers.backoff import Backoff, jittered
from drivers.errors import BusError, DeviceException, DeviceTimeout, NotFound, WriteRejected
from drivers.modbus.planner import Plan, ReadRequest, plan_device, plan_table
from drivers.modbus.registers import (
    MAX_REGISTERS_PER_WRITE,
    PointSpec,
    Table,
    Value,
    decode,
    encode,
)
from drivers.modbus.tcp import ConnectionLost, ModbusTcpClient, ModbusTcpError
from drivers.sample import Quality, Sample

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


_IDLE_BEAT = 5.0            # seconds: an idle bus task still shows it is alive this often
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class BusKind(StrEnum):
    TCP = "modbus-tcp"
    RTU = "modbus-rtu"


@dataclass(frozen=True, slots=True, kw_only=True)
class BusSettings:
    name: str
    kind: BusKind
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout: float = 1.0
    retries: int = 1
    backoff_cap: float = 300.0          # longest pause before retrying a dead device, seconds
    # the share of the bus's time that probing one dead device may take: its probes are spaced
    # so that (probe time / spacing) stays under this, whatever its poll period
    probe_budget: float = 0.02
    reconnect_cap: float = 30.0         # longest pause between reconnect attempts, seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSettings:
    name: str
    unit: int
    poll: float
    points: tuple[PointSpec, ...]
    max_gap: int = 16


class Health(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


class ConnState(Enum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class BusEvent:
    """Something the agent reports as an event: a device offline/online, an exception."""

    type: str        # device_offline | device_online | modbus_exception | bus_down
    device: str | None
    detail: dict[str, Any]


@dataclass(slots=True)
class DeviceState:
    settings: DeviceSettings
    plans: list[Plan]
    health: Health = Health.UNKNOWN
    failures: int = 0                   # consecutive failed polls
    next_due: dict[float, float] = field(default_factory=dict)   # plan period -> monotonic due
    backoff_until: float = 0.0
    last_ok: float | None = None        # wall time (s) of the last good poll
    last_error: str | None = None
    exception_codes: dict[tuple[Table, int], int] = field(default_factory=dict)
    polls: int = 0
    errors: int = 0


@dataclass(slots=True)
class BusStats:
    requests: int = 0
    timeouts: int = 0
    exceptions: int = 0
    errors: int = 0
    busy_s: float = 0.0                 # time spent inside transactions
    reconnects: int = 0


if TYPE_CHECKING:   # pymodbus is imported only for a serial bus (TCP uses drivers.modbus.tcp)
    from pymodbus.client import AsyncModbusSerialClient

    Client = ModbusTcpClient | AsyncModbusSerialClient

SampleSink = Callable[[list[Sample]], None]
EventSink = Callable[[BusEvent], None]


class ModbusBus:
    """Owns one Modbus client; an async context manager that runs the bus task while open."""

    def __init__(
        self,
        settings: BusSettings,
        devices: Sequence[DeviceSettings],
        *,
        on_samples: SampleSink,
        on_event: EventSink | None = None,
        wall_clock: Callable[[], float] = time.time,
        poll: bool = True,
    ) -> None:
        self.settings = settings
        self.devices: dict[str, DeviceState] = {}
        for d in devices:
            plans = plan_device(d.points, default_period=d.poll, max_gap=d.max_gap)
            self.devices[d.name] = DeviceState(d, plans)
        self._on_samples = on_samples
        self._on_event = on_event or (lambda e: None)
        self._wall = wall_clock
        self._poll_enabled = poll
        self.stats = BusStats()
        self.state = ConnState.DISCONNECTED
        self._client: Client | None = None
        # what a failed transaction raises, and which of those mean the connection is gone
        errors: tuple[type[Exception], ...] = (ModbusTcpError,)
        self._lost: tuple[type[Exception], ...] = (ConnectionLost,)
        if settings.kind is not BusKind.TCP:
            from pymodbus.exceptions import ConnectionException, ModbusException
            errors, self._lost = (ModbusException,), (ConnectionException,)
        # termios.error: a serial line refused a setting (parity, speed) after opening
        self._connect_errors: tuple[type[Exception], ...] = (OSError, termios.error, *errors)
        self._call_errors: tuple[type[Exception], ...] = (TimeoutError, *errors)
        # queued jobs: writes (lamps, operators) go before reads, each in arrival order
        self._writes: deque[_Job] = deque()
        self._reads: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()     # one transaction at a time, whoever calls
        self._closed = False            # no new transaction starts (stop requested)
        self._shut = False              # close() ran
        self.first_cycle_done = asyncio.Event()
        self._reconnect = Backoff(first=0.5, cap=max(0.5, settings.reconnect_cap))
        # called at every step of the bus task: a supervisor's heartbeat (a wedged bus stops
        # calling it)
        self.progress: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> ModbusBus:
        self._task = asyncio.create_task(self.serve(), name=f"modbus-bus-{self.settings.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def request_stop(self) -> None:
        """Ask the bus task to end after its current transaction (a driver that swallows a
        cancellation cannot keep it running)."""
        self._closed = True
        self._wake.set()

    async def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._writes or self._reads:
            _, fut = (self._writes or self._reads).popleft()
            if not fut.done():
                fut.set_exception(BusError(f"modbus {self.settings.name}: bus closed"))
        if self._client is not None:
            self._client.close()
            self._client = None
        self.state = ConnState.DISCONNECTED

    # ------------------------------------------------------------------ public API
    def point(self, device: str, point: str) -> PointSpec:
        try:
            dev = self.devices[device]
        except KeyError:
            raise NotFound(f"no device {device!r} on bus {self.settings.name}") from None
        for p in dev.settings.points:
            if p.name == point:
                return p
        raise NotFound(f"device {device} has no point {point!r}")

    async def read_point(self, device: str, point: str) -> Sample:
        """Read one point now (queued ahead of polls)."""
        spec = self.point(device, point)
        dev = self.devices[device]
        req = ReadRequest(spec.table, spec.address, spec.width, (spec,))

        async def job() -> Sample:
            regs = await self._read(dev, req)
            return Sample(device, point, self._now_ms(), decode(spec, regs))

        result: Sample = await self._submit(job, write=False)
        return result

    async def read_device(self, device: str) -> list[Sample]:
        """Read every point of ``device`` now, in the requests its polls make (queued ahead
        of polls; the device's health is left to the polls). A point the device refuses comes
        back with quality ``exception``, one that does not decode ``bad_data``; a silent device
        raises DeviceTimeout at its first read, a bus that cannot be opened BusError."""
        try:
            dev = self.devices[device]
        except KeyError:
            raise NotFound(f"no device {device!r} on bus {self.settings.name}") from None
        samples: list[Sample] = []
        for plan in dev.plans:
            for req in plan.reads:
                async def job(req: ReadRequest = req) -> list[int]:
                    return await self._read(dev, req)

                try:
                    regs: list[int] = await self._submit(job, write=False)
                except DeviceException:
                    ts = self._now_ms()
                    samples.extend(Sample(device, p.name, ts, None, Quality.EXCEPTION)
                                   for p in req.points)
                    continue
                ts = self._now_ms()
                for p in req.points:
                    try:
                        samples.append(Sample(device, p.name, ts,
                                              decode(p, req.slice_for(p, regs))))
                    except (ValueError, UnicodeDecodeError):
                        samples.append(Sample(device, p.name, ts, None, Quality.BAD_DATA))
        return samples

    async def write_point(self, device: str, point: str, value: Value) -> None:
        """Write one writable point (range-checked before anything goes on the wire)."""
        spec = self.point(device, point)
        if not spec.writable:
            raise WriteRejected(f"{device}.{point} is not writable")
        regs = encode(spec, value)
        dev = self.devices[device]

        async def job() -> None:
            await self._write(dev, spec, regs)

        await self._submit(job, write=True)

    def health(self, device: str) -> Health:
        return self.devices[device].health

    # ------------------------------------------------------------------ internals
    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    async def _submit(self, job: Callable[[], Any], *, write: bool) -> Any:
        if self._closed:
            raise BusError(f"modbus {self.settings.name}: bus closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        (self._writes if write else self._reads).append((job, fut))
        self._wake.set()
        return await fut

    def _make_client(self) -> Client:
        s = self.settings
        if s.kind is BusKind.TCP:
            return ModbusTcpClient(s.host, s.port, timeout=s.timeout, retries=s.retries)
        from pymodbus.client import AsyncModbusSerialClient
        from pymodbus.framer import FramerType
        # reconnect_delay=0: pymodbus must not reconnect behind our back; the bus task does it
        return AsyncModbusSerialClient(
            s.serial_port, framer=FramerType.RTU, baudrate=s.baudrate, parity=s.parity,
            stopbits=s.stopbits, bytesize=s.bytesize, timeout=s.timeout, retries=s.retries,
            reconnect_delay=0, name=s.name)

    def _fields(self, dev: DeviceState | None = None, event: str | None = None
                ) -> dict[str, str | None]:
        """A log line's journal fields (gateway/journal.py): this bus, the device, the event."""
        return {"bus": self.settings.name, "device": dev.settings.name if dev else None,
                "event": event}

    def _where(self) -> str:
        s = self.settings
        return f"modbus {s.name} ({s.host}:{s.port})" if s.kind is BusKind.TCP else (
            f"modbus {s.name} ({s.serial_port})")

    async def _ensure_connected(self) -> None:
        if self._client is not None and self._client.connected:
            return
        if self._client is None:
            self._client = self._make_client()
        try:
            ok = await self._client.connect()
        except self._connect_errors as err:
            ok = False
            reason = str(err)
        else:
            reason = "connection refused or port unavailable"
        if not ok:
            # release the port (pyserial holds an exclusive lock) before the next attempt
            self._client.close()
            self._client = None
            if self.state is ConnState.CONNECTED:
                self._on_event(BusEvent("bus_down", None, {"bus": self.settings.name,
                                                           "reason": reason}))
            self.state = ConnState.DISCONNECTED
            raise BusError(f"{self._where()}: cannot connect: {reason}")
        if self.state is not ConnState.CONNECTED:
            self.stats.reconnects += 1
            log.info("%s: connected", self._where(), extra=self._fields())
        self.state = ConnState.CONNECTED
        self._reconnect.reset()

    async def _call(self, dev: DeviceState, what: str, fn: Callable[[], Any]) -> Any:
        """One transaction with the bus to ourselves, errors turned into our exceptions.

        A device known to be offline gets a single try (no retries): a dead unit must cost the
        shared bus as little as possible.
        """
        s = self.settings
        unit = dev.settings.unit
        retries = 0 if dev.health is Health.OFFLINE else s.retries
        where = f"{self._where()} unit {unit} ({dev.settings.name}): {what}"
        async with self._lock:
            self.progress()
            await self._ensure_connected()
            assert self._client is not None
            if isinstance(self._client, ModbusTcpClient):
                self._client.retries = retries
            else:
                ctx = getattr(self._client, "ctx", None)
                if ctx is not None and hasattr(ctx, "retries"):
                    ctx.retries = retries
            self.stats.requests += 1
            t0 = time.perf_counter()
            limit = s.timeout * (retries + 1) + 1.0      # pymodbus' guard
            try:
                if isinstance(self._client, ModbusTcpClient):
                    rr = await fn()     # each of its tries has its own timer
                else:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that arrives together with the answer, and close() would
                    # wait forever
                    async with asyncio.timeout(limit):
                        rr = await fn()
            except self._call_errors as err:
                if isinstance(err, self._lost) or not self._client.connected:
                    self.stats.errors += 1
                    raise BusError(f"{where}: connection lost: {err}") from err
                self.stats.timeouts += 1
                raise DeviceTimeout(
                    f"{where} timed out after {s.timeout:g} s x {retries + 1}") from err
            finally:
                self.stats.busy_s += time.perf_counter() - t0
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0) or 0)
            self.stats.exceptions += 1
            name = EXCEPTION_NAMES.get(code, "unknown")
            raise DeviceException(f"{where}: exception {code} ({name})", code=code)
        return rr

    async def _read(self, dev: DeviceState, req: ReadRequest) -> list[int]:
        c = self._client_or_new()
        unit = dev.settings.unit
        what = f"read {req.table} {req.start}..{req.end - 1}"
        read = {Table.HOLDING: c.read_holding_registers, Table.INPUT: c.read_input_registers,
                Table.COIL: c.read_coils, Table.DISCRETE: c.read_discrete_inputs}[req.table]
        rr = await self._call(
            dev, what, lambda: read(req.start, count=req.count, device_id=unit))
        if req.table.is_bits:
            bits = list(rr.bits)[: req.count]
            if len(bits) < req.count:
                raise DeviceException(f"{self._where()}: {what}: short answer", code=0)
            return [int(b) for b in bits]
        regs = rr.registers
        if type(regs) is not list:
            regs = list(regs)
        if len(regs) != req.count:
            raise DeviceException(
                f"{self._where()}: {what}: {len(regs)} registers in the answer", code=0)
        return regs

    async def _write(self, dev: DeviceState, spec: PointSpec, regs: list[int]) -> None:
        c = self._client_or_new()
        unit = dev.settings.unit
        what = f"write {spec.table} {spec.address} ({spec.name})"
        if len(regs) > MAX_REGISTERS_PER_WRITE:
            raise WriteRejected(f"{self._where()}: {what}: {len(regs)} registers, one Modbus "
                                f"write takes {MAX_REGISTERS_PER_WRITE} at most")
        fn: Callable[[], Any]
        if spec.table is Table.COIL:
            fn = lambda: c.write_coil(spec.address, bool(regs[0]), device_id=unit)  # noqa: E731
        elif len(regs) == 1:
            fn = lambda: c.write_register(spec.address, regs[0], device_id=unit)  # noqa: E731
        else:
            fn = lambda: c.write_registers(spec.address, regs, device_id=unit)  # noqa: E731
        await self._call(dev, what, fn)

    def _client_or_new(self) -> Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    # ------------------------------------------------------------------ the bus task
    async def serve(self) -> None:
        """The bus task: polls and queued jobs until cancelled (restartable)."""
        if self._client is not None:        # restarted after a failure: start afresh
            self._client.close()
            self._client = None
            self.state = ConnState.DISCONNECTED
        loop = asyncio.get_running_loop()
        now = loop.time()
        # every device of the bus due at once: the bus serves them back to back (it takes one
        # transaction at a time anyway) and the task wakes once per round, not once per
        # device (spreading them 10 ms apart cost ~15 % more CPU on the peer bench's S2)
        for dev in self.devices.values():
            for plan in dev.plans:
                dev.next_due[plan.period] = now
        pending_first = {d for d in self.devices}
        while not self._closed:
            self.progress()
            # queued commands first: an operator's write must not wait for a poll round
            while self._writes or self._reads:
                job, fut = (self._writes or self._reads).popleft()
                if fut.done():
                    continue
                # the caller may give up (be cancelled) while its job runs: its future is then
                # done, and setting it again would kill the bus task
                try:
                    result = await job()
                except asyncio.CancelledError:
                    fut.cancel()
                    raise
                except Exception as err:  # delivered to the caller, who decides
                    if not fut.done():
                        fut.set_exception(err)
                else:
                    if not fut.done():
                        fut.set_result(result)
            if not self._poll_enabled:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_BEAT):
                        await self._wake.wait()
                continue
            if self._closed:
                break
            due_dev, due_plan, due_at = self._earliest()
            now = loop.time()
            if due_dev is None or due_plan is None or due_at > now:
                self._wake.clear()
                # idle: wake at least every _IDLE_BEAT to show the task is alive
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(due_at - now, _IDLE_BEAT)):
                        await self._wake.wait()
                continue
            try:
                await self._poll_plan(due_dev, due_plan)
            except BusError as err:
                await self._bus_down(err)
            finally:
                self._schedule_next(due_dev, due_plan, loop.time())
            pending_first.discard(due_dev.settings.name)
            if not pending_first:
                self.first_cycle_done.set()

    def _earliest(self) -> tuple[DeviceState | None, Plan | None, float]:
        best: tuple[DeviceState | None, Plan | None, float] = (None, None, float("inf"))
        for dev in self.devices.values():
            for plan in dev.plans:
                due = max(dev.next_due[plan.period], dev.backoff_until)
                if due < best[2]:
                    best = (dev, plan, due)
        return best

    def _schedule_next(self, dev: DeviceState, plan: Plan, now: float) -> None:
        due = dev.next_due[plan.period] + plan.period
        if due <= now:   # fell behind (slow bus, backoff): skip missed cycles, no burst
            due = now + plan.period
        dev.next_due[plan.period] = due

    async def _bus_down(self, err: BusError) -> None:
        log.warning("%s", err, extra=self._fields())
        for dev in self.devices.values():
            if dev.health is not Health.OFFLINE:
                dev.health = Health.OFFLINE
                dev.last_error = str(err)
                self._on_event(BusEvent("device_offline", dev.settings.name,
                                        {"reason": str(err), "bus": self.settings.name}))
        if self._client is not None:
            self._client.close()
        self.state = ConnState.DISCONNECTED
        delay = self._reconnect.next()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _poll_plan(self, dev: DeviceState, plan: Plan) -> None:
        samples: list[Sample] = []
        reads = list(plan.reads)
        i = 0
        while i < len(reads):
            req = reads[i]
            i += 1
            t0 = time.perf_counter()
            try:
                regs = await self._read(dev, req)
            except DeviceTimeout as err:
                self._device_failed(dev, str(err), cost=time.perf_counter() - t0)
                return        # a silent device: do not spend a timeout on each of its reads
            except DeviceException as err:
                split = self._split_on_illegal_address(dev, plan, req, err)
                if split:
                    reads[i:i] = split
                    continue
                self._device_exception(dev, req, err)
                ts = self._now_ms()
                samples.extend(Sample(dev.settings.name, p.name, ts, None, Quality.EXCEPTION)
                               for p in req.points)
                continue
            ts = self._now_ms()
            key = (req.table, req.start)
            if key in dev.exception_codes:
                del dev.exception_codes[key]
            name = dev.settings.name
            for p, dec, off in req.decoders:
                try:
                    value = dec(regs, off)
                except (ValueError, UnicodeDecodeError) as err:
                    log.warning("%s: %s.%s: cannot decode: %s", self._where(),
                                name, p.name, err, extra=self._fields(dev))
                    samples.append(Sample(name, p.name, ts, None, Quality.BAD_DATA))
                    continue
                samples.append(Sample(name, p.name, ts, value))
        dev.polls += 1
        self._device_ok(dev)
        if samples:
            self._on_samples(samples)

    def _split_on_illegal_address(self, dev: DeviceState, plan: Plan, req: ReadRequest,
                                  err: DeviceException) -> list[ReadRequest]:
        """A merged read that spans registers the device does not have: read it in pieces.

        Devices may refuse a read over a hole in their map (exception 2). The plan is
        rewritten for good, so the cost is paid once, not every poll.
        """
        if err.code != 2 or len(req.points) < 2:
            return []
        pieces = plan_table(req.table, req.points, max_gap=0)
        if len(pieces) < 2:
            return []
        log.info("%s: %s: %s refused (illegal address); reading it in %d pieces from now on",
                 self._where(), dev.settings.name, f"{req.table} {req.start}..{req.end - 1}",
                 len(pieces), extra=self._fields(dev))
        for n, p in enumerate(dev.plans):
            if p is plan:
                new_reads = []
                for r in p.reads:
                    new_reads.extend(pieces if r is req else [r])
                dev.plans[n] = Plan(p.period, tuple(new_reads))
                dev.next_due.setdefault(p.period, 0.0)
        return pieces

    def _device_ok(self, dev: DeviceState) -> None:
        dev.last_ok = self._wall()
        if dev.health is not Health.ONLINE:
            was = dev.health
            dev.health = Health.ONLINE
            if was is Health.OFFLINE:
                log.info("%s: %s is back online after %d failed polls",
                         self._where(), dev.settings.name, dev.failures,
                         extra=self._fields(dev, "device_online"))
                self._on_event(BusEvent("device_online", dev.settings.name,
                                        {"bus": self.settings.name,
                                         "failed_polls": dev.failures}))
        dev.failures = 0
        dev.backoff_until = 0.0

    def _device_failed(self, dev: DeviceState, reason: str, *, cost: float = 0.0) -> None:
        dev.failures += 1
        dev.errors += 1
        dev.last_error = reason
        # back off: 1, 2, 4 ... poll periods, and never closer than the probe budget allows
        # (a 1 s probe with a 2 % budget: 50 s apart), capped, with jitter so that the probes
        # of several dead devices do not align
        period = min(p.period for p in dev.plans)
        delay = max(period * 2 ** (dev.failures - 1), cost / self.settings.probe_budget)
        delay = min(delay, self.settings.backoff_cap)
        delay = jittered(delay, 0.2)
        dev.backoff_until = asyncio.get_running_loop().time() + delay
        if dev.health is not Health.OFFLINE:
            dev.health = Health.OFFLINE
            log.warning("%s; %s marked offline, retrying with backoff", reason, dev.settings.name,
                        extra=self._fields(dev, "device_offline"))
            self._on_event(BusEvent("device_offline", dev.settings.name,
                                    {"bus": self.settings.name, "reason": reason}))
            ts = self._now_ms()
            self._on_samples([Sample(dev.settings.name, p.name, ts, None, Quality.TIMEOUT)
                              for p in dev.settings.points])

    def _device_exception(self, dev: DeviceState, req: ReadRequest,
                          err: DeviceException) -> None:
        dev.errors += 1
        key = (req.table, req.start)
        if dev.exception_codes.get(key) != err.code:   # once per incident, not every poll
            dev.exception_codes[key] = err.code
            log.warning("%s", err, extra=self._fields(dev, "modbus_exception"))
            self._on_event(BusEvent("modbus_exception", dev.settings.name, {
                "bus": self.settings.name, "code": err.code,
                "name": EXCEPTION_NAMES.get(err.code, "unknown"),
                "table": str(req.table), "start": req.start, "count": req.count,
                "points": [p.name for p in req.points]}))
