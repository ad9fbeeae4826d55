"""Run the simulated devices a spec describes (``edgegw simulate --spec FILE``).

``await run_spec(path)`` serves until cancelled (or until its `stop` event is set) and reports
where everything listens through `on_ready`; ``async with run_spec(path) as handle`` (or
`open_spec`) serves for the duration of a block, for the CLI, tests and the demo::

    async with open_spec("examples/sim-street.yaml", ephemeral=True) as sim:
        lamp = sim.devices["lamp-1"]
        port = sim.tcp[0].port          # OS-assigned, since `ephemeral` turns ports into 0
        section = sim.gateway_section() # `buses:` and `devices:` for a matching gateway config

`street_spec(n_poles)` builds the spec of a street of N poles for the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from simulators.devices import EnergyMeter, SimulatedDevice, make_behaviour
from simulators.modbus_server import ModbusRtuSim, ModbusTcpSim
from simulators.spec import RtuServerSpec, SimSpec, SpecError, TcpServerSpec, as_spec
from simulators.world import AcceleratedClock, Clock, World


@dataclass
class SimHandle:
    """Everything a running spec serves: the world, the servers, the devices by name."""

    spec: SimSpec
    world: World
    tcp: list[ModbusTcpSim] = field(default_factory=list)
    rtu: list[ModbusRtuSim] = field(default_factory=list)
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)

    @property
    def servers(self) -> list[ModbusTcpSim | ModbusRtuSim]:
        """Every server, in the spec's order."""
        tcp, rtu = iter(self.tcp), iter(self.rtu)
        return [next(tcp) if isinstance(s, TcpServerSpec) else next(rtu)
                for s in self.spec.servers]

    def server_of(self, device: str) -> ModbusTcpSim | ModbusRtuSim:
        """The server that serves a device (by name)."""
        for srv in self.servers:
            if any(d.name == device for d in srv.devices.values()):
                return srv
        raise KeyError(f"no device named {device!r}")

    def describe(self) -> list[str]:
        """One line per server: where it listens and which units it serves."""
        lines = []
        for srv in self.servers:
            units = ", ".join(f"{d.unit}={d.name}" for d in sorted(srv.devices.values(),
                                                                   key=lambda d: d.unit))
            if isinstance(srv, ModbusTcpSim):
                lines.append(f"modbus-tcp {srv.host}:{srv.port}  units {units}")
            else:
                link = f" (link {srv.link_path})" if srv.link_path else ""
                wire = ", wire time" if srv.wire_time else ""
                lines.append(f"modbus-rtu {srv.client_path}{link}  {srv.baudrate} baud{wire}"
                             f"  units {units}")
        return lines

    def gateway_section(self, *, poll: float = 10.0) -> dict[str, list[dict[str, Any]]]:
        """`buses:` and `devices:` of a gateway config (DESIGN 4.2) that reads these devices.

        Bus names are ``sim-tcp-N`` and ``sim-rtu-N``; each device keeps its name, unit and
        builtin profile (and its extra points inline).
        """
        buses: list[dict[str, Any]] = []
        devices: list[dict[str, Any]] = []
        tcp_i = rtu_i = 0
        for srv_spec, srv in zip(self.spec.servers, self.servers, strict=True):
            if isinstance(srv, ModbusTcpSim):
                tcp_i += 1
                bus = f"sim-tcp-{tcp_i}"
                buses.append({"name": bus, "type": "modbus-tcp", "host": srv.host,
                              "port": srv.port})
            else:
                rtu_i += 1
                bus = f"sim-rtu-{rtu_i}"
                port = str(srv.link_path) if srv.link_path else srv.client_path
                buses.append({"name": bus, "type": "modbus-rtu", "port": port,
                              "baudrate": srv.baudrate, "parity": srv.parity,
                              "stopbits": srv.stopbits})
            for d in srv_spec.devices:
                profile = d.profile if ":" in d.profile or "/" in d.profile else (
                    f"builtin:{d.profile}")
                entry: dict[str, Any] = {"name": d.device_name, "bus": bus, "unit": d.unit,
                                         "poll": poll, "profile": profile}
                if d.extra_points:
                    entry["points"] = [p.model_dump(mode="json", exclude_defaults=True)
                                       for p in d.extra_points]
                devices.append(entry)
        return {"buses": buses, "devices": devices}


def _world(spec: SimSpec, clock: Clock | None) -> World:
    w = spec.world
    if clock is None and (w.start is not None or w.speed != 1.0):
        clock = AcceleratedClock(w.start or datetime.now(UTC), w.speed)
    world = World(lat=w.lat, lon=w.lon, timezone=w.timezone, clock=clock, seed=w.seed)
    world.lux_override = w.lux
    world.water_level = w.water_level
    return world


