"""The lighting outputs read back, and the lamp test (off, 50 %, 100 %, power read back)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.errors import DriverError
from drivers.modbus.bus import DeviceSettings, ModbusBus
from drivers.modbus.registers import DataType, PointSpec, Value
from gateway.config import (
    Config,
    DeviceCfg,
    SerialBus,
)
from gateway.wiring import modbus_settings
from provisioning.check.model import (
    CheckOptions,
    CheckResult,
    LiveSite,
    Status,
    _fmt_value,
    _Timer,
)
from provisioning.ports import Holder


# -------------------------------------------------------------------- outputs, lamp test
class _Access(Protocol):
    """How the outputs are reached: buses of the check's own, or the running agent's."""

    def spec(self, device: str, point: str) -> PointSpec | None: ...

    async def read(self, device: str, point: str) -> Value | None: ...

    async def write(self, device: str, point: str, value: Value) -> None: ...


class _LiveOutputs:
    """The lamps through the running agent's command path (its buses, queued with its polls
    and the lighting's writes)."""

    def __init__(self, live: LiveSite) -> None:
        self.live = live

    def spec(self, device: str, point: str) -> PointSpec | None:
        return self.live.point_spec(device, point)

    async def read(self, device: str, point: str) -> Value | None:
        return await self.live.read_point(device, point)

    async def write(self, device: str, point: str, value: Value) -> None:
        await self.live.write_point(device, point, value)


class _Outputs:
    """Buses opened without polling, for reading and writing the lighting outputs."""

    def __init__(self, cfg: Config, devices: set[str], timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._bus_of: dict[str, ModbusBus] = {}
        self._buses: list[ModbusBus] = []
        by_bus: dict[str, list[DeviceCfg]] = {}
        for d in cfg.devices:
            if d.name in devices and d.enabled:
                by_bus.setdefault(d.bus, []).append(d)
        for name, devs in by_bus.items():
            bus = cfg.bus(name)
            if isinstance(bus, SerialBus):
                continue
            settings = dataclasses.replace(modbus_settings(bus),
                                           timeout=min(bus.timeout, timeout))
            mb = ModbusBus(settings, [DeviceSettings(name=d.name, unit=d.unit, poll=d.poll,
                                                     points=d.specs(), max_gap=d.max_gap)
                                      for d in devs],
                           on_samples=lambda s: None, poll=False)
            self._buses.append(mb)
            for d in devs:
                self._bus_of[d.name] = mb
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _Outputs:
        for b in self._buses:
            await self._stack.enter_async_context(b)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def spec(self, device: str, point: str) -> PointSpec | None:
        mb = self._bus_of.get(device)
        if mb is None:
            return None
        try:
            return mb.point(device, point)
        except KeyError:
            return None

    async def read(self, device: str, point: str) -> Value | None:
        return (await self._bus_of[device].read_point(device, point)).value

    async def write(self, device: str, point: str, value: Value) -> None:
        await self._bus_of[device].write_point(device, point, value)


def _level_value(spec: PointSpec, level: float) -> Value:
    """What to write for a level in percent: what the agent writes (round(level))."""
    if spec.type is DataType.BOOL:
        return level > 0
    return round(level)


async def _check_outputs(cfg: Config, rules: Any, outputs: _Access) -> list[CheckResult]:
    out = []
    for g in rules.groups:
        t = _Timer()
        levels: dict[str, Any] = {}
        problems: list[str] = []
        gpio = [str(o.gpio) for o in g.outputs if o.gpio is not None]
        for o in g.outputs:
            if o.gpio is not None:
                continue
            if outputs.spec(o.device, o.point) is None:
                problems.append(f"{o.key}: not a point of an enabled Modbus device")
                continue
            try:
                levels[o.key] = await outputs.read(o.device, o.point)
            except DriverError as err:
                problems.append(f"{o.key}: {err}")
        key, title = f"outputs:{g.name}", f"outputs {g.name}"
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in levels.items())
        if gpio:
            shown += ("; " if shown else "") + f"GPIO {', '.join(gpio)} not read back"
        if problems:
            out.append(t.result(key, title, Status.FAIL,
                                f"{len(problems)} output(s) do not respond: "
                                + "; ".join(problems), hint="see the device lines above: the "
                                "driver must answer before the lamp can be dimmed",
                                data={"levels": levels}))
        elif not levels:
            out.append(t.result(key, title, Status.SKIP, shown or "no Modbus outputs"))
        else:
            out.append(t.result(key, title, Status.PASS, f"levels: {shown}",
                                data={"levels": levels}))
    return out


