"""Modbus bench: the DESIGN §6 targets of the Modbus side, measured in one run.

Run: ``.venv/bin/python bench/modbus_bench.py`` (about 2.5 minutes; ``--help`` for the knobs,
``--only 1,3`` for some parts). It prints figures, it asserts nothing. Five parts:

1. the peer's workload (10 Modbus TCP devices x 50 registers, 1 s polls): points/s delivered,
   gateway CPU seconds per 1000 points, requests per poll cycle against the one-request-per-point
   plan, resident memory, each next to the peer's figure and our target;
2. the most points/s the same devices give when polled back to back (poll 0), and the points per
   CPU-second of the gateway process (what one core sustains);
3. a saturated RS-485 line at 9600 baud (the RTU simulator keeps real wire time): the fraction of
   the time the line carries useful transactions, ours against a bare pymodbus loop;
4. a silent device among 10: the poll rate of the healthy ones with and without it, both with
   one endpoint per device and with all devices behind one endpoint (one connection);
5. sustained, end to end: the whole agent (``edgegw run``, its own process) polling 5 000
   points/s, batching, storing and publishing to a private Mosquitto, every point decoded and
   checked here: points/s delivered and the agent's CPU (from /proc).

The simulators run in a separate process (``multiprocessing``, spawn), so the CPU time and the
memory measured here (``time.process_time``, ``/proc/self/status``) are the gateway's alone; the
gateway side never imports the simulators.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.modbus.bus import BusKind, BusSettings, DeviceSettings, ModbusBus
from drivers.modbus.planner import naive_request_count, plan_device
from drivers.modbus.registers import DataType, PointSpec, Table
from drivers.sample import Quality, Sample

# the peer's figures (DESIGN §6), measured on these machines with the same work
PEER_CPU_PER_1000 = (0.14, 0.16)     # CPU-seconds per 1000 points
PEER_REQUESTS_PER_CYCLE = 500        # 10 devices x 50 registers, one request per point
PEER_RSS_MB = 65.0
TARGET_CPU_FACTOR = 10.0             # at least 10x less CPU per point
TARGET_RSS_MB = 40.0
TARGET_POINTS_PER_S = 5000.0         # sustained on one core
TARGET_BUSY = 0.95                   # useful fraction of a saturated RS-485 line (issue 13)
TARGET_DEAD_DROP = 0.05              # a dead device lowers the others' poll rate by < 5 %

Endpoint = tuple[str, int, int]      # device name, unit id, TCP port


# ------------------------------------------------------------------------------ register maps
def bench_points(count: int) -> tuple[PointSpec, ...]:
    """`count` holding registers at 0..count-1, uint16 and int16 alternately."""
    return tuple(
        PointSpec(name=f"r{i:03d}", table=Table.HOLDING, address=i,
                  type=DataType.UINT16 if i % 2 == 0 else DataType.INT16)
        for i in range(count))


def bench_value(unit: int, spec: PointSpec) -> int:
    """A varied but reproducible value for one point of one unit (what the simulator holds)."""
    raw = (unit * 7919 + spec.address * 40503 + 12345) % 65536
    return raw if spec.type is DataType.UINT16 else raw - 32768


def device_name(i: int) -> str:
    return f"dev-{i:02d}"


# ---------------------------------------------------------------------- the simulator process
def _sim_main(conn: Connection) -> None:
    """Entry point of the simulator process: serve commands from the bench until told to quit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the bench stops us, not the terminal's ^C
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("simulators").setLevel(logging.CRITICAL)
    asyncio.run(_sim_serve(conn))