def build(spec: SimSpec, *, world: World | None = None, ephemeral: bool = False,
          clock: Clock | None = None) -> SimHandle:
    """The servers and devices of a spec, not started yet.

    `ephemeral` serves every TCP server on an OS-assigned port and makes no symlinks, so a
    test can run a spec written for a fixed site without clashing with anything.
    """
    handle = SimHandle(spec=spec, world=world or _world(spec, clock))
    for srv in spec.servers:
        devices = []
        for d in srv.devices:
            options: dict[str, Any] = {}
            if d.rated_power is not None:
                options["rated_power"] = d.rated_power
            dev = SimulatedDevice(
                spec.points_of(d), unit=d.unit, name=d.device_name, world=handle.world,
                behaviour=make_behaviour(d.behaviour_name, **options), values=d.values,
                seed=None if spec.world.seed is None else spec.world.seed + 1000 * d.unit,
            )
            for point, value in d.pin.items():
                dev.set(point, value)
            if d.fault is not None:
                dev.fault = d.fault.fault()
            devices.append(dev)
            handle.devices[dev.name] = dev
        if isinstance(srv, TcpServerSpec):
            handle.tcp.append(ModbusTcpSim(devices, host=srv.host,
                                           port=0 if ephemeral else srv.port))
        else:
            assert isinstance(srv, RtuServerSpec)
            handle.rtu.append(ModbusRtuSim(
                devices, baudrate=srv.baudrate, parity=srv.parity, stopbits=srv.stopbits,
                wire_time=srv.wire_time, link_path=None if ephemeral else srv.link))
    for srv in spec.servers:
        for d in srv.devices:
            if d.feeds:
                meter = handle.devices[d.device_name].behaviour
                assert isinstance(meter, EnergyMeter)
                meter.link([handle.devices[name] for name in d.feeds])
    return handle


@contextlib.asynccontextmanager
async def open_spec(
    spec: SimSpec | Mapping[str, Any] | str | Path,
    *,
    ephemeral: bool = False,
    world: World | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[SimHandle]:
    """Serve a spec for the duration of the block; everything is closed on the way out."""
    handle = build(as_spec(spec), world=world, ephemeral=ephemeral, clock=clock)
    async with contextlib.AsyncExitStack() as stack:
        for srv in handle.servers:
            await stack.enter_async_context(srv)
        yield handle


class SpecRun:
    """What `run_spec` returns: await it to serve until stopped, or enter it for the handle."""

    def __init__(self, spec: SimSpec | Mapping[str, Any] | str | Path, *,
                 on_ready: Callable[[SimHandle], None] | None, stop: asyncio.Event | None,
                 ephemeral: bool) -> None:
        self._spec = spec
        self._on_ready = on_ready
        self._stop = stop
        self._ephemeral = ephemeral
        self._stack: contextlib.AsyncExitStack | None = None

    def __await__(self) -> Generator[Any, None, None]:
        return self._serve().__await__()

    async def _serve(self) -> None:
        async with self as handle:
            if self._on_ready is None:
                for line in handle.describe():
                    print(line, flush=True)
            else:
                self._on_ready(handle)
            await (self._stop or asyncio.Event()).wait()

    async def __aenter__(self) -> SimHandle:
        if self._stack is not None:
            raise RuntimeError("this run_spec() is already running")
        stack = contextlib.AsyncExitStack()
        handle = await stack.enter_async_context(open_spec(self._spec, ephemeral=self._ephemeral))
        self._stack = stack
        return handle

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


def run_spec(
    spec: SimSpec | Mapping[str, Any] | str | Path,
    *,
    on_ready: Callable[[SimHandle], None] | None = None,
    stop: asyncio.Event | None = None,
    ephemeral: bool = False,
) -> SpecRun:
    """Serve a spec: ``await run_spec(path)`` until cancelled or `stop` is set, or
    ``async with run_spec(path) as handle:`` for as long as the block runs.

    Awaited, it calls `on_ready` once everything listens (default: prints
    `SimHandle.describe`). Raises `SpecError` for a bad spec and `OSError` when a port or a
    link path cannot be had.
    """
    return SpecRun(spec, on_ready=on_ready, stop=stop, ephemeral=ephemeral)


def street_spec(
    n_poles: int,
    *,
    env_every: int = 4,
    tcp_port: int = 0,
    link: str | None = None,
    wire_time: bool = False,
    world: Mapping[str, Any] | None = None,
) -> SimSpec:
    """The spec of a street of `n_poles` poles, as the demo serves it.

    Every pole has an LED driver on the cabinet's Modbus TCP controller (units 1..N, names
    ``lamp-1``...); the RS-485 bus carries an environmental sensor every `env_every` poles
    (``env-1``...), one water-level sensor (``water-1``) and one energy meter (``meter-1``)
    that meters every lamp.
    """
    if not 1 <= n_poles <= 247:
        raise ValueError(f"a street has 1..247 poles (one Modbus unit each), not {n_poles}")
    if env_every < 1:
        raise ValueError(f"env_every must be >= 1, not {env_every}")
    lamps = [{"unit": i, "profile": "led-driver", "name": f"lamp-{i}"}
             for i in range(1, n_poles + 1)]
    n_env = (n_poles + env_every - 1) // env_every
    rtu_devices: list[dict[str, Any]] = [
        {"unit": i, "profile": "env-sensor", "name": f"env-{i}"} for i in range(1, n_env + 1)]
    rtu_devices.append({"unit": n_env + 1, "profile": "water-level", "name": "water-1"})
    rtu_devices.append({"unit": n_env + 2, "profile": "energy-meter", "name": "meter-1",
                        "feeds": [lamp["name"] for lamp in lamps]})
    raw: dict[str, Any] = {
        "servers": [
            {"type": "rtu", "link": link, "wire_time": wire_time, "devices": rtu_devices},
            {"type": "tcp", "port": tcp_port, "devices": lamps},
        ],
    }
    if world is not None:
        raw["world"] = dict(world)
    return as_spec(raw)


__all__ = ["SimHandle", "SpecError", "SpecRun", "build", "open_spec", "run_spec", "street_spec"]