@dataclass(frozen=True, slots=True)
class _Step:
    level: float
    power: dict[str, float | None]        # output key -> W (None: no lamp_power point)


async def _lamp_test_group(g: Any, outputs: _Access, options: CheckOptions) -> CheckResult:
    t = _Timer()
    key, title = f"lamp-test:{g.name}", f"lamp test {g.name}"
    outs = [o for o in g.outputs if o.gpio is None and outputs.spec(o.device, o.point)]
    if not outs:
        return t.result(key, title, Status.SKIP, "no Modbus outputs to cycle (GPIO outputs: "
                        "switch them from the agent with set_override and watch the lamps)")
    previous: dict[str, Value] = {}
    steps: list[_Step] = []
    try:
        for o in outs:
            v = await outputs.read(o.device, o.point)
            if v is None:
                raise DriverError(f"{o.key}: no level read back")
            previous[o.key] = v
        for level in options.lamp_levels:
            for o in outs:
                spec = outputs.spec(o.device, o.point)
                assert spec is not None
                await outputs.write(o.device, o.point, _level_value(spec, level))
            await asyncio.sleep(options.settle)
            power: dict[str, float | None] = {}
            for o in outs:
                if outputs.spec(o.device, "lamp_power") is None:
                    power[o.key] = None
                    continue
                v = await outputs.read(o.device, "lamp_power")
                power[o.key] = float(v) if isinstance(v, (int, float)) else None
            steps.append(_Step(level, power))
    except DriverError as err:
        failure: str | None = str(err)
    else:
        failure = None
    finally:
        restore_problems = await _restore(outputs, outs, previous)
    data = {"steps": [{"level": s.level, "power_w": s.power,
                       "total_w": _total(s.power)} for s in steps],
            "restored": {k: v for k, v in previous.items()}}
    shown = "; ".join(f"{s.level:g} % {_fmt_w(_total(s.power))}" for s in steps)
    if failure is not None:
        return t.result(key, title, Status.FAIL, f"stopped: {failure}" + (
            f" (after {shown})" if shown else ""),
            hint="the driver must answer reads and writes: see the device lines above",
            data=data)
    if restore_problems:
        return t.result(key, title, Status.FAIL, f"{shown}; could not restore: "
                        + "; ".join(restore_problems),
                        hint="the agent sets the level again when it starts; check the driver",
                        data=data)
    verdict, problems, hint = _judge(g, outs, steps)
    restored = ", ".join(f"{k}={_fmt_value(v)}" for k, v in previous.items())
    return t.result(key, title, verdict,
                    f"{shown}" + (f"; {'; '.join(problems)}" if problems else "")
                    + f"; restored {restored}",
                    hint=hint, data=data)


async def _lamp_tests(rules: Any, outputs: _Access, options: CheckOptions,
                      agents: tuple[Holder, ...], live: LiveSite | None = None
                      ) -> list[CheckResult]:
    out = []
    for g in rules.groups:
        if options.on_phase is not None:
            options.on_phase(f"lamp test {g.name}: off, 50 %, 100 %")
        if live is not None:
            # inside the agent: the lighting leaves the group to the test, then takes it back
            async with live.hold_lamps([g.name]):
                result = await _lamp_test_group(g, outputs, options)
            out.append(result)
            if options.on_result is not None:
                options.on_result(result)
            continue
        if agents:
            t = _Timer()
            out.append(t.result(
                f"lamp-test:{g.name}", f"lamp test {g.name}", Status.FAIL,
                "not run: the agent is running and would set the levels back",
                hint="run it from the technician's page (it runs inside the agent), or: sudo "
                     "systemctl stop edgegw, run the lamp test, sudo systemctl start edgegw"))
        else:
            out.append(await _lamp_test_group(g, outputs, options))
        if options.on_result is not None:
            options.on_result(out[-1])
    return out


async def _restore(outputs: _Access, outs: Sequence[Any],
                   previous: Mapping[str, Value]) -> list[str]:
    """Put every output back to its level from before the test (shielded: a Ctrl-C during
    the test must still leave the lamps as they were)."""

    async def restore_all() -> list[str]:
        problems = []
        for o in outs:
            if o.key not in previous:
                continue
            try:
                await outputs.write(o.device, o.point, previous[o.key])
            except DriverError as err:
                problems.append(f"{o.key}: {err}")
        return problems

    return await asyncio.shield(restore_all())


def _total(power: Mapping[str, float | None]) -> float | None:
    known = [p for p in power.values() if p is not None]
    return sum(known) if known else None