async def _sim_serve(conn: Connection) -> None:
    from simulators.devices import Fault, SimulatedDevice
    from simulators.modbus_server import ModbusRtuSim, ModbusTcpSim

    loop = asyncio.get_running_loop()
    sims: list[ModbusTcpSim | ModbusRtuSim] = []
    devices: dict[str, SimulatedDevice] = {}

    def make(unit: int, name: str, count: int) -> SimulatedDevice:
        pts = bench_points(count)
        dev = SimulatedDevice(pts, unit=unit, name=name,
                              values={p.name: bench_value(unit, p) for p in pts})
        devices[name] = dev
        return dev

    async def close_all() -> None:
        for sim in sims:
            await sim.close()
        sims.clear()
        devices.clear()

    try:
        while True:
            try:
                cmd, *args = await loop.run_in_executor(None, conn.recv)
            except EOFError:                          # the bench is gone
                return
            reply: Any = None
            try:
                if cmd == "tcp":                       # n devices, points each, shared endpoint?
                    n, count, shared = args
                    endpoints: list[Endpoint] = []
                    if shared:
                        devs = [make(i + 1, device_name(i), count) for i in range(n)]
                        tsim = ModbusTcpSim(devs, port=0)
                        await tsim.start()
                        sims.append(tsim)
                        endpoints = [(d.name, d.unit, tsim.port) for d in devs]
                    else:
                        for i in range(n):
                            dev = make(1, device_name(i), count)
                            tsim = ModbusTcpSim([dev], port=0)
                            await tsim.start()
                            sims.append(tsim)
                            endpoints.append((dev.name, dev.unit, tsim.port))
                    reply = endpoints
                elif cmd == "rtu":                     # n devices, registers each, baud rate
                    n, count, baud = args
                    rsim = ModbusRtuSim([make(i + 1, device_name(i), count) for i in range(n)],
                                        baudrate=baud, wire_time=True)
                    await rsim.start()
                    sims.append(rsim)
                    reply = rsim.client_path
                elif cmd == "fault":
                    name, mode = args
                    devices[name].fault = Fault.silent() if mode == "silent" else Fault()
                elif cmd == "reset":
                    for dev in devices.values():
                        dev.reset_counters()
                elif cmd == "counts":
                    reply = {name: dev.requests for name, dev in devices.items()}
                elif cmd == "close":
                    await close_all()
                elif cmd == "quit":
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as err:  # reported to the bench, which stops
                conn.send(("error", f"{type(err).__name__}: {err}"))
                continue
            conn.send(("ok", reply))
    finally:
        await close_all()


class SimProcess:
    """The simulators, in a process of their own; `call` sends one command and waits."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc: BaseProcess = ctx.Process(target=_sim_main, args=(child,),
                                              name="modbus-bench-sim", daemon=True)
        self._proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def call(self, *cmd: Any) -> Any:
        """One command (blocking: used between measurements only)."""
        self._conn.send(cmd)
        if not self._conn.poll(30):
            raise RuntimeError(f"simulator process did not answer {cmd[0]!r} within 30 s")
        status, reply = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"simulator process: {cmd[0]}: {reply}")
        return reply

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self._proc.is_alive():
                self.call("quit")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


# ------------------------------------------------------------------------------- measurement
class Sink:
    """What the buses deliver to: counts, the last batch per device, poll times per device."""

    def __init__(self, *, keep_times: bool = False) -> None:
        self.points = 0
        self.bad = 0
        self.last: dict[str, list[Sample]] = {}
        self.times: dict[str, list[float]] = defaultdict(list)
        self._keep_times = keep_times
        self._clock = time.monotonic      # the loop's clock (asyncio uses time.monotonic)

    def __call__(self, batch: list[Sample]) -> None:
        bad = sum(1 for s in batch if s.quality is not Quality.GOOD)
        self.bad += bad
        self.points += len(batch) - bad
        dev = batch[0].device
        self.last[dev] = batch
        if self._keep_times and not bad:
            self.times[dev].append(self._clock())


@dataclass(slots=True)
class Snap:
    wall: float
    cpu: float
    points: int
    bad: int
    requests: int
    timeouts: int
    busy_s: float
    polls: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, sink: Sink, buses: Sequence[ModbusBus]) -> Snap:
        return cls(
            wall=time.monotonic(), cpu=time.process_time(), points=sink.points, bad=sink.bad,
            requests=sum(b.stats.requests for b in buses),
            timeouts=sum(b.stats.timeouts for b in buses),
            busy_s=sum(b.stats.busy_s for b in buses),
            polls={n: d.polls for b in buses for n, d in b.devices.items()})


def rss_mb() -> tuple[float, float]:
    """Resident and peak resident memory of this process, MB."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KB on Linux
    return found.get("VmRSS", peak), found.get("VmHWM", peak)


