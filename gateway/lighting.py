"""The agent's lighting loop: the pure resolver (policies/lighting) driven by the real clock,
the latest sensor values and the overrides, and its decisions driven onto the outputs.

Every second the controller resolves every group's level; a change (or every `reassert`
seconds, to correct a driver that lost its setting) is written to the group's outputs: Modbus
dimmer points through the bus that owns them, GPIO relays and PWM pins directly. On start the
outputs go to the resolved level at once. It reads lamp power back to spot a lamp that draws
nothing while on (`lamp_failure`) or draws while off (`lamp_unexpected_on`), once per incident,
keeps per-group burning hours and energy across restarts, and reports levels as telemetry of
the built-in device `lighting`.

Rules in force come from the config's `lighting:` section, or from a `set_rules` command: those
are kept in the store (key ``lighting.rules``, committed in one transaction) and take precedence
after a restart.

Nothing here waits on the disk: state to keep (overrides, counters, remote rules) goes to a
:class:`~gateway.store.KeyValue` that commits in the background (the outbox), and the saved
state is merged in by :meth:`LightingController.restore` whenever the store delivers it: the
lamps are driven from the first second, store or no store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.errors import DriverError, NotFound
from drivers.gpio import LevelOutput
from drivers.sample import Quality, Sample
from gateway.clock import ClockTrust
from gateway.commands.target import RulesRejected
from gateway.events import EventType
from gateway.latest import LatestValues
from gateway.store import KeyValue
from policies.common import rules_version
from policies.lighting import (
    Counters,
    LightingConfigError,
    LightingRules,
    Override,
    OverrideSource,
    Resolution,
    ResolverState,
    SensorValue,
    accumulate,
    parse_lighting,
    resolve,
    validate,
)
from policies.lighting.schedule import next_step

log = logging.getLogger("edgegw.lighting")

LIGHTING_DEVICE = "lighting"
_COUNTERS_KEY = "lighting.counters"
_OVERRIDES_KEY = "lighting.overrides"
_MAX_COUNT_STEP = 600.0        # seconds one step may add to burning hours and energy
SILENT_RETRY = 30.0            # seconds between writes to a driver that stopped answering
RULES_KEY = "lighting.rules"


def cross_check_rules(rules: LightingRules, points: Mapping[tuple[str, str], bool],
                      gpio_outputs: list[str]) -> list[tuple[str, str]]:
    """Rules against the gateway: outputs are writable points or gpio outputs that exist,
    sensor rules read points that exist. Paths are relative to the config's root."""
    problems: list[tuple[str, str]] = []
    for i, g in enumerate(rules.groups):
        for j, out in enumerate(g.outputs):
            where = f"lighting.groups[{i}].outputs[{j}]"
            key = (out.device or "", out.point or "")
            if out.gpio is not None:
                if str(out.gpio) not in gpio_outputs:
                    known = ", ".join(gpio_outputs) or "none configured"
                    problems.append((where, f"no gpio output named {out.gpio!r} "
                                            f"(gpio.outputs: {known})"))
            elif key not in points:
                problems.append((where, f"no point {out.device}.{out.point} in devices"))
            elif not points[key]:
                problems.append((where, f"{out.device}.{out.point} is not writable"))
    for dev, pt in sorted(rules.sensor_points()):
        if (dev, pt) not in points:
            problems.append(("lighting", f"the rules read {dev}.{pt}, which no device or gpio "
                                         "input provides"))
    return problems


# ----------------------------------------------------------------------------- the controller
@dataclass
class _LampWatch:
    bad_since_checks: int = 0
    incident: str | None = None       # lamp_failure | lamp_unexpected_on while one is open


@dataclass
class _Applied:
    level: float | None = None
    written_at: float = 0.0
    pending: bool = False             # a relay deferred by anti-chatter, or a failed write


WritePoint = Callable[[str, str, float], Awaitable[None]]
Emit = Callable[[str, str | None, dict[str, Any]], None]


