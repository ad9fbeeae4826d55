"""The resolver's precedence and timers: overrides, clock-trust failsafe, sensor rules, limits.

All at a fixed site (Paris) in late November, when the sun sets about 17:00 and rises about
08:10; times below are local unless marked UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.lighting import (
    EventKind,
    LightingRules,
    LimitKind,
    Override,
    OverrideSource,
    Resolution,
    ResolverState,
    SensorValue,
    Source,
    parse_lighting,
    resolve,
)

PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
TZ = ZoneInfo("Europe/Paris")
DAY = dt.date(2026, 11, 24)   # a Tuesday

PROGRAM = {"steps": [
    {"at": "sunset-10m", "level": 100},
    {"at": "23:00", "level": 60},
    {"at": "01:00", "level": 40},
    {"at": "05:00", "level": 80},
    {"at": "sunrise+10m", "level": 0},
]}
LUX = ("env-1", "illuminance")
PIR = ("pir-1", "motion")


def local(hh: int, mm: int = 0, ss: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=TZ)


def rules_with(**group: Any) -> LightingRules:
    extra = group.pop("lighting", {})
    g = {"name": "street", "program": "night",
         "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 100}], **group}
    return parse_lighting({"programs": {"night": PROGRAM}, "groups": [g], **extra},
                          location=PARIS)


class Run:
    """Drives the resolver through time like the agent does, keeping its state."""

    def __init__(self, rules: LightingRules) -> None:
        self.rules = rules
        self.state = ResolverState()
        self.values: dict[tuple[str, str], SensorValue] = {}
        self.overrides: list[Override] = []
        self.events: list[EventKind] = []

    def at(self, now: dt.datetime, *, trusted: bool = True,
           values: Mapping[tuple[str, str], float] | None = None) -> Resolution:
        for key, v in (values or {}).items():
            self.values[key] = SensorValue(v, now)
        res = resolve(now, clock_trusted=trusted, values=self.values, rules=self.rules,
                      overrides=self.overrides, state=self.state)
        self.state = res.state
        self.events.extend(e.kind for e in res.events)
        return res

    def level(self, now: dt.datetime, **kw: Any) -> float:
        return self.at(now, **kw).groups["street"].level

    def walk(self, start: dt.datetime, seconds: Iterable[int], **kw: Any) -> list[float]:
        return [self.level(start + dt.timedelta(seconds=s), **kw) for s in seconds]


# ------------------------------------------------------------------------------- overrides
def test_the_highest_priority_override_wins_and_expired_ones_are_ignored() -> None:
    run = Run(rules_with())
    run.overrides = [
        Override(id="op-1", group="street", level=30, priority=5),
        Override(id="op-17", group="street", level=70, priority=9,
                 expires_at=local(2, day=DAY + dt.timedelta(days=1))),
        Override(id="op-3", group="street", level=10, priority=1),
    ]
    d = run.at(local(21)).groups["street"]
    assert (d.level, d.source, d.reason) == (70, Source.OVERRIDE, "override op-17 until 02:00")
    # at its expiry instant the override is over: the next one down takes over
    d = run.at(local(2, day=DAY + dt.timedelta(days=1))).groups["street"]
    assert (d.level, d.reason) == (30, "override op-1")
    assert run.events == [EventKind.OVERRIDE_STARTED, EventKind.OVERRIDE_ENDED,
                          EventKind.OVERRIDE_STARTED]
    run.overrides = []
    d = run.at(local(2, 1, day=DAY + dt.timedelta(days=1))).groups["street"]
    assert (d.level, d.reason) == (40, "program step 01:00")
    assert run.events[-1] is EventKind.OVERRIDE_ENDED


def test_equal_priorities_go_to_the_latest_and_star_means_every_group() -> None:
    run = Run(rules_with())
    run.overrides = [Override(id="a", group="*", level=50, priority=3),
                     Override(id="b", group="street", level=90, priority=3),
                     Override(id="c", group="elsewhere", level=5, priority=99)]
    assert run.at(local(14)).groups["street"].reason == "override b"
    run.overrides = run.overrides[:1]
    assert run.level(local(14, 1)) == 50


def test_an_override_beats_the_failsafe_and_limits_still_apply() -> None:
    run = Run(rules_with(limits={"min_level": 20, "max_level": 90}))
    run.overrides = [Override(id="op-17", group="street", level=10, priority=1)]
    d = run.at(local(22), trusted=False).groups["street"]
    assert (d.level, d.source, d.limit) == (20, Source.OVERRIDE, LimitKind.MIN)
    assert d.reason == "override op-17; limit: min 20%"
    run.overrides = [Override(id="op-18", group="street", level=0, priority=1)]
    assert run.level(local(22, 1), trusted=False) == 0          # off is not "on below min"
    run.overrides = []
    d = run.at(local(22, 2)).groups["street"]
    assert (d.level, d.limit, d.reason) == (90, LimitKind.MAX,
                                            "astro sunset-10m; limit: max 90%")


def test_override_values_are_checked() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        Override(id="x", group="street", level=120)
    with pytest.raises(ValueError, match="timezone-aware"):
        Override(id="x", group="street", level=20, expires_at=dt.datetime(2026, 1, 1))


def test_the_cabinet_switch_overrides_with_its_priority() -> None:
    run = Run(rules_with(switches=[{"device": "cabinet", "point": "manual_on", "level": 100}]))
    run.overrides = [Override(id="op-5", group="street", level=0, priority=10)]
    d = run.at(local(23, 30), values={("cabinet", "manual_on"): 1}).groups["street"]
    assert (d.level, d.source, d.reason) == (100, Source.OVERRIDE, "switch cabinet/manual_on")
    d = run.at(local(23, 31), values={("cabinet", "manual_on"): 0}).groups["street"]
    assert d.reason == "override op-5"
    # a switch reading too old to trust counts as released
    run.overrides = []
    run.values[("cabinet", "manual_on")] = SensorValue(1, local(23, 32))
    assert run.at(local(23, 40)).groups["street"].reason == "program step 23:00"


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        resolve(dt.datetime(2026, 1, 1), clock_trusted=True, values={}, rules=rules_with(),
                overrides=(), state=ResolverState())


# -------------------------------------------------------------------------------- failsafe
def test_untrusted_clock_without_sensor_holds_then_fails_safe_then_leaves_at_once() -> None:
    run = Run(rules_with())
    assert run.level(local(23, 30)) == 60
    t0 = local(23, 40)
    d = run.at(t0, trusted=False).groups["street"]
    assert (d.level, d.source) == (60, Source.HOLD)
    assert d.reason == "clock untrusted: holding 60% until failsafe at 23:42"
    assert run.level(t0 + dt.timedelta(seconds=119), trusted=False) == 60
    d = run.at(t0 + dt.timedelta(seconds=120), trusted=False).groups["street"]
    assert (d.level, d.source, d.reason) == (100, Source.FAILSAFE, "failsafe: clock untrusted")
    assert run.events == [EventKind.FAILSAFE_ENTERED]
    # trust returns: back to the program at once
    d = run.at(t0 + dt.timedelta(seconds=121)).groups["street"]
    assert (d.level, d.source) == (60, Source.PROGRAM)
    assert run.events == [EventKind.FAILSAFE_ENTERED, EventKind.FAILSAFE_LEFT]
    assert run.state.clock_untrusted_since is None


def test_a_brief_trust_fault_in_daylight_does_not_light_the_street() -> None:
    run = Run(rules_with())
    assert run.walk(local(13), [0]) == [0]
    assert run.walk(local(13), range(1, 120, 10), trusted=False) == [0] * 12
    assert run.level(local(13, 2)) == 0
    assert run.events == []


def test_starting_untrusted_goes_to_failsafe_at_once_and_the_delay_is_configurable() -> None:
    run = Run(rules_with(failsafe_level=70, lighting={"failsafe": {"entry_delay_s": 30}}))
    # no level decided with a trusted clock yet: nothing to hold, so failsafe now
    assert run.level(local(3), trusted=False) == 70
    run = Run(rules_with(lighting={"failsafe": {"entry_delay_s": 30}}))
    run.level(local(3))
    # untrusted from 03:00:01: held for 30 s, failsafe from 03:00:31
    assert run.walk(local(3), [1, 30, 31], trusted=False) == [40, 40, 100]


def test_a_clock_jumping_back_while_untrusted_restarts_the_entry_delay() -> None:
    run = Run(rules_with())
    run.level(local(23, 30))
    run.level(local(23, 31), trusted=False)
    assert run.level(local(23, 20), trusted=False) == 60      # 11 minutes back: hold again
    assert run.state.clock_untrusted_since == local(23, 20)
    assert run.level(local(23, 22), trusted=False) == 100
    # in failsafe, a jump back does not drop to holding: failsafe lasts until trust returns
    assert run.level(local(22), trusted=False) == 100
    assert run.events == [EventKind.FAILSAFE_ENTERED]


def test_untrusted_clock_follows_the_illuminance_sensor() -> None:
    run = Run(rules_with(illuminance={"device": "env-1", "point": "illuminance",
                                      "on_below": 15, "off_above": 30, "hold_s": 60,
                                      "window_min": 45}))
    # noon, bright: daylight, not failsafe-on all day
    d = run.at(local(12), trusted=False, values={LUX: 800}).groups["street"]
    assert (d.level, d.source) == (0, Source.FAILSAFE)
    assert d.reason == "failsafe: clock untrusted, lux 800: daylight"
    # it gets dark (the window does not apply: the time is unknown): on after the hold
    assert run.walk(local(12, 10), [0, 59, 60], trusted=False, values={LUX: 4}) == [0, 0, 100]
    d = run.at(local(12, 11), trusted=False).groups["street"]
    assert d.reason == "failsafe: clock untrusted, lux 4 (dark below 15)"
    # the sensor goes silent: readings age out, the failsafe level stays
    assert run.level(local(12, 30), trusted=False) == 100
    assert run.at(local(12, 30), trusted=False).groups["street"].reason == (
        "failsafe: clock untrusted")


# --------------------------------------------------------------------------- illuminance
STORM = {"device": "env-1", "point": "illuminance", "on_below": 15, "off_above": 30,
         "hold_s": 120}


def test_storm_darkness_turns_the_street_on_after_the_hold_and_off_with_hysteresis() -> None:
    run = Run(rules_with(illuminance=STORM))
    t = local(14)
    assert run.level(t, values={LUX: 900}) == 0
    assert run.walk(t, [10, 60, 129], values={LUX: 8}) == [0, 0, 0]
    d = run.at(t + dt.timedelta(seconds=130), values={LUX: 8}).groups["street"]
    assert (d.level, d.source, d.reason) == (100, Source.SENSOR,
                                             "sensor: lux 8 < 15 for 2 min")
    assert run.events == [EventKind.DARKNESS_DETECTED]
    # within the hysteresis band it stays on
    d = run.at(t + dt.timedelta(seconds=200), values={LUX: 22}).groups["street"]
    assert (d.level, d.reason) == (100, "sensor: lux 22, dark until above 30")
    # above off_above: off only after the hold, and a dip back into the band restarts it
    assert run.walk(t, [300, 400], values={LUX: 45}) == [100, 100]
    assert run.level(t + dt.timedelta(seconds=410), values={LUX: 25}) == 100
    assert run.walk(t, [420, 530, 540], values={LUX: 45}) == [100, 100, 0]
    assert run.events == [EventKind.DARKNESS_DETECTED, EventKind.DARKNESS_CLEARED]


def test_a_short_shadow_does_not_light_the_street() -> None:
    run = Run(rules_with(illuminance=STORM))
    run.level(local(14), values={LUX: 900})
    assert run.walk(local(14), range(10, 100, 10), values={LUX: 3}) == [0] * 9
    assert run.walk(local(14), [100, 200, 300], values={LUX: 900}) == [0, 0, 0]


def test_the_window_keeps_a_noon_shadow_from_counting() -> None:
    run = Run(rules_with(illuminance={**STORM, "window_min": 60}))
    # sunset is about 16:57 on this date: 15:00 is outside sunset +- 60 min, 16:30 inside
    run.level(local(15), values={LUX: 900})
    assert run.walk(local(15), [10, 200, 600], values={LUX: 5}) == [0, 0, 0]
    assert run.walk(local(16, 30), [0, 119, 120], values={LUX: 5}) == [0, 0, 100]


def test_the_sensor_does_not_change_a_lit_program_and_stale_readings_do_not_count() -> None:
    run = Run(rules_with(illuminance=STORM))
    d = run.at(local(20), values={LUX: 2}).groups["street"]
    assert (d.level, d.source) == (100, Source.PROGRAM)
    run.at(local(20, 5), values={LUX: 2})
    assert run.events == []           # dark at night is no news
    # morning: the program turns off at sunrise+10m, the sensor says still dark (fog)
    morning = DAY + dt.timedelta(days=1)
    d = run.at(local(9, day=morning), values={LUX: 2}).groups["street"]
    assert (d.level, d.source) == (100, Source.SENSOR)
    assert run.events == [EventKind.DARKNESS_DETECTED]
    run.values[LUX] = SensorValue(2, local(9, day=morning))
    assert run.level(local(9, 6, day=morning)) == 0   # 6 min old > max_age_s 300
    assert run.events == [EventKind.DARKNESS_DETECTED, EventKind.DARKNESS_CLEARED]


# --------------------------------------------------------------------------------- motion
MOTION = {"device": "pir-1", "point": "motion", "level": 100, "hold_s": 90, "ramp_s": 2}


def test_motion_boost_raises_with_a_ramp_holds_and_ramps_back() -> None:
    run = Run(rules_with(motion=MOTION))
    t = local(23, 30)
    assert run.level(t) == 60
    d = run.at(t, values={PIR: 1}).groups["street"]
    assert (d.level, d.source, d.reason) == (60, Source.MOTION, "motion boost until 23:31")
    run.values[PIR] = SensorValue(0, t + dt.timedelta(seconds=1))
    assert run.walk(t, [1, 2, 60, 89]) == [80, 100, 100, 100]
    assert run.walk(t, [90, 91, 92, 200]) == [100, 80, 60, 60]


def test_motion_extends_the_hold_and_never_lowers_or_lights_a_dark_street() -> None:
    run = Run(rules_with(motion={**MOTION, "ramp_s": 0}))
    t = local(23, 30)
    run.level(t, values={PIR: 1})
    assert run.level(t + dt.timedelta(seconds=60), values={PIR: 1}) == 100
    assert run.walk(t, [149, 150]) == [100, 60]        # held 90 s from the last detection
    assert run.level(local(14), values={PIR: 1}) == 0  # daylight: the street stays dark
    low = Run(rules_with(motion={**MOTION, "level": 50}))
    assert low.level(local(21), values={PIR: 1}) == 100   # raise only


# ------------------------------------------------------------------------ thresholds, burn
def test_threshold_rules_raise_or_cap() -> None:
    flood = {"name": "flood", "device": "water-1", "point": "level_cm", "above": 50,
             "level": 100, "hysteresis": 5}
    hot = {"device": "lamp-1", "point": "driver_temperature", "above": 80, "level": 30,
           "action": "cap"}
    run = Run(rules_with(thresholds=[flood, hot]))
    d = run.at(local(14), values={("water-1", "level_cm"): 62}).groups["street"]
    assert (d.level, d.source, d.reason) == (100, Source.THRESHOLD, "threshold flood: 62 > 50")
    assert run.level(local(14, 1), values={("water-1", "level_cm"): 48}) == 100  # hysteresis
    assert run.level(local(14, 2), values={("water-1", "level_cm"): 44}) == 0
    d = run.at(local(20), values={("lamp-1", "driver_temperature"): 85}).groups["street"]
    assert (d.level, d.reason) == (30, "threshold lamp-1/driver_temperature: 85 > 80, capped")


def test_min_burn_keeps_a_lamp_on_that_was_just_switched_on() -> None:
    run = Run(rules_with(min_burn_minutes=15))
    t = local(13)
    run.overrides = [Override(id="test", group="street", level=100, priority=1,
                              expires_at=t + dt.timedelta(minutes=1))]
    assert run.level(t) == 100
    d = run.at(t + dt.timedelta(minutes=2)).groups["street"]
    assert (d.level, d.source, d.reason) == (100, Source.MIN_BURN,
                                             "min burn: on since 13:00, kept until 13:15")
    assert run.walk(t, [14 * 60 + 59, 15 * 60]) == [100, 0]


def test_a_group_left_out_of_the_rules_drops_out_of_the_state() -> None:
    run = Run(rules_with())
    run.level(local(20))
    assert set(run.state.groups) == {"street"}
    empty = parse_lighting({}, location=PARIS)
    res = resolve(local(20), clock_trusted=True, values={}, rules=empty, overrides=(),
                  state=run.state)
    assert res.groups == {} and res.state.groups == {}


# ------------------------------------------------------------------------------ properties
SENSOR_RULES = {"limits": {"min_level": 20, "max_level": 90}, "illuminance": STORM,
                "motion": MOTION, "min_burn_minutes": 5,
                "thresholds": [{"device": "water-1", "point": "level_cm", "above": 50,
                                "level": 100}]}
PROPERTY_RULES = rules_with(**SENSOR_RULES)

step_st = st.tuples(
    st.integers(min_value=1, max_value=3 * 3600),          # seconds to the next call
    st.booleans(),                                         # clock trusted
    st.one_of(st.none(), st.floats(min_value=0, max_value=2000)),   # lux
    st.sampled_from([None, 0, 1]),                         # motion
    st.one_of(st.none(), st.floats(min_value=0, max_value=100)),    # water level
)
override_st = st.builds(
    Override, id=st.sampled_from(["a", "b", "c", "d"]), group=st.sampled_from(["street", "*"]),
    level=st.floats(min_value=0, max_value=100), priority=st.integers(min_value=-5, max_value=5),
    expires_at=st.one_of(st.none(), st.integers(min_value=0, max_value=48 * 3600).map(
        lambda s: local(12) + dt.timedelta(seconds=s))),
    source=st.sampled_from(list(OverrideSource)))


def _expected_override(overrides: Sequence[Override], now: dt.datetime) -> Override | None:
    best = None
    for o in overrides:
        if o.active(now) and (best is None or o.priority >= best.priority):
            best = o
    return best


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step_st, min_size=1, max_size=40),
       overrides=st.lists(override_st, max_size=4))
def test_levels_stay_within_limits_and_the_top_override_always_wins(
        steps: list[tuple[int, bool, float | None, int | None, float | None]],
        overrides: list[Override]) -> None:
    run = Run(PROPERTY_RULES)
    run.overrides = overrides
    now = local(12)
    for gap, trusted, lux, motion, water in steps:
        now += dt.timedelta(seconds=gap)
        values: dict[tuple[str, str], float] = {}
        if lux is not None:
            values[LUX] = lux
        if motion is not None:
            values[PIR] = motion
        if water is not None:
            values[("water-1", "level_cm")] = water
        d = run.at(now, trusted=trusted, values=values).groups["street"]
        assert d.level == 0 or 20 <= d.level <= 90
        top = _expected_override(overrides, now)
        if top is not None:
            assert d.source is Source.OVERRIDE
            want = 0 if top.level <= 0 else min(90, max(20, top.level))
            assert d.level == pytest.approx(want, abs=0.01)
        if not trusted and top is None:
            assert d.source in (Source.HOLD, Source.FAILSAFE, Source.THRESHOLD,
                                Source.MOTION, Source.MIN_BURN)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step_st, min_size=1, max_size=15))
def test_resolve_is_a_pure_function_of_its_inputs(
        steps: list[tuple[int, bool, float | None, int | None, float | None]]) -> None:
    now = local(18)
    state = ResolverState()
    values: dict[tuple[str, str], SensorValue] = {}
    for gap, trusted, lux, _, _ in steps:
        now += dt.timedelta(seconds=gap)
        if lux is not None:
            values[LUX] = SensorValue(lux, now)
        args: dict[str, Any] = {"clock_trusted": trusted, "values": dict(values),
                                "rules": PROPERTY_RULES, "overrides": (), "state": state}
        first, second = resolve(now, **args), resolve(now, **args)
        assert first == second
        state = first.state