async def sleep_to_mid_grid(origin: float, period: float, after: float) -> None:
    """Sleep until origin + after, moved on to half-way between two polls of a period-grid.

    Buses poll at origin + k x period; a window opened and closed half-way between polls counts
    whole poll cycles, so a 20 s window at 1 s polls counts 20 cycles, not 20 or 21.
    """
    after = max(after, time.monotonic() - origin)
    target = origin + after
    if period > 0:
        k = math.ceil((after - period / 2) / period - 0.05)   # a few ms late is on time
        target = origin + k * period + period / 2
    await asyncio.sleep(max(0.0, target - time.monotonic()))


def tcp_settings(name: str, port: int, *, timeout: float = 1.0, retries: int = 1) -> BusSettings:
    return BusSettings(name=name, kind=BusKind.TCP, host="127.0.0.1", port=port,
                       timeout=timeout, retries=retries)


def tcp_buses(endpoints: Sequence[Endpoint], *, shared: bool, poll: float,
              points: tuple[PointSpec, ...], sink: Sink) -> list[ModbusBus]:
    """One bus per endpoint (one per device, or one for all when `shared`)."""
    devs = [DeviceSettings(name=n, unit=u, poll=poll, points=points) for n, u, _ in endpoints]
    if shared:
        return [ModbusBus(tcp_settings("lan", endpoints[0][2]), devs, on_samples=sink)]
    return [ModbusBus(tcp_settings(f"tcp-{d.name}", port), [d], on_samples=sink)
            for d, (_, _, port) in zip(devs, endpoints, strict=True)]


# Bus closes that needed the bus task cancelled more than once (see `close_bus`).
SWALLOWED_CANCELS: list[str] = []


async def close_bus(bus: ModbusBus) -> None:
    """`bus.close()`, cancelling the bus task again while it survives the first cancel.

    On Python 3.11 `asyncio.wait_for` (in the bus and inside pymodbus) returns the result instead
    of raising CancelledError when the answer arrives in the same loop pass as the cancel; the
    bus task then keeps polling and `close()` waits for it forever. Under load (poll 0) that is
    almost certain. The bench works around it here and reports it.
    """
    closing = asyncio.create_task(bus.close(), name=f"close {bus.settings.name}")
    extra = 0
    while not closing.done():
        await asyncio.wait([closing], timeout=0.1)
        task = getattr(bus, "_task", None)      # private: only to survive the bug above
        if not closing.done() and isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
            extra += 1
    if extra:
        SWALLOWED_CANCELS.append(f"{bus.settings.name} (+{extra})")
    await closing


@contextlib.asynccontextmanager
async def running(buses: Sequence[ModbusBus]) -> Any:
    entered: list[ModbusBus] = []
    try:
        for bus in buses:
            await bus.__aenter__()
            entered.append(bus)
        yield
    finally:
        for bus in reversed(entered):
            await close_bus(bus)