@dataclass
class LightingController:
    rules_raw: dict[str, Any] | None
    location: Any
    latest: LatestValues
    write_point: WritePoint
    emit: Emit
    offer: Callable[[list[Sample]], None]
    clock_trust: ClockTrust
    known_points: Mapping[tuple[str, str], bool]     # (device, point) -> writable
    gpio_outputs: Mapping[str, LevelOutput] = field(default_factory=dict)
    kv: KeyValue | None = None
    wall_clock: Callable[[], float] = time.time
    tick: float = 1.0
    reassert: float = 60.0
    report_every: float = 60.0
    silent_retry: float = SILENT_RETRY
    # filled in at start
    rules: LightingRules = field(init=False)
    version: str = field(init=False)
    resolution: Resolution | None = field(init=False, default=None)
    overrides: dict[str, Override] = field(init=False, default_factory=dict)
    alert_overrides: dict[str, Override] = field(init=False, default_factory=dict)
    counters: Counters = field(init=False, default_factory=Counters)
    warnings: list[str] = field(init=False, default_factory=list)
    _state: ResolverState = field(init=False, default_factory=ResolverState)
    _applied: dict[str, _Applied] = field(init=False, default_factory=dict)
    _lamps: dict[str, _LampWatch] = field(init=False, default_factory=dict)
    _last_tick: float | None = field(init=False, default=None)
    _last_report: float = field(init=False, default=0.0)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _rules_set: bool = field(init=False, default=False)   # set_rules ran in this process
    # groups a lamp test holds: the loop neither drives nor judges their outputs meanwhile
    _held: set[str] = field(init=False, default_factory=set)
    # when each Modbus output was last written to (monotonic): a silent one waits silent_retry
    _tried: dict[tuple[str, str], float] = field(init=False, default_factory=dict)
    progress: Callable[[], None] = field(init=False, default=lambda: None)

    def __post_init__(self) -> None:
        self.rules, self.version = self.check_rules(self.rules_raw)
        if self.kv is not None:
            self.restore({k: v for k in (RULES_KEY, _COUNTERS_KEY, _OVERRIDES_KEY)
                          if (v := self.kv.kv_get(k)) is not None})

    # ------------------------------------------------------------------ rules
    def check_rules(self, raw: dict[str, Any] | None) -> tuple[LightingRules, str]:
        """Parse, validate and cross-check rules against the configured outputs and points."""
        try:
            rules = parse_lighting(raw, location=self.location)
        except LightingConfigError as err:
            raise RulesRejected([(f"lighting.{p}" if p else "lighting", m)
                                 for p, m in err.problems]) from None
        problems = cross_check_rules(rules, self.known_points, list(self.gpio_outputs))
        if problems:
            raise RulesRejected(problems)
        self.warnings = [str(w) for w in validate(rules, None)]
        for w in self.warnings:
            log.warning("lighting rules: %s", w)
        return rules, rules_version(raw)

    def _saved_rules(self, blob: bytes) -> tuple[dict[str, Any], tuple[LightingRules, str]] | None:
        """Rules set remotely earlier, with their check, if they still pass."""
        try:
            data = json.loads(blob)
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            checked = self.check_rules(data)
        except ValueError as err:
            log.error("saved lighting rules unusable (%s); using the config's", err)
            return None
        return data, checked

    def set_rules(self, raw: dict[str, Any],
                  checked: tuple[LightingRules, str] | None = None) -> str:
        """Validate (unless `checked` is what check_rules returned for `raw`), store
        atomically, apply. The old rules stay on any error."""
        rules, version = checked if checked is not None else self.check_rules(raw)
        if self.kv is not None:
            self.kv.kv_set(RULES_KEY, json.dumps(raw, sort_keys=True, default=str).encode())
        self._rules_set = True
        self.rules, self.version, self.rules_raw = rules, version, raw
        self._state = ResolverState()
        self._applied.clear()
        self._wake.set()
        log.info("lighting rules %s in force", version)
        return version

    # ------------------------------------------------------------------ overrides
    def group_names(self) -> list[str]:
        return [g.name for g in self.rules.groups]

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> Override:
        if group != "*" and group not in self.group_names():
            raise NotFound(f"no lighting group {group!r} "
                           f"(groups: {', '.join(self.group_names()) or 'none'})")
        now = dt.datetime.fromtimestamp(self.wall_clock(), dt.UTC)
        expires = now + dt.timedelta(seconds=duration_s) if duration_s else None
        ov = Override(id=source, group=group, level=float(level), priority=priority,
                      expires_at=expires, source=OverrideSource.COMMAND)
        self.overrides[f"{group}/{source}"] = ov
        self._save_overrides()
        self._wake.set()
        return ov

    def set_alert_overrides(self, overrides: dict[str, Override]) -> None:
        """The overrides active alerts ask for (replacing the previous set)."""
        if overrides != self.alert_overrides:
            self.alert_overrides = dict(overrides)
            self._wake.set()

    def clear_override(self, *, group: str, source: str | None = None) -> int:
        keys = [k for k, o in self.overrides.items()
                if o.group == group and (source is None or o.id == source)]
        for k in keys:
            del self.overrides[k]
        self._save_overrides()
        self._wake.set()
        return len(keys)

    def _save_overrides(self) -> None:
        if self.kv is None:
            return
        data = [{"id": o.id, "group": o.group, "level": o.level, "priority": o.priority,
                 "expires_at": o.expires_at.timestamp() if o.expires_at else None}
                for o in self.overrides.values()]
        self.kv.kv_set(_OVERRIDES_KEY, json.dumps(data).encode())

    def restore(self, saved: Mapping[str, bytes]) -> None:
        """Merge the state the store kept (it may arrive after the loop started): remote rules
        unless set since, counters added to what was counted since, overrides unless one was
        set for the same group and source since."""
        blob = saved.get(RULES_KEY)
        if blob and not self._rules_set:
            got = self._saved_rules(blob)
            if got is not None:
                self.rules_raw, (self.rules, self.version) = got
                self._state = ResolverState()
                self._applied.clear()
                log.info("lighting rules %s in force (set remotely)", self.version)
        raw = saved.get(_COUNTERS_KEY)
        if raw:
            try:
                restored = Counters.from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError) as err:
                log.warning("saved lighting counters unusable (%s): counting from zero", err)
            else:
                self.counters = restored.plus(self.counters)
        raw = saved.get(_OVERRIDES_KEY)
        if raw:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                for o in json.loads(raw):
                    exp = o.get("expires_at")
                    ov = Override(id=o["id"], group=o["group"], level=float(o["level"]),
                                  priority=int(o["priority"]),
                                  expires_at=(dt.datetime.fromtimestamp(exp, dt.UTC)
                                              if exp else None))
                    self.overrides.setdefault(f"{ov.group}/{ov.id}", ov)
        self._wake.set()

    # ------------------------------------------------------------------ lamp test
    def hold(self, groups: list[str]) -> None:
        """Stop driving ``groups`` (a lamp test sets their outputs itself) until release."""
        self._held.update(groups)

    def release(self, groups: list[str]) -> None:
        """Drive ``groups`` again, at once, to the level resolved now."""
        for g in groups:
            self._held.discard(g)
            self._applied.pop(g, None)
        # the power read during the test says nothing about the level the loop sets now
        for grp in self.rules.groups:
            if grp.name in groups:
                for out in grp.outputs:
                    watch = self._lamps.get(out.device or "")
                    if watch is not None:
                        watch.bad_since_checks = 0
        self._wake.set()

    def held(self) -> list[str]:
        return sorted(self._held)

    # ------------------------------------------------------------------ the loop
    async def start(self) -> None:
        """Drive the outputs to the resolved level at once."""
        await self.step()

    async def __aenter__(self) -> LightingController:
        await self.start()
        self._task = asyncio.create_task(self.serve(), name="lighting")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._save_counters()

    async def serve(self) -> None:
        """A step every ``tick`` (or at once when something changed), until cancelled. A
        failing step ends it: the supervisor reports and restarts it."""
        while True:
            self.progress()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._wake.wait()
            await self.step()

    def _values(self) -> dict[tuple[str, str], SensorValue]:
        out = {}
        for dev, pt in self.rules.sensor_points():
            got = self.latest.good(dev, pt)
            if got is None or isinstance(got.value, str) or got.value is None:
                continue
            out[(dev, pt)] = SensorValue(float(got.value),
                                         dt.datetime.fromtimestamp(got.ts / 1000, dt.UTC))
        return out

    async def step(self) -> Resolution:
        wall = self.wall_clock()
        now = dt.datetime.fromtimestamp(wall, dt.UTC)
        expired = [k for k, o in self.overrides.items()
                   if o.expires_at is not None and o.expires_at <= now]
        for k in expired:
            del self.overrides[k]
        if expired:
            self._save_overrides()
        overrides = [*self.overrides.values(), *self.alert_overrides.values()]
        res = resolve(now, clock_trusted=self.clock_trust.trusted, values=self._values(),
                      rules=self.rules, overrides=overrides, state=self._state)
        self._state = res.state
        self.resolution = res
        for ev in res.events:
            self.emit(ev.kind.value, None, {"group": ev.group, "detail": ev.detail})
        await self._drive(res, wall)
        self._count(res, wall)
        self._check_lamps(res)
        return res

    async def _drive(self, res: Resolution, wall: float) -> None:
        changed: list[Sample] = []
        ts = int(wall * 1000)
        writes: list[tuple[str, Any, float]] = []          # group, output, level
        due_groups: dict[str, float] = {}
        for g in self.rules.groups:
            decision = res.groups.get(g.name)
            if decision is None or g.name in self._held:
                continue
            applied = self._applied.setdefault(g.name, _Applied())
            due = (applied.level != decision.level or applied.pending
                   or wall - applied.written_at >= self.reassert)
            if not due:
                continue
            if applied.level != decision.level:
                log.info("group %s -> %g %% (%s)", g.name, decision.level, decision.reason)
                changed.append(Sample(LIGHTING_DEVICE, f"{g.name}.level", ts, decision.level))
            due_groups[g.name] = decision.level
            writes += [(g.name, out, decision.level) for out in g.outputs]
        # all at once (each bus takes its writes in order; buses work side by side). A device
        # that stopped answering is tried once every silent_retry s only, after the others:
        # each try holds its bus for the timeout, which at every tick would hold up the lamps
        # after it. Its group stays pending meanwhile; it gets its level at the first try, or
        # the first tick, after it answers again.
        mono = time.monotonic()

        def wait(out: Any) -> bool:        # silent, and tried less than silent_retry ago
            if not self._silent(out):
                return False
            last = self._tried.get((out.device, out.point))
            return last is not None and mono - last < self.silent_retry

        skipped = {group for group, out, _ in writes if wait(out)}
        writes = [w for w in writes if not wait(w[1])]
        writes.sort(key=lambda w: self._silent(w[1]))
        for _, out, _ in writes:
            if out.gpio is None:
                self._tried[(out.device, out.point)] = mono
        oks = await asyncio.gather(*(self._write(out, level, wall) for _, out, level in writes))
        failed = skipped | {group for (group, _, _), ok in zip(writes, oks, strict=True)
                            if not ok}
        for name, level in due_groups.items():
            applied = self._applied[name]
            applied.level, applied.written_at, applied.pending = level, wall, name in failed
        if changed:
            self.offer(changed)

    def _silent(self, out: Any) -> bool:
        """Whether the output's device stopped answering (its last reading timed out)."""
        if out.gpio is not None:
            return False
        got = self.latest.get(out.device, out.point)
        return got is not None and got.quality is Quality.TIMEOUT

    async def _write(self, out: Any, level: float, wall: float) -> bool:
        if out.gpio is not None:
            gpio = self.gpio_outputs[str(out.gpio)]
            return gpio.set_level(level, now=time.monotonic())
        try:
            await self.write_point(out.device, out.point, round(level))
        except (DriverError, KeyError, ValueError, OSError) as err:
            log.warning("lighting: write %s.%s = %g failed: %s", out.device, out.point,
                        level, err)
            return False
        return True

    def _count(self, res: Resolution, wall: float) -> None:
        if self._last_tick is not None:
            # the wall clock's own time (the demo's street clock runs 60x); a jump of the
            # clock itself (set by NTP or sync_time) counts at most _MAX_COUNT_STEP
            dt_s = min(max(0.0, wall - self._last_tick), _MAX_COUNT_STEP)
            levels = {name: d.level for name, d in res.groups.items()}
            self.counters = accumulate(self.counters, levels=levels,
                                       rated_w=self.rules.rated_watts(), dt_s=dt_s)
        self._last_tick = wall
        if wall - self._last_report >= self.report_every:
            self._last_report = wall
            ts = int(wall * 1000)
            samples = []
            for name, c in self.counters.groups.items():
                samples += [Sample(LIGHTING_DEVICE, f"{name}.burning_h",
                                   ts, round(c.burning_hours, 4)),
                            Sample(LIGHTING_DEVICE, f"{name}.energy_kwh",
                                   ts, round(c.energy_kwh, 4))]
            for name, d in res.groups.items():
                samples.append(Sample(LIGHTING_DEVICE, f"{name}.level", ts, d.level))
            if samples:
                self.offer(samples)
            self._save_counters()

    def _save_counters(self) -> None:
        if self.kv is not None:
            self.kv.kv_set(_COUNTERS_KEY, json.dumps(self.counters.to_json()).encode())

    # ------------------------------------------------------------------ lamp health
    def _check_lamps(self, res: Resolution, checks: int = 3) -> None:
        """Compare each Modbus output's lamp power with what its level should draw."""
        for g in self.rules.groups:
            decision = res.groups.get(g.name)
            applied = self._applied.get(g.name)
            if decision is None or applied is None or g.name in self._held:
                continue
            for out in g.outputs:
                if out.device is None:
                    continue
                power = self.latest.good(out.device, "lamp_power")
                if power is None or not isinstance(power.value, (int, float)):
                    continue
                # only readings taken after the level was written say anything
                if power.ts / 1000 < applied.written_at + 0.5:
                    continue
                watch = self._lamps.setdefault(out.device, _LampWatch())
                rated = out.watts or 0.0
                on = decision.level > 0
                floor = max(1.0, 0.05 * rated * decision.level / 100) if on else 0.0
                kind: EventType | None
                if on and float(power.value) < floor:
                    kind = EventType.LAMP_FAILURE
                elif not on and float(power.value) > max(2.0, 0.05 * rated):
                    kind = EventType.LAMP_UNEXPECTED_ON
                else:
                    kind = None
                if kind is None:
                    if watch.incident is not None:
                        self.emit(EventType.LAMP_RECOVERED, out.device,
                                  {"group": g.name, "was": watch.incident,
                                   "power_w": power.value, "level": decision.level})
                    watch.incident, watch.bad_since_checks = None, 0
                    continue
                if watch.incident == kind:
                    continue
                watch.bad_since_checks += 1
                if watch.bad_since_checks >= checks:
                    watch.incident = kind
                    self.emit(kind, out.device, {"group": g.name, "level": decision.level,
                                                 "power_w": power.value, "rated_w": rated})

    # ------------------------------------------------------------------ reporting
    def next_change(self, group: Any, now: dt.datetime) -> dict[str, Any] | None:
        """The program's next scheduled change for `group` (sensors and overrides aside)."""
        loc = self.rules.location
        if loc is None:
            return None
        try:
            step = next_step(self.rules.program_of(group), self.rules.holidays, loc, now)
        except (AssertionError, ValueError):      # a polar night, a program without anchor
            return None
        if step is None:
            return None
        return {"at": step.at.astimezone(loc.tz).isoformat(timespec="seconds"),
                "level": step.level, "reason": step.reason}

    def snapshot(self) -> dict[str, Any]:
        res = self.resolution
        now = dt.datetime.fromtimestamp(self.wall_clock(), dt.UTC)
        groups = {}
        for g in self.rules.groups:
            d = res.groups.get(g.name) if res else None
            c = self.counters.groups.get(g.name)
            groups[g.name] = {
                "level": d.level if d else None,
                "reason": d.reason if d else None,
                "source": d.source.value if d else None,
                "next": self.next_change(g, now),
                "burning_h": round(c.burning_hours, 3) if c else 0.0,
                "energy_kwh": round(c.energy_kwh, 3) if c else 0.0,
            }
            if g.name in self._held:
                groups[g.name]["held"] = "lamp test"
        return {
            "rules_version": self.version,
            "groups": groups,
            "overrides": [{"group": o.group, "id": o.id, "level": o.level,
                           "priority": o.priority,
                           "expires_at": o.expires_at.isoformat() if o.expires_at else None}
                          for o in self.overrides.values()],
            "clock": self.clock_trust.snapshot(),
            "lamp_incidents": {d: w.incident for d, w in self._lamps.items() if w.incident},
        }

