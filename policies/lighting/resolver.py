"""The lighting decision: (time, clock trust, sensor values, rules, overrides, state) -> levels.

:func:`resolve` is pure: no I/O, no clock of its own. The agent calls it every second or so with
the wall clock and the latest values; ``preview`` and the tests call the very same function with
simulated time. Timers (illuminance hold, motion boost, failsafe entry delay, minimum burning
time) live in the :class:`ResolverState` it is given and returns.

Precedence, per group, highest first:

1. **Override** (command or cabinet switch): the active one with the highest priority wins
   (ties: the later one in the sequence); expired ones are ignored.
2. **Clock untrusted**: time-based steps are not used. For `failsafe.entry_delay_s` the group
   holds the level it had with a trusted clock; then it follows its illuminance sensor (dark:
   `failsafe_level`, bright: off) or, with no fresh reading, goes to `failsafe_level`. It leaves
   as soon as trust returns. A gateway that starts untrusted (no trusted level to hold) goes to
   failsafe at once: better lit for a minute at noon than dark at midnight.
3. **Program with sensor rules**: the program's step; the illuminance rule lights a group the
   program has off; threshold rules raise (or cap); motion raises a lit group; a group switched
   on stays on for `min_burn_minutes`.
4. **Limits**, last, on everything: `max_level` always, `min_level` while on.

Timers measure the wall clock they are given; if it jumps backwards past a stored instant, that
timer restarts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from policies.lighting.astro import solar_night
from policies.lighting.model import (
    AstroEvent,
    Group,
    IlluminanceRule,
    LightingRules,
    Location,
    MotionRule,
    ThresholdAction,
    ThresholdRule,
)
from policies.lighting.schedule import night_of, step_at


class Source(StrEnum):
    """What decided a group's level."""

    OVERRIDE = "override"
    FAILSAFE = "failsafe"
    HOLD = "hold"              # clock untrusted, within the failsafe entry delay
    PROGRAM = "program"
    SENSOR = "sensor"          # illuminance rule
    THRESHOLD = "threshold"
    MOTION = "motion"
    MIN_BURN = "min_burn"


class LimitKind(StrEnum):
    MIN = "min"
    MAX = "max"


class OverrideSource(StrEnum):
    COMMAND = "command"   # set_override from the platform or the CLI
    SWITCH = "switch"     # the cabinet's manual switch
    ALERT = "alert"       # an active alert's lighting action (policies.alerts)


class EventKind(StrEnum):
    """Transitions worth an event on the uplink."""

    FAILSAFE_ENTERED = "failsafe_entered"
    FAILSAFE_LEFT = "failsafe_left"
    OVERRIDE_STARTED = "override_started"
    OVERRIDE_ENDED = "override_ended"
    DARKNESS_DETECTED = "darkness_detected"   # the illuminance rule lights a group the
    DARKNESS_CLEARED = "darkness_cleared"     # program has off (storm), and stops doing so


@dataclass(frozen=True)
class SensorValue:
    """A reading and when it was taken (aware datetime)."""

    value: float
    ts: dt.datetime


@dataclass(frozen=True, kw_only=True)
class Override:
    """A forced level for a group (``"*"``: every group), until `expires_at` (None: until
    cleared)."""

    id: str
    group: str
    level: float
    priority: int = 0
    expires_at: dt.datetime | None = None
    source: OverrideSource = OverrideSource.COMMAND

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 100:
            raise ValueError(f"override {self.id}: level {self.level} is outside 0..100")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError(f"override {self.id}: expires_at must be timezone-aware")

    def active(self, now: dt.datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, kw_only=True)
class TriggerState:
    """A hysteresis switch with hold times (illuminance and threshold rules)."""

    active: bool = False
    seen: bool = False                        # a reading was judged since the gateway started
    pending_since: dt.datetime | None = None  # the condition to switch has held since then


@dataclass(frozen=True, kw_only=True)
class MotionState:
    started_at: dt.datetime | None = None   # the current boost began (ramp up from here)
    until: dt.datetime | None = None        # the boost holds until then (ramp down after)