def _fmt_w(w: float | None) -> str:
    return "(no power read-back)" if w is None else f"{w:.1f} W"


def _judge(g: Any, outs: Sequence[Any], steps: Sequence[_Step]
           ) -> tuple[Status, list[str], str | None]:
    """Does each lamp's power follow the level? (status, problems, hint)."""
    by_level = {s.level: s for s in steps}
    problems: list[str] = []
    hints: list[str] = []
    warn = False
    no_readback = []
    for o in outs:
        p = {lvl: s.power.get(o.key) for lvl, s in by_level.items()}
        if any(v is None for v in p.values()):
            no_readback.append(o.key)
            continue
        top = max(by_level)
        p_top = float(p[top] or 0.0)
        rated = float(o.watts or 0.0)
        lit_floor = max(1.0, 0.05 * rated)
        if p_top < lit_floor:
            problems.append(f"{o.device} draws {p_top:.1f} W at {top:g} %: the lamp does not "
                            "light")
            hints.append("check the lamp, its wiring to the driver, the driver's fault bits "
                         "(open circuit?) and its mains supply")
            continue
        if 0.0 in p and float(p[0.0] or 0.0) > max(2.0, 0.05 * max(p_top, rated)):
            problems.append(f"{o.device} draws {float(p[0.0] or 0):.1f} W when off")
            hints.append("the driver ignores the off command: check the point address and "
                         "that the driver is in Modbus (not DALI/1-10 V) control mode")
        for lvl, v in p.items():
            if 0 < lvl < top:
                ratio = float(v or 0.0) / p_top
                expected = lvl / top
                if not (expected * 0.4 <= ratio <= min(0.95, expected * 1.7)):
                    problems.append(f"{o.device} at {lvl:g} % draws {ratio:.0%} of full power")
                    hints.append("the power does not follow the level: the driver is not "
                                 "dimming (control wiring, control mode, dimming curve)")
        if rated > 0 and not 0.5 * rated <= p_top <= 1.3 * rated:
            warn = True
            problems.append(f"{o.device} draws {p_top:.0f} W at full, rated {rated:g} W")
            hints.append("check the output's `watts` in the lighting rules against the lamp")
    if no_readback:
        warn = True
        problems.append(f"no power read-back on {', '.join(no_readback)} (no lamp_power "
                        "point): watch those lamps go off, half, full")
    hard = [p for p in problems if "rated" not in p and "no power read-back" not in p]
    if hard:
        return Status.FAIL, problems, "; ".join(dict.fromkeys(hints))
    if warn:
        return Status.WARN, problems, "; ".join(dict.fromkeys(hints)) or None
    return Status.PASS, problems, None


async def _outputs_and_lamps(cfg: Config, rules: Any, options: CheckOptions,
                             agents: tuple[Holder, ...], *, check: bool,
                             live: LiveSite | None = None) -> list[CheckResult]:
    """The groups' outputs read back (with ``check``), and the lamp test when asked for
    (through the running agent when ``live``)."""
    devices = {o.device for g in rules.groups for o in g.outputs if o.device}
    out: list[CheckResult] = []

    async def run(access: _Access) -> None:
        if check:
            rows = await _check_outputs(cfg, rules, access)
            for r in rows:
                if options.on_result is not None:
                    options.on_result(r)
            out.extend(rows)
        if options.lamp_test:
            out.extend(await _lamp_tests(rules, access, options,
                                         () if live is not None else agents, live))

    if live is not None:
        await run(_LiveOutputs(live))
        return out
    try:
        async with _Outputs(cfg, devices, options.timeout) as outputs:
            await run(outputs)
    except (termios.error, ValueError) as err:
        t = _Timer()
        out.append(t.result("outputs", "outputs", Status.FAIL,
                            f"cannot open the lamps' bus: {err}",
                            hint="see the device lines above"))
    return out


LAMPS_GROUP = "lamps"


def _lamps_from_profiles(cfg: Config) -> Any:
    """One group of every LED driver (a device with a writable ``dim_level``), for a lamp test
    before any lighting rules exist; None when there is none."""
    from policies.lighting import parse_lighting

    outputs = [{"device": d.name, "point": "dim_level"} for d in cfg.devices
               if d.enabled and any(p.name == "dim_level" and p.writable for p in d.points)]
    if not outputs:
        return None
    return parse_lighting({
        "programs": {"test": {"steps": [{"at": "00:00", "level": 0}]}},
        "groups": [{"name": LAMPS_GROUP, "program": "test", "outputs": outputs}]},
        location=cfg.gateway.location)