async def first_cycle(buses: Sequence[ModbusBus], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        for bus in buses:
            await bus.first_cycle_done.wait()


# ------------------------------------------------------------------------------------ report
def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def line(label: str, text: str) -> None:
    print(f"  {label:<22} {text}", flush=True)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


# ------------------------------------------------------------------------------------- parts
FULL_AGENT_PROBE = """
import gateway.runtime
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) / 1024)
"""


def full_agent_rss() -> str:
    """RSS of a fresh interpreter that imports the whole agent (gateway.runtime), nothing run.

    The bench's own process imports only the Modbus driver; the agent also loads its config
    models, MQTT link, store and policies, which the memory target covers too.
    """
    try:
        done = subprocess.run([sys.executable, "-c", FULL_AGENT_PROBE], capture_output=True,
                              text=True, timeout=60, check=True,
                              cwd=Path(__file__).resolve().parent.parent)
        mb = float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as err:
        return f"n/a (cannot import gateway.runtime: {type(err).__name__})"
    return (f"{mb:.1f} MB RSS just importing gateway.runtime in a fresh interpreter (target < "
            f"{TARGET_RSS_MB:g} MB, before any work) {verdict(mb < TARGET_RSS_MB)}")


async def part_peer(sim: SimProcess, args: argparse.Namespace) -> None:
    n, m, poll, dur = args.devices, args.points, args.poll, args.duration
    print(f"[1] peer workload: {n} Modbus TCP devices x {m} registers (one endpoint each), "
          f"poll {poll:g} s, {dur:g} s window", flush=True)
    points = bench_points(m)
    rss_before, _ = rss_mb()
    endpoints: list[Endpoint] = sim.call("tcp", n, m, False)
    sink = Sink()
    buses = tcp_buses(endpoints, shared=False, poll=poll, points=points, sink=sink)
    origin = time.monotonic()
    async with running(buses):
        await first_cycle(buses)
        await sleep_to_mid_grid(origin, poll, max(1.0, poll))
        sim.call("reset")
        a = Snap.take(sink, buses)
        await sleep_to_mid_grid(origin, poll, a.wall - origin + dur)
        b = Snap.take(sink, buses)
        server_requests: dict[str, int] = sim.call("counts")
        rss, peak = rss_mb()
    sim.call("close")

    elapsed = b.wall - a.wall
    pts = b.points - a.points
    cpu = b.cpu - a.cpu
    polls = sum(b.polls.values()) - sum(a.polls.values())
    expected = n * m / poll if poll > 0 else float("nan")
    line("points delivered", f"{pts / elapsed:.1f} points/s (expected {expected:.1f}; "
         f"{pts} in {elapsed:.2f} s, {b.bad - a.bad} not good)")
    # correctness, once: the last values read are the simulator's
    wrong = sum(1 for (name, unit, _) in endpoints for s in sink.last.get(name, [])
                if s.value != bench_value(unit, points[int(s.point[1:])]))
    missing = sum(1 for (name, _, _) in endpoints if name not in sink.last)
    line("values check", f"{n * m - wrong - missing * m}/{n * m} last values equal the "
         f"simulator's" + ("" if not (wrong or missing) else "  <-- WRONG VALUES"))
    per_1000 = cpu / pts * 1000 if pts else float("nan")
    lo, hi = (x / per_1000 if per_1000 > 0 else float("inf") for x in PEER_CPU_PER_1000)
    line("gateway CPU", f"{per_1000:.4f} CPU-s per 1000 points vs peer {PEER_CPU_PER_1000[0]}-"
         f"{PEER_CPU_PER_1000[1]} -> {lo:.1f}-{hi:.1f}x less (target >= "
         f"{TARGET_CPU_FACTOR:g}x) {verdict(lo >= TARGET_CPU_FACTOR)}")
    line("gateway CPU load", f"{cpu / elapsed * 100:.2f} % of one core "
         f"({cpu * 1e6 / max(1, polls):.0f} us per device poll)")
    planned = sum(len(p.reads) for p in plan_device(points, default_period=poll))
    naive = naive_request_count(points)
    reqs = b.requests - a.requests
    per_dev_cycle = reqs / polls if polls else float("nan")
    srv = sum(server_requests.values())
    srv_per = srv / polls if polls else float("nan")
    line("requests per cycle",
         f"{per_dev_cycle * n:g} ({per_dev_cycle:g}/device, server saw {srv_per:g}, plan "
         f"{planned}) vs naive {naive * n} and peer {PEER_REQUESTS_PER_CYCLE} -> "
         f"{PEER_REQUESTS_PER_CYCLE / (per_dev_cycle * n):.0f}x fewer (target: optimal) "
         f"{verdict(abs(per_dev_cycle - planned) < 1e-9 and abs(srv_per - planned) < 1e-9)}")
    line("resident memory", f"{rss:.1f} MB RSS (peak {peak:.1f}; {rss_before:.1f} before the "
         f"buses) vs peer {PEER_RSS_MB:g} MB -> {PEER_RSS_MB / rss:.1f}x less (target < "
         f"{TARGET_RSS_MB:g} MB) {verdict(peak < TARGET_RSS_MB)}")
    line("full agent footprint", full_agent_rss())


async def part_max(sim: SimProcess, args: argparse.Namespace) -> None:
    n, m, dur = args.devices, args.points, args.max_duration
    print(f"[2] max throughput: {n} TCP devices x {m} registers polled back to back (poll 0), "
          f"{dur:g} s window", flush=True)
    points = bench_points(m)
    endpoints: list[Endpoint] = sim.call("tcp", n, m, False)
    sink = Sink()
    buses = tcp_buses(endpoints, shared=False, poll=0.0, points=points, sink=sink)
    async with running(buses):
        await first_cycle(buses)
        await asyncio.sleep(1.0)
        a = Snap.take(sink, buses)
        await asyncio.sleep(dur)
        b = Snap.take(sink, buses)
    sim.call("close")
    elapsed = b.wall - a.wall
    pts = b.points - a.points
    cpu = b.cpu - a.cpu
    reqs = b.requests - a.requests
    load = cpu / elapsed
    per_cpu_s = pts / cpu if cpu > 0 else float("inf")
    line("points delivered", f"{fmt_int(pts / elapsed)} points/s ({fmt_int(reqs / elapsed)} "
         f"requests/s, {b.bad - a.bad} not good)")
    bound = "gateway-bound" if load > 0.9 else "simulator-bound: the simulator has one core too"
    line("gateway CPU load", f"{load * 100:.0f} % of one core ({bound}), "
         f"{cpu / pts * 1000:.4f} CPU-s per 1000 points")
    line("one-core capacity", f"{fmt_int(per_cpu_s)} points per CPU-second (target >= "
         f"{fmt_int(TARGET_POINTS_PER_S)} points/s on one core) "
         f"{verdict(min(per_cpu_s, pts / elapsed) >= TARGET_POINTS_PER_S)}")


def wire_time(count: int, baud: int, bits_per_char: int = 10) -> tuple[float, int]:
    """Theoretical wire time of one RTU read of `count` registers, and its characters.

    Request 8 bytes (unit, function, address, count, CRC), answer 5 + 2 x count (unit, function,
    byte count, data, CRC), and the 3.5-character silence after each frame.
    """
    chars = 8 + 5 + 2 * count
    return (chars + 7) * bits_per_char / baud, chars


async def bare_loop(path: str, *, units: int, count: int, baud: int, duration: float,
                    reply_timeout: float) -> tuple[int, int, float]:
    """A bare pymodbus loop reading the same registers back to back: (ok, failed, elapsed)."""
    from pymodbus.client import AsyncModbusSerialClient
    from pymodbus.framer import FramerType

    client = AsyncModbusSerialClient(path, framer=FramerType.RTU, baudrate=baud,
                                     timeout=reply_timeout, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"bare pymodbus loop: cannot open {path}")
    try:
        for unit in range(1, units + 1):                  # warm up
            with contextlib.suppress(Exception):   # the line may still carry the bus's last
                await client.read_holding_registers(0, count=count, device_id=unit)
        ok = failed = 0
        unit = 0
        t0 = time.monotonic()
        end = t0 + duration
        while time.monotonic() < end:
            unit = unit % units + 1
            try:
                rr = await client.read_holding_registers(0, count=count, device_id=unit)
            except Exception:  # a timeout counts as a failed transaction, as in the bus
                failed += 1
                continue
            if rr.isError():
                failed += 1
            else:
                ok += 1
        return ok, failed, time.monotonic() - t0
    finally:
        client.close()


async def part_rtu(sim: SimProcess, args: argparse.Namespace) -> None:
    n, count, baud, poll, dur = (args.rtu_devices, args.rtu_registers, args.baud, args.rtu_poll,
                                 args.rtu_duration)
    t_wire, chars = wire_time(count, baud)
    demand = n / poll if poll > 0 else float("inf")
    dead = args.rtu_dead
    print(f"[3] RS-485 saturation: {n} devices x one {count}-register read, {baud} baud 8N1 with "
          f"wire time, poll {poll:g} s (asks {demand:g} reads/s), {dur:g} s each; {dead} more "
          f"unit(s) configured that never answer", flush=True)
    line("wire time per read", f"{t_wire * 1000:.1f} ms theoretical ({chars} characters + 2 x "
         f"3.5 silence) -> at most {1 / t_wire:.1f} reads/s")
    path: str = sim.call("rtu", n, count, baud)
    points = bench_points(count)
    sink = Sink()
    devs = [DeviceSettings(name=device_name(i), unit=i + 1, poll=poll, points=points)
            for i in range(n + dead)]                # units above n: nothing simulated there
    settings = BusSettings(name="rs485", kind=BusKind.RTU, serial_port=path, baudrate=baud,
                           timeout=args.rtu_timeout, retries=1)
    bus = ModbusBus(settings, devs, on_samples=sink)
    async with running([bus]):
        await first_cycle([bus])
        await asyncio.sleep(0.5)
        a = Snap.take(sink, [bus])
        await asyncio.sleep(dur)
        b = Snap.take(sink, [bus])
    elapsed = b.wall - a.wall
    live = [device_name(i) for i in range(n)]
    per_dev = [b.polls[d] - a.polls.get(d, 0) for d in live]
    good = sum(per_dev)
    ours = good * t_wire / elapsed
    busy = (b.busy_s - a.busy_s) / elapsed
    cpu = b.cpu - a.cpu
    line("edgegw bus", f"{good / elapsed:.1f} reads/s, useful-busy {ours * 100:.1f} %, "
         f"bus.stats.busy_s {busy * 100:.1f} %, {b.timeouts - a.timeouts} timeouts, CPU "
         f"{cpu / elapsed * 100:.1f} % (target >= {TARGET_BUSY * 100:.0f} %) "
         f"{verdict(ours >= TARGET_BUSY)}")
    line("shared fairly", f"reads/s per live device {min(per_dev) / elapsed:.1f} .. "
         f"{max(per_dev) / elapsed:.1f} (min/max {min(per_dev) / max(per_dev) * 100:.0f} %)"
         if per_dev and max(per_dev) else "n/a")
    ok, failed, bare_elapsed = await bare_loop(path, units=n, count=count, baud=baud,
                                               duration=dur, reply_timeout=args.rtu_timeout)
    bare = ok * t_wire / bare_elapsed
    sim.call("close")
    line("bare pymodbus loop", f"{ok / bare_elapsed:.1f} reads/s, useful-busy {bare * 100:.1f} %,"
         f" {failed} failed (DESIGN: ~98 %; the live units only: the ceiling)")
    line("ratio to bare loop", f"{ours / bare * 100:.1f} %" if bare else "n/a (bare loop read "
         "nothing)")


def healthy_polls(sink: Sink, names: Sequence[str], start: float,
                  end: float) -> tuple[int, float]:
    """Good polls of `names` within [start, end], and the longest wait between two of a device's
    polls there (the window's edges count as polls, so a device stuck at the end shows)."""
    count = 0
    worst = 0.0
    for name in names:
        times = [t for t in sink.times.get(name, []) if start <= t <= end]
        count += len(times)
        edges = [start, *times, end]
        worst = max(worst, *(b - a for a, b in pairwise(edges)))
    return count, worst


async def part_dead(sim: SimProcess, args: argparse.Namespace) -> None:
    n, m, poll, dur = args.devices, args.points, args.dead_poll, args.dead_duration
    probe = tcp_settings("x", 0)
    cost = probe.timeout * (probe.retries + 1)         # what one poll of a silent device costs
    print(f"[4] dead device: {n} TCP devices x {m} registers, poll {poll:g} s, one silent "
          f"(timeout {probe.timeout:g} s x {probe.retries + 1} tries, the config defaults), "
          f"{dur:g} s from the start", flush=True)
    points = bench_points(m)
    dead = device_name(n - 1)
    for shared, label in ((False, "one endpoint each"), (True, "one shared endpoint")):
        rates: list[float] = []
        late: list[float] = []       # the second half of the window: after the detection
        gaps: list[float] = []
        timeouts = 0
        for silent in (False, True):
            endpoints: list[Endpoint] = sim.call("tcp", n, m, shared)
            if silent:
                sim.call("fault", dead, "silent")
            sink = Sink(keep_times=True)
            buses = tcp_buses(endpoints, shared=shared, poll=poll, points=points, sink=sink)
            origin = time.monotonic()
            async with running(buses):
                # the window opens before the first poll: a dead device's first timeouts count
                start = origin + poll / 2
                await sleep_to_mid_grid(origin, poll, dur + poll / 2)
                end = time.monotonic()
                timeouts = sum(bus.stats.timeouts for bus in buses)
            sim.call("close")
            names = [name for name, _, _ in endpoints if name != dead]
            count, worst = healthy_polls(sink, names, start, end)
            rates.append(count / (end - start))
            mid = start + (end - start) / 2
            late_count, _ = healthy_polls(sink, names, mid, end)
            late.append(late_count / (end - mid))
            gaps.append(worst)
        drop = 1 - rates[1] / rates[0] if rates[0] else float("nan")
        line(label, f"healthy polls/s {rates[0]:.2f} -> {rates[1]:.2f} with one silent: drop "
             f"{drop * 100:.1f} % (target < {TARGET_DEAD_DROP * 100:.0f} %) "
             f"{verdict(drop < TARGET_DEAD_DROP)}; longest wait between polls "
             f"{gaps[0]:.2f} -> {gaps[1]:.2f} s; {timeouts} timeouts of the dead one")
        late_drop = 1 - late[1] / late[0] if late[0] else float("nan")
        line("  after detection", f"second half of the window: {late[0]:.2f} -> {late[1]:.2f} "
             f"polls/s, drop {late_drop * 100:.1f} % {verdict(late_drop < TARGET_DEAD_DROP)}")
    # detection costs one poll's timeouts once; then probes are single tries spaced so that
    # they take at most `probe_budget` of the bus
    line("steady state", f"one {probe.timeout:g} s probe at least every "
         f"{probe.timeout / probe.probe_budget:g} s -> at most {probe.probe_budget * 100:g} % "
         f"of the bus (detection itself costs {cost:g} s once)")


# -------------------------------------------------------------------------------------- main
def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its threads so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_agent(tmp: Path, url: str, endpoints: Sequence[Endpoint],
                 points: Sequence[PointSpec], poll: float) -> subprocess.Popen[bytes]:
    """Write part 5's config and start `edgegw run` on it (log in tmp/agent.log)."""
    lines = ["gateway: {id: gw-bench, site: bench}",
             f"mqtt: {{url: '{url}', topic_prefix: city/v1}}",
             "telemetry: {batch_interval: 1}",
             f"store: {{path: '{tmp}/store.db', max_mb: 256}}",
             f"service: {{connect_jitter: 0, control_socket: '{tmp}/c.sock'}}",
             "buses:"]
    lines += [f"  - {{name: bus-{name}, type: modbus-tcp, host: 127.0.0.1, port: {port}}}"
              for name, _unit, port in endpoints]
    lines.append("devices:")
    for name, unit, _port in endpoints:
        lines += [f"  - name: {name}", f"    bus: bus-{name}", f"    unit: {unit}",
                  f"    poll: {poll}", "    points:"]
        lines += [f"      - {{name: {p.name}, table: holding, address: {p.address}, "
                  f"type: {p.type}}}" for p in points]
    cfg = tmp / "gw.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    with open(tmp / "agent.log", "w") as agent_log:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config",
                                 str(cfg)], stdout=subprocess.DEVNULL, stderr=agent_log,
                                cwd=Path(__file__).resolve().parent.parent)