@dataclass(frozen=True, kw_only=True)
class GroupState:
    level: float | None = None             # the level last decided
    on_since: dt.datetime | None = None    # lit since (for the minimum burning time)
    trusted_level: float | None = None     # the last level decided with a trusted clock
    failsafe: bool = False
    sensor_lit: bool = False               # the illuminance rule is lighting the group
    override_id: str | None = None
    lux: TriggerState = TriggerState()
    thresholds: tuple[TriggerState, ...] = ()
    motion: MotionState = MotionState()


@dataclass(frozen=True, kw_only=True)
class ResolverState:
    """Everything the resolver remembers between calls. Start with ``ResolverState()``."""

    clock_untrusted_since: dt.datetime | None = None
    groups: Mapping[str, GroupState] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GroupDecision:
    """A group's level (0..100), why, and what decided it; `limit` when a limit changed it."""

    level: float
    reason: str
    source: Source
    limit: LimitKind | None = None


@dataclass(frozen=True, kw_only=True)
class LightingEvent:
    kind: EventKind
    group: str
    at: dt.datetime
    detail: str


@dataclass(frozen=True, kw_only=True)
class Resolution:
    at: dt.datetime   # `now`, in UTC
    groups: Mapping[str, GroupDecision]
    state: ResolverState
    events: tuple[LightingEvent, ...] = ()


# ------------------------------------------------------------------------------- formatting
def _hhmm(at: dt.datetime, location: Location) -> str:
    return at.astimezone(location.tz).strftime("%H:%M")


def _dur(seconds: float) -> str:
    if seconds < 120 and seconds % 60:
        return f"{seconds:g} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.3g}"


# ----------------------------------------------------------------------------------- sensors
def _fresh(values: Mapping[tuple[str, str], SensorValue], key: tuple[str, str],
           now: dt.datetime, max_age_s: float) -> float | None:
    sv = values.get(key)
    if sv is None:
        return None
    age = (now - sv.ts.astimezone(dt.UTC)).total_seconds()
    if abs(age) > max_age_s:
        return None
    value = float(sv.value)
    return None if math.isnan(value) else value


def _trigger(st: TriggerState, *, now: dt.datetime, on: bool, off: bool, hold_on: float,
             hold_off: float, first_at_once: bool = False) -> TriggerState:
    """One step of a hold-and-hysteresis switch: a change needs its condition to hold for the
    hold time. With `first_at_once`, the first reading since start-up decides at once."""
    if not st.seen and first_at_once:
        return TriggerState(active=on, seen=True)
    want = off if st.active else on
    if not want:
        return TriggerState(active=st.active, seen=True)
    since = st.pending_since
    if since is None or since > now:
        since = now
    if (now - since).total_seconds() >= (hold_off if st.active else hold_on):
        return TriggerState(active=not st.active, seen=True)
    return TriggerState(active=st.active, seen=True, pending_since=since)


def _lux_window_open(now: dt.datetime, location: Location, window_min: int | None) -> bool:
    if window_min is None:
        return True
    window = dt.timedelta(minutes=window_min)
    night = night_of(now, location.tz)
    for n in (night - dt.timedelta(days=1), night, night + dt.timedelta(days=1)):
        sun = solar_night(location, n)
        for ev in (AstroEvent.SUNSET, AstroEvent.SUNRISE):
            e = sun[ev]
            if not e.occurs:
                return True   # no sunset or sunrise to centre a window on: always counts
            if abs(now - e.at) <= window:
                return True
    return False


def _lux(rule: IlluminanceRule, st: TriggerState, *, now: dt.datetime, value: float | None,
         window_open: bool, trusted: bool) -> TriggerState:
    if value is None or not window_open:
        return TriggerState(seen=st.seen)
    # with an untrusted clock there is no program to fall back on: a gateway starting in the
    # dark must not wait out the hold before it lights the street
    return _trigger(st, now=now, on=value < rule.on_below, off=value > rule.off_threshold,
                    hold_on=rule.hold_s, hold_off=rule.off_hold, first_at_once=not trusted)


def _threshold(rule: ThresholdRule, st: TriggerState, *, now: dt.datetime,
               value: float | None) -> TriggerState:
    if value is None:
        return TriggerState(seen=st.seen)
    if rule.above is not None:
        on, off = value > rule.above, value < rule.above - rule.hysteresis
    else:
        assert rule.below is not None
        on, off = value < rule.below, value > rule.below + rule.hysteresis
    return _trigger(st, now=now, on=on, off=off, hold_on=rule.hold_s, hold_off=rule.hold_s)


def _motion(rule: MotionRule, st: MotionState, *, now: dt.datetime,
            values: Mapping[tuple[str, str], SensorValue]) -> MotionState:
    hold = dt.timedelta(seconds=rule.hold_s)
    ramp = dt.timedelta(seconds=rule.ramp_s)
    if st.until is not None and st.until - now > hold + ramp:
        st = MotionState()   # the clock went backwards
    if st.until is not None and now >= st.until + ramp:
        st = MotionState()   # the boost is over
    for ref in rule.points:
        sv = values.get(ref.key)
        if sv is None or not sv.value:
            continue
        ts = sv.ts.astimezone(dt.UTC)
        if ts + hold <= now or ts - now > hold:
            continue
        seen = min(ts, now)
        if st.until is None:
            st = MotionState(started_at=seen, until=seen + hold)
        elif seen + hold > st.until:
            st = replace(st, until=seen + hold)
    return st


def _boost_fraction(st: MotionState, rule: MotionRule, now: dt.datetime) -> float:
    if st.started_at is None or st.until is None:
        return 0.0
    if rule.ramp_s <= 0:
        return 1.0 if now < st.until else 0.0
    up = min(1.0, max(0.0, (now - st.started_at).total_seconds() / rule.ramp_s))
    if now < st.until:
        return up
    return max(0.0, min(up, 1.0 - (now - st.until).total_seconds() / rule.ramp_s))


# ------------------------------------------------------------------------------------ groups
@dataclass(frozen=True, kw_only=True)
class _Ctx:
    now: dt.datetime
    trusted: bool
    untrusted_since: dt.datetime | None
    entry_delay_s: float
    location: Location
    values: Mapping[tuple[str, str], SensorValue]
    rules: LightingRules


def _pick_override(group: Group, overrides: Sequence[Override], ctx: _Ctx) -> Override | None:
    candidates = [o for o in overrides
                  if o.group in (group.name, "*") and o.active(ctx.now)]
    for sw in group.switches:
        v = _fresh(ctx.values, sw.ref.key, ctx.now, sw.max_age_s)
        if v is not None and (v == 0) == sw.invert:
            candidates.append(Override(id=sw.ref.label, group=group.name, level=sw.level,
                                       priority=sw.priority, source=OverrideSource.SWITCH))
    best: Override | None = None
    for o in candidates:
        if best is None or o.priority >= best.priority:
            best = o
    return best


def _override_reason(o: Override, location: Location) -> str:
    if o.source is OverrideSource.SWITCH:
        return f"switch {o.id}"
    if o.expires_at is None:
        return f"override {o.id}"
    return f"override {o.id} until {_hhmm(o.expires_at, location)}"


def _limit(level: float, group: Group) -> tuple[float, LimitKind | None]:
    if level <= 0:
        return 0.0, None
    if level > group.limits.max_level:
        return group.limits.max_level, LimitKind.MAX
    if level < group.limits.min_level:
        return group.limits.min_level, LimitKind.MIN
    return level, None