async def part_sustained(sim: SimProcess, args: argparse.Namespace) -> None:
    """The whole agent (``edgegw run``, its own process) polling, batching, storing and
    publishing to a private Mosquitto; this process is the platform and decodes every point."""
    import tempfile

    from gateway.platform.client import Broker, listen
    from simulators.broker import MosquittoBroker

    n, count, poll, dur = args.devices, args.points, args.sustained_poll, args.sustained_duration
    asked = n * count / poll
    print(f"[5] sustained, end to end: {n} Modbus TCP devices x {count} registers every "
          f"{poll:g} s (asks {asked:,.0f} points/s) through `edgegw run` to a private Mosquitto, "
          f"every point decoded by this process, {dur:g} s window", flush=True)
    endpoints: list[Endpoint] = sim.call("tcp", n, count, False)
    points = bench_points(count)
    with tempfile.TemporaryDirectory(prefix="edgegw-sustained-") as tmp:
        async with MosquittoBroker(Path(tmp) / "broker") as broker:
            proc = await asyncio.to_thread(_start_agent, Path(tmp), broker.url, endpoints,
                                           points, poll)
            got: list[dict[str, Any]] = []
            ready, first = asyncio.Event(), asyncio.Event()

            async def platform() -> None:
                async for msg in listen(Broker(broker.url), on_ready=ready.set):
                    if msg.get("kind") == "telemetry":
                        got.append(msg)
                        first.set()

            task = asyncio.create_task(platform())
            try:
                await asyncio.wait_for(ready.wait(), 10)
                try:
                    await asyncio.wait_for(first.wait(), 30)
                except TimeoutError:
                    raise RuntimeError(f"no telemetry from the agent in 30 s (its log: "
                                       f"{tmp}/agent.log)") from None
                await asyncio.sleep(5)                               # warm-up
                t0, c0, k0 = time.monotonic(), _tree_cpu(proc.pid), len(got)
                await asyncio.sleep(dur)
                t1, c1, k1 = time.monotonic(), _tree_cpu(proc.pid), len(got)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 30)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    window = got[k0:k1]
    delivered = sum(len(m["points"]) for m in window)
    seqs = sorted(int(m["seq"]) for m in got)
    gaps = sum(b - a - 1 for a, b in pairwise(seqs) if b > a + 1)
    units = {name: unit for name, unit, _port in endpoints}
    by_name = {p.name: p for p in points}
    wrong = sum(1 for m in window for p in m["points"]
                if p.get("quality") or p["value"] != bench_value(units[p["device"]],
                                                                 by_name[p["point"]]))
    elapsed = t1 - t0
    rate = delivered / elapsed
    cpu = c1 - c0
    line("points delivered", f"{rate:,.0f} points/s ({delivered:,} in {elapsed:.1f} s, asked "
         f"{asked:,.0f}/s; {wrong} wrong or not good; {gaps} seq gaps) "
         f"(target >= {TARGET_POINTS_PER_S:,.0f}) {verdict(rate >= TARGET_POINTS_PER_S * 0.99)}")
    line("agent CPU", f"{cpu / elapsed * 100:.1f} % of one core, {cpu / delivered * 1000:.4f} "
         "CPU-s per 1000 points (the process and its threads, from /proc)" if delivered
         else "n/a")