def _resolve_group(group: Group, gs: GroupState, overrides: Sequence[Override],
                   ctx: _Ctx) -> tuple[GroupDecision, GroupState, list[LightingEvent]]:
    now, loc = ctx.now, ctx.location
    events: list[LightingEvent] = []

    def event(kind: EventKind, detail: str) -> None:
        events.append(LightingEvent(kind=kind, group=group.name, at=now, detail=detail))

    # --- sensors: timers run whatever decides the level
    lux_rule = group.illuminance
    lux_value: float | None = None
    lux_state = gs.lux
    if lux_rule is not None:
        lux_value = _fresh(ctx.values, (lux_rule.device, lux_rule.point), now,
                           lux_rule.max_age_s)
        window = not ctx.trusted or _lux_window_open(now, loc, lux_rule.window_min)
        lux_state = _lux(lux_rule, gs.lux, now=now, value=lux_value, window_open=window,
                         trusted=ctx.trusted)
    old_thr = gs.thresholds if len(gs.thresholds) == len(group.thresholds) else tuple(
        TriggerState() for _ in group.thresholds)
    thr_values = [_fresh(ctx.values, (r.device, r.point), now, r.max_age_s)
                  for r in group.thresholds]
    thr_states = tuple(_threshold(r, st, now=now, value=v)
                       for r, st, v in zip(group.thresholds, old_thr, thr_values, strict=True))
    motion_state = gs.motion
    if group.motion is not None:
        motion_state = _motion(group.motion, gs.motion, now=now, values=ctx.values)

    # --- the automatic level: program (or clock-untrusted handling) with sensor rules
    failsafe = sensor_lit = False
    if ctx.trusted:
        step = step_at(ctx.rules.program_of(group), ctx.rules.holidays, loc, now)
        level, reason, source = step.level, step.reason, Source.PROGRAM
        if level <= 0 and lux_rule is not None and lux_state.active:
            level, source, sensor_lit = lux_rule.level, Source.SENSOR, True
            if lux_value is not None and lux_value < lux_rule.on_below:
                reason = (f"sensor: lux {_num(lux_value)} < {_num(lux_rule.on_below)} "
                          f"for {_dur(lux_rule.hold_s)}")
            else:
                reason = (f"sensor: lux {_num(lux_value or 0)}, dark until above "
                          f"{_num(lux_rule.off_threshold)}")
    else:
        assert ctx.untrusted_since is not None
        elapsed = (now - ctx.untrusted_since).total_seconds()
        # once in failsafe, stay until trust returns (even if the clock jumps back)
        if elapsed < ctx.entry_delay_s and gs.trusted_level is not None and not gs.failsafe:
            at = ctx.untrusted_since + dt.timedelta(seconds=ctx.entry_delay_s)
            level, source = gs.trusted_level, Source.HOLD
            reason = (f"clock untrusted: holding {gs.trusted_level:g}% until failsafe at "
                      f"{_hhmm(at, loc)}")
        else:
            failsafe, source = True, Source.FAILSAFE
            if lux_rule is not None and lux_value is not None:
                if lux_state.active:
                    level = group.failsafe_level
                    reason = (f"failsafe: clock untrusted, lux {_num(lux_value)} "
                              f"(dark below {_num(lux_rule.on_below)})")
                else:
                    level = 0.0
                    reason = f"failsafe: clock untrusted, lux {_num(lux_value)}: daylight"
            else:
                level, reason = group.failsafe_level, "failsafe: clock untrusted"
    if failsafe and not gs.failsafe:
        event(EventKind.FAILSAFE_ENTERED, reason)
    elif gs.failsafe and not failsafe:
        event(EventKind.FAILSAFE_LEFT, "clock trusted again")
    if sensor_lit and not gs.sensor_lit:
        event(EventKind.DARKNESS_DETECTED, reason)
    elif gs.sensor_lit and not sensor_lit:
        event(EventKind.DARKNESS_CLEARED, "program on" if level > 0 else (
            "no fresh lux reading" if lux_value is None else f"lux {_num(lux_value)}"))

    for rule, st, v in zip(group.thresholds, thr_states, thr_values, strict=True):
        if st.active and rule.action is ThresholdAction.RAISE and rule.level > level:
            sign = ">" if rule.above is not None else "<"
            limit = rule.above if rule.above is not None else rule.below
            level, source = rule.level, Source.THRESHOLD
            reason = (f"threshold {rule.label}: {_num(v) if v is not None else '?'} {sign} "
                      f"{_num(limit or 0)}")
    held_level = level

    until = motion_state.until
    if group.motion is not None and until is not None and level > 0 \
            and group.motion.level > level:
        frac = _boost_fraction(motion_state, group.motion, now)
        level = level + (group.motion.level - level) * frac
        source = Source.MOTION
        reason = f"motion boost until {_hhmm(until, loc)}"

    for rule, st, v in zip(group.thresholds, thr_states, thr_values, strict=True):
        if st.active and rule.action is ThresholdAction.CAP and rule.level < level:
            sign = ">" if rule.above is not None else "<"
            limit = rule.above if rule.above is not None else rule.below
            level, source = rule.level, Source.THRESHOLD
            reason = (f"threshold {rule.label}: {_num(v) if v is not None else '?'} {sign} "
                      f"{_num(limit or 0)}, capped")

    on_since = gs.on_since if gs.on_since is not None and gs.on_since <= now else None
    if (level <= 0 and group.min_burn_minutes > 0 and gs.level and on_since is not None):
        keep_until = on_since + dt.timedelta(minutes=group.min_burn_minutes)
        if now < keep_until:
            level, source = gs.level, Source.MIN_BURN
            reason = (f"min burn: on since {_hhmm(on_since, loc)}, kept until "
                      f"{_hhmm(keep_until, loc)}")

    # --- overrides beat everything above
    override = _pick_override(group, overrides, ctx)
    if override is not None:
        level, source = override.level, Source.OVERRIDE
        reason = _override_reason(override, loc)
    new_override_id = override.id if override is not None else None
    if new_override_id != gs.override_id:
        if gs.override_id is not None:
            event(EventKind.OVERRIDE_ENDED, f"override {gs.override_id} ended")
        if override is not None:
            event(EventKind.OVERRIDE_STARTED, reason)

    # --- limits last
    final, limited = _limit(level, group)
    if limited is LimitKind.MIN:
        reason = f"{reason}; limit: min {group.limits.min_level:g}%"
    elif limited is LimitKind.MAX:
        reason = f"{reason}; limit: max {group.limits.max_level:g}%"
    final = round(final, 2)

    lit_before = gs.level is not None and gs.level > 0
    new_state = GroupState(
        level=final,
        on_since=(on_since if lit_before and on_since is not None else now) if final > 0
        else None,
        trusted_level=held_level if ctx.trusted else gs.trusted_level,
        failsafe=failsafe,
        sensor_lit=sensor_lit,
        override_id=new_override_id,
        lux=lux_state,
        thresholds=thr_states,
        motion=motion_state,
    )
    decision = GroupDecision(level=final, reason=reason, source=source, limit=limited)
    return decision, new_state, events


def resolve(now: dt.datetime, *, clock_trusted: bool,
            values: Mapping[tuple[str, str], SensorValue], rules: LightingRules,
            overrides: Sequence[Override], state: ResolverState) -> Resolution:
    """Every group's level at `now`, with its reason, and the state for the next call.

    `now` must be timezone-aware; `values` maps (device, point) to the latest reading;
    `overrides` may hold expired ones (ignored) and ones for unknown groups (ignored).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("resolve: `now` must be timezone-aware")
    # all arithmetic in UTC: datetimes sharing a zone compare by wall clock (wrong across DST)
    now = now.astimezone(dt.UTC)
    if rules.groups and rules.location is None:
        raise ValueError("resolve: the lighting rules have no location (see parse_lighting)")
    since = state.clock_untrusted_since
    if clock_trusted:
        since = None
    elif since is None or since > now:
        since = now
    if not rules.groups:
        return Resolution(at=now, groups={}, state=ResolverState(clock_untrusted_since=since))
    assert rules.location is not None
    ctx = _Ctx(now=now, trusted=clock_trusted, untrusted_since=since,
               entry_delay_s=rules.failsafe.entry_delay_s, location=rules.location,
               values=values, rules=rules)
    decisions: dict[str, GroupDecision] = {}
    states: dict[str, GroupState] = {}
    events: list[LightingEvent] = []
    for group in rules.groups:
        decision, gs, evs = _resolve_group(group, state.groups.get(group.name, GroupState()),
                                           overrides, ctx)
        decisions[group.name] = decision
        states[group.name] = gs
        events.extend(evs)
    return Resolution(at=now, groups=decisions,
                      state=ResolverState(clock_untrusted_since=since, groups=states),
                      events=tuple(events))