PARTS = {1: part_peer, 2: part_max, 3: part_rtu, 4: part_dead, 5: part_sustained}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=10, help="TCP devices (parts 1, 2, 4)")
    p.add_argument("--points", type=int, default=50, help="registers per TCP device")
    p.add_argument("--poll", type=float, default=1.0, help="poll period of part 1, s")
    p.add_argument("--duration", type=float, default=20.0, help="window of part 1, s")
    p.add_argument("--max-duration", type=float, default=8.0, help="window of part 2, s")
    p.add_argument("--rtu-devices", type=int, default=4)
    p.add_argument("--rtu-registers", type=int, default=10)
    p.add_argument("--rtu-poll", type=float, default=0.05,
                   help="poll period of each RTU device (faster than the bus allows), s")
    p.add_argument("--rtu-timeout", type=float, default=1.0)
    p.add_argument("--rtu-dead", type=int, default=1,
                   help="units on the RS-485 bus that never answer (part 3)")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--rtu-duration", type=float, default=8.0,
                   help="window of part 3, s (ours, then the bare loop)")
    p.add_argument("--dead-poll", type=float, default=1.0, help="poll period of part 4, s")
    p.add_argument("--dead-duration", type=float, default=10.0,
                   help="window of each of the 4 runs of part 4, s")
    p.add_argument("--sustained-poll", type=float, default=0.1,
                   help="poll period of part 5 (10 x 50 registers every 0.1 s: 5000 points/s)")
    p.add_argument("--sustained-duration", type=float, default=30.0, help="window of part 5, s")
    p.add_argument("--only", default="1,2,3,4,5", help="parts to run, e.g. 1,3")
    p.add_argument("-v", "--verbose", action="store_true", help="show the driver's log")
    args = p.parse_args(argv)
    try:
        args.parts = sorted({int(x) for x in args.only.split(",") if x.strip()})
    except ValueError:
        p.error(f"--only: expected part numbers like 1,3, got {args.only!r}")
    if not set(args.parts) <= set(PARTS):
        p.error(f"--only: parts are {', '.join(map(str, PARTS))}")
    return args


async def run(args: argparse.Namespace, sim: SimProcess) -> None:
    for part in args.parts:
        await PARTS[part](sim, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    import pymodbus

    print(f"edgegw Modbus bench: Python {platform.python_version()}, pymodbus "
          f"{pymodbus.__version__}, {os.cpu_count()} CPUs; simulators in a separate process; "
          f"CPU and memory are the gateway process's ({os.getpid()})", flush=True)
    t0 = time.monotonic()
    sim = SimProcess()
    try:
        asyncio.run(run(args, sim))
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        sim.stop()
    if SWALLOWED_CANCELS:
        print(f"WARNING: {len(SWALLOWED_CANCELS)} bus close(s) lost their cancellation and "
              f"needed it repeated (Python 3.11 asyncio.wait_for race): "
              f"{', '.join(SWALLOWED_CANCELS)}", flush=True)
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
