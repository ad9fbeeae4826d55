"""Alert evaluation, rule kind by rule kind: firing, hold, hysteresis, clear events with their
duration, minimum durations, staleness by time alone, and the state across calls and restarts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from policies.alerts import (
    AlertEvent,
    AlertRules,
    AlertState,
    Phase,
    RuleKind,
    Severity,
    evaluate,
    parse_alerts,
    state_from_json,
    state_to_json,
)

T0 = 1_750_000_000_000   # 2025-06-15T15:06:40Z
PT = ("water-1", "water_level")


def rules(*raw: Mapping[str, Any], timezone: str | None = "UTC") -> AlertRules:
    return parse_alerts({"rules": list(raw)}, timezone=timezone)


class Driver:
    """Feeds readings at offsets in seconds from T0 and collects what comes out."""

    def __init__(self, rules_: AlertRules, *, poll: Mapping[tuple[str, str], float] | None = None,
                 ) -> None:
        self.rules = rules_
        self.state = AlertState()
        self.poll = poll
        self.events: list[AlertEvent] = []
        self.active: tuple[Any, ...] = ()

    def at(self, t_s: float, value: float | str | None = None, *, point: tuple[str, str] = PT,
           no_reading: bool = False) -> list[AlertEvent]:
        now = T0 + round(t_s * 1000)
        samples = [] if no_reading else [(point[0], point[1], now, value)]
        res = evaluate(now, samples=samples, rules=self.rules, state=self.state,
                       poll_periods=self.poll)
        self.state = res.state
        self.events.extend(res.events)
        self.active = res.active
        return list(res.events)

    def series(self, start_s: float, step_s: float, values: list[float]) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for i, v in enumerate(values):
            out += self.at(start_s + i * step_s, v)
        return out

    def types(self) -> list[str]:
        return [e.type for e in self.events]


FLOOD_WARNING = {"name": "flood_warning", "kind": "threshold", "point": "water-1/water_level",
                 "above": 25, "clear": 20, "hold": "60s"}


# --------------------------------------------------------------------------------- threshold
def test_threshold_fires_at_once_without_a_hold() -> None:
    d = Driver(rules({"name": "flood_alarm", "kind": "threshold", "severity": "alarm",
                      "point": "water-1/water_level", "above": 40, "clear": 35}))
    assert d.at(0, 39.9) == []
    [ev] = d.at(10, 41.5)
    assert (ev.type, ev.phase, ev.severity, ev.kind) == ("flood_alarm", Phase.FIRED,
                                                         Severity.ALARM, RuleKind.THRESHOLD)
    assert (ev.device, ev.point, ev.ts, ev.since) == ("water-1", "water_level", T0 + 10_000,
                                                      T0 + 10_000)
    assert ev.values["value"] == 41.5 and ev.values["threshold"] == 40
    assert ev.values["clear"] == 35 and ev.values["direction"] == "above"
    assert ev.detail()["rule"] == "flood_alarm" and "41.5 above 40" in ev.reason
    [alert] = d.active
    assert (alert.rule, alert.severity, alert.value, alert.fired_at) == (
        "flood_alarm", Severity.ALARM, 41.5, T0 + 10_000)
    assert d.at(20, 45) == []   # no second event while active


def test_threshold_hold_must_persist_and_restarts_on_a_dip() -> None:
    d = Driver(rules(FLOOD_WARNING))
    assert d.series(0, 10, [26, 27, 28, 29, 30, 31]) == []        # 0..50 s: not yet 60 s
    assert d.at(55, 24.9) == []                                   # a dip restarts the hold
    assert d.series(60, 10, [26, 26, 26, 26, 26, 26]) == []       # 60..110 s
    [ev] = d.at(120, 26.5)                                        # 60 s after 60 s
    assert ev.type == "flood_warning"
    assert ev.since == T0 + 60_000 and ev.ts == T0 + 120_000
    assert ev.values["hold_s"] == 60 and "for 60 s" in ev.reason


def test_threshold_hysteresis_band_neither_clears_nor_refires() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0}))
    d.at(0, 30)
    for i, v in enumerate([24, 21, 25, 20.01, 25.0, 22]):         # inside (20, 25]
        assert d.at(10 + 10 * i, v) == []
    assert d.active and d.types() == ["flood_warning"]
    [ev] = d.at(100, 19.5)
    assert ev.type == "flood_warning_cleared" and ev.phase is Phase.CLEARED
    assert ev.severity is Severity.INFO and ev.values["alert_severity"] == "warning"
    assert ev.since == T0 and ev.ts == T0 + 100_000 and ev.duration_s == 100
    assert ev.values["peak"] == 30 and ev.values["value"] == 19.5
    assert ev.detail()["duration_s"] == 100
    assert not d.active


def test_threshold_clear_exactly_at_the_clear_level() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0}))
    d.at(0, 26)
    [ev] = d.at(10, 20)
    assert ev.type == "flood_warning_cleared"


def test_threshold_below() -> None:
    d = Driver(rules({"name": "frost", "kind": "threshold", "point": "env-1/temperature",
                      "below": 2, "clear": 3}))
    pt = ("env-1", "temperature")
    assert d.at(0, 2, point=pt) == []
    [ev] = d.at(10, 1.9, point=pt)
    assert ev.values["direction"] == "below" and "1.9 below 2" in ev.reason
    assert d.at(20, 2.9, point=pt) == []
    d.at(25, 0.5, point=pt)
    [clr] = d.at(30, 3, point=pt)
    assert clr.type == "frost_cleared" and clr.values["peak"] == 0.5


def test_min_active_delays_the_clear_until_time_passes_without_readings() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0, "min_active": "5m"}))
    d.at(0, 30)
    assert d.at(10, 5) == []            # clear condition met, but only 10 s active
    assert d.at(200, no_reading=True) == []
    [ev] = d.at(300, no_reading=True)   # time alone ends it once min_active is over
    assert ev.type == "flood_warning_cleared" and ev.ts == T0 + 300_000
    assert ev.duration_s == 300 and ev.values["value"] == 5


def test_min_active_pending_clear_is_cancelled_by_a_new_rise() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0, "min_active": "5m"}))
    d.at(0, 30)
    d.at(10, 5)
    d.at(250, 22)                       # back inside the band: no longer clearing
    assert d.at(400, no_reading=True) == []
    assert d.active


def test_clear_after_needs_the_clear_condition_to_persist() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0, "clear_after": "2m"}))
    d.at(0, 30)
    assert d.series(10, 10, [10] * 6) == []        # 10..60 s below: 50 s
    assert d.at(70, 23) == []                      # restarts the clear delay
    assert d.series(80, 10, [10] * 12) == []       # 80..190 s: 110 s
    [ev] = d.at(200, 10)
    assert ev.type == "flood_warning_cleared" and ev.ts == T0 + 200_000


def test_failed_reads_neither_fire_nor_clear_nor_break_a_hold() -> None:
    d = Driver(rules(FLOOD_WARNING))
    d.at(0, 30)
    d.at(30, None)
    d.at(40, float("nan"))

    @dataclass(frozen=True)
    class Sample:
        device: str
        point: str
        ts: int
        value: float | None
        quality: str

    res = evaluate(T0 + 50_000, samples=[Sample("water-1", "water_level", T0 + 50_000, 0.0,
                                                 "timeout")],
                   rules=d.rules, state=d.state)
    d.state = res.state
    assert res.events == ()
    [ev] = d.at(60, 31)
    assert ev.since == T0


def test_sample_objects_with_good_quality_count() -> None:
    @dataclass(frozen=True)
    class Sample:
        device: str
        point: str
        ts: int
        value: float
        quality: str = "good"

    r = rules({**FLOOD_WARNING, "hold": 0})
    res = evaluate(T0, samples=[Sample("water-1", "water_level", T0, 30.0)], rules=r,
                   state=AlertState())
    assert [e.type for e in res.events] == ["flood_warning"]


def test_readings_in_one_call_are_judged_in_time_order() -> None:
    r = rules(FLOOD_WARNING)
    samples = [("water-1", "water_level", T0 + t * 1000, 30.0) for t in (60, 0, 30)]
    res = evaluate(T0 + 61_000, samples=samples, rules=r, state=AlertState())
    [ev] = res.events
    assert ev.since == T0 and ev.ts == T0 + 60_000


def test_other_points_are_ignored() -> None:
    d = Driver(rules(FLOOD_WARNING))
    assert d.at(0, 99, point=("water-2", "water_level")) == []
    assert d.state.memory == 0


def test_hours_limit_firing_and_end_the_alert() -> None:
    # T0 is 15:06:40 UTC: 22:00 UTC is 24,800 s later
    d = Driver(rules({"name": "noise_night", "kind": "threshold", "point": "env-1/noise",
                      "above": 70, "clear": 67, "hours": {"from": "22:00", "to": "06:00"}}))
    pt = ("env-1", "noise")
    night = 24_800
    assert d.at(0, 80, point=pt) == []                 # daytime: not watched
    assert d.at(night - 10, 80, point=pt) == []
    [ev] = d.at(night, 80, point=pt)
    assert ev.type == "noise_night"
    morning = night + 8 * 3600
    assert d.at(morning - 10, 80, point=pt) == []
    [clr] = d.at(morning, 80, point=pt)
    assert clr.type == "noise_night_cleared" and "outside its hours (22:00-06:00)" in clr.reason


# -------------------------------------------------------------------------------------- rate
RISING = {"name": "flood_rising", "kind": "rate", "point": "water-1/water_level", "rise": 5,
          "window": "10m", "clear": 2}


def test_rate_fires_on_a_rise_within_the_window() -> None:
    d = Driver(rules(RISING))
    # 0.4 cm a minute: 4 cm in 10 min, never more than 5 within the window
    assert d.series(0, 60, [0.4 * i for i in range(30)]) == []
    d2 = Driver(rules(RISING))
    evs = d2.series(0, 60, [0.6 * i for i in range(12)])   # 0.6 cm/min: 5.4 after 9 min
    [ev] = evs
    assert ev.type == "flood_rising" and ev.ts == T0 + 540_000
    assert ev.values["delta"] == pytest.approx(5.4) and ev.values["from"] == 0
    assert ev.values["from_ts"] == T0 and ev.values["window_s"] == 600
    assert "rose 5.4 within 10 min (from 0 to 5.4), more than 5" in ev.reason


def test_rate_measures_from_the_lowest_reading_of_the_window() -> None:
    d = Driver(rules(RISING))
    d.at(0, 10)
    d.at(60, 3)          # a dip
    [ev] = d.at(120, 8.5)
    assert ev.values["from"] == 3 and ev.values["delta"] == pytest.approx(5.5)


def test_rate_forgets_readings_older_than_the_window() -> None:
    d = Driver(rules(RISING))
    d.at(0, 0)
    assert d.at(601, 6) == []     # the 0 was 601 s ago: out of the window


def test_rate_clears_when_the_rise_stops() -> None:
    d = Driver(rules(RISING))
    d.series(0, 60, [0.0, 3.0, 6.0])         # fires at 120 s
    assert d.types() == ["flood_rising"]
    evs = d.series(180, 60, [6.0] * 12)       # a plateau: the low leaves the window
    [ev] = evs
    assert ev.type == "flood_rising_cleared" and ev.values["delta"] <= 2
    assert ev.values["peak"] == 6


def test_rate_fall() -> None:
    d = Driver(rules({"name": "level_drop", "kind": "rate", "point": "water-1/water_level",
                      "fall": 10, "window": "5m"}))
    d.at(0, 40)
    [ev] = d.at(120, 29)
    assert ev.values["direction"] == "fall" and ev.values["from"] == 40
    assert ev.values["delta"] == 11 and "fell 11 within 5 min" in ev.reason


# -------------------------------------------------------------------------------------- mean
PM = ("env-1", "pm25")
AIR = {"name": "air_quality_poor", "kind": "mean", "point": "env-1/pm25", "above": 55,
       "clear": 45, "window": "1h"}


def test_mean_waits_for_coverage_then_fires_on_the_mean() -> None:
    assert Driver(rules(AIR)).at(0, 500, point=PM) == []   # one reading is no hour's mean
    d = Driver(rules(AIR))
    for i in range(45):
        assert d.at(i * 60, 60, point=PM) == []        # 0..44 min: less than 75 % of 1 h
    [ev] = d.at(45 * 60, 60, point=PM)
    assert ev.type == "air_quality_poor" and ev.values["mean"] == 60
    assert ev.values["readings"] == 46 and ev.values["window_s"] == 3600
    assert "1 h mean 60 above 55" in ev.reason


def test_mean_hysteresis_and_clear() -> None:
    d = Driver(rules({**AIR, "window": "10m", "coverage": 0}))
    d.at(0, 60, point=PM)
    assert d.types() == ["air_quality_poor"]
    d.at(60, 40, point=PM)      # mean 50: inside the band
    d.at(120, 40, point=PM)     # mean 46.7
    assert len(d.events) == 1
    [ev] = d.at(180, 20, point=PM)   # mean 40
    assert ev.type == "air_quality_poor_cleared" and ev.values["mean"] == 40
    assert ev.values["peak"] == 60


# ------------------------------------------------------------------------------------- stale
STALE = {"name": "sensor_stale", "kind": "stale", "point": "env-1/pm25", "silent_polls": 5,
         "unchanged": "6h"}


def test_stale_fires_on_silence_with_no_readings_at_all() -> None:
    d = Driver(rules(STALE), poll={PM: 10})
    d.at(0, 12, point=PM)
    assert d.at(50, no_reading=True) == []
    [ev] = d.at(51, no_reading=True)
    assert ev.type == "sensor_stale" and ev.values["condition"] == "silent"
    assert ev.since == T0 and ev.values["last_seen"] == T0 and ev.values["limit_s"] == 50
    assert "sent nothing for 51 s (5 polls of 10 s)" in ev.reason
    assert d.at(100, no_reading=True) == []
    [clr] = d.at(110, 13, point=PM)
    assert clr.type == "sensor_stale_cleared" and clr.duration_s == 59
    assert "readings are back" in clr.reason


def test_stale_counts_from_start_for_a_sensor_never_heard() -> None:
    d = Driver(rules({**STALE, "silent": "2m", "silent_polls": None}))
    d.at(0, no_reading=True)
    assert d.at(120, no_reading=True) == []
    [ev] = d.at(121, no_reading=True)
    assert ev.values["last_seen"] is None and "since the gateway started" in ev.reason


def test_stale_failed_reads_are_silence() -> None:
    d = Driver(rules({**STALE, "silent": 30, "silent_polls": None}))
    d.at(0, 1, point=PM)
    d.at(20, None, point=PM)
    [ev] = d.at(31, None, point=PM)
    assert ev.values["condition"] == "silent"


def test_stale_without_a_known_poll_period_is_not_judged_for_silence() -> None:
    d = Driver(rules(STALE), poll=None)
    d.at(0, 1, point=PM)
    assert d.at(100_000, no_reading=True) == []


def test_stale_unchanged_for_six_hours() -> None:
    d = Driver(rules(STALE), poll={PM: 600})
    evs: list[AlertEvent] = []
    for i in range(37):                   # every 10 min: 0 .. 6 h
        evs += d.at(i * 600, 17, point=PM)
    [ev] = evs
    assert ev.ts == T0 + 6 * 3600_000 and ev.values["condition"] == "unchanged"
    assert ev.since == T0 and ev.values["unchanged_s"] == 6 * 3600
    assert "has read 17 for 6 h" in ev.reason
    assert d.at(37 * 600, 17, point=PM) == []
    [clr] = d.at(38 * 600, 18, point=PM)
    assert clr.type == "sensor_stale_cleared" and "changes again" in clr.reason


def test_stale_tolerance() -> None:
    d = Driver(rules({**STALE, "tolerance": 0.5}), poll={PM: 600})
    for i in range(37):
        d.at(i * 600, 17 + (0.4 if i % 2 else 0), point=PM)
    assert d.types() == ["sensor_stale"]


def test_stale_min_active_keeps_an_intermittent_sensor_from_flapping() -> None:
    d = Driver(rules({**STALE, "min_active": "10m"}), poll={PM: 10})
    d.at(0, 1, point=PM)
    d.at(51, no_reading=True)
    assert d.types() == ["sensor_stale"]
    d.at(60, 2, point=PM)                 # back, but only 9 s active
    assert d.types() == ["sensor_stale"]
    d.at(651, 3, point=PM)
    assert d.types() == ["sensor_stale", "sensor_stale_cleared"]


# --------------------------------------------------------------------------- rules and state
def test_a_spent_state_refuses_reuse() -> None:
    r = rules(FLOOD_WARNING)
    s = AlertState()
    evaluate(T0, samples=[], rules=r, state=s)
    with pytest.raises(ValueError, match="already passed"):
        evaluate(T0, samples=[], rules=r, state=s)


def test_a_removed_rule_clears_its_alert() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0}))
    d.at(0, 30)
    d.rules = rules({**FLOOD_WARNING, "name": "other", "hold": 0})
    evs = d.at(10, 30)
    assert [e.type for e in evs] == ["flood_warning_cleared", "other"]
    assert "removed" in evs[0].reason and evs[0].duration_s == 10


def test_a_changed_rule_keeps_its_alert_and_judges_by_the_new_levels() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0}))
    d.at(0, 30)
    d.rules = rules({**FLOOD_WARNING, "hold": 0, "above": 35, "clear": 32})
    assert d.at(10, 33) == []             # still active, inside the new band
    [ev] = d.at(20, 31)
    assert ev.type == "flood_warning_cleared" and ev.since == T0


def test_a_clock_jumping_back_restarts_windows_but_keeps_alerts() -> None:
    d = Driver(rules(RISING))
    d.series(0, 60, [0.0, 6.0])
    assert d.active
    assert d.at(-3600, 6.0) == []        # back an hour: history restarts
    assert d.active and d.state.memory == 1


def test_a_late_reading_is_dropped_not_a_clock_jump() -> None:
    d = Driver(rules(RISING))
    d.series(0, 60, [0.0, 2.0])
    assert d.at(50, 0.0) == [] and d.state.memory == 2     # 10 s late: ignored
    assert d.at(60, 2.0) == []                             # the same reading again
    [ev] = d.at(120, 5.5)
    assert ev.values["from"] == 0


def test_state_round_trip_through_json_keeps_alerts_windows_and_timers() -> None:
    r = rules(FLOOD_WARNING, RISING, {**AIR, "window": "10m"},
              {**STALE, "point": "water-1/water_level"})
    d = Driver(r, poll={PT: 10})
    d.series(0, 10, [0.0, 2.0, 4.0, 6.0, 26.0, 27.0, 28.0])
    d.at(60, 30, point=PM)
    before = {(a.rule, a.device) for a in d.active}
    assert ("flood_rising", "water-1") in before

    blob = json.dumps(state_to_json(d.state))
    restored = state_from_json(json.loads(blob))
    assert restored.memory == d.state.memory
    other = Driver(r, poll={PT: 10})
    other.state = restored
    twin = Driver(r, poll={PT: 10})
    twin.state = d.state.copy()
    # the pending 60 s hold of flood_warning (since 40 s) survives the round trip
    for drv in (other, twin):
        evs = drv.series(70, 10, [29.0, 30.0, 31.0, 32.0])
        assert [e.type for e in evs] == ["flood_warning"]
        assert evs[0].since == T0 + 40_000
        assert {(a.rule, a.device) for a in drv.active} >= before


def test_state_from_json_refuses_garbage() -> None:
    for bad in (None, {}, {"version": 1}, {"version": 1, "instances": [{"rule": "x"}]},
                {"version": 1, "instances": [{"rule": "x", "device": "d", "point": "p",
                                              "fingerprint": "f", "active": True}]}):
        with pytest.raises(ValueError, match="alert state"):
            state_from_json(bad)


def test_active_alerts_are_sorted_worst_first() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0},
                     {**FLOOD_WARNING, "name": "flood_alarm", "severity": "alarm",
                      "above": 40, "clear": 35, "hold": 0}))
    d.at(0, 30)
    d.at(10, 45)
    assert [a.rule for a in d.active] == ["flood_alarm", "flood_warning"]
    js = d.active[0].to_json()
    assert js["type"] == "flood_alarm" and js["severity"] == "alarm" and js["value"] == 45
    json.dumps(js)


def test_severities_match_the_uplink_s() -> None:
    from gateway.codec import Severity as UplinkSeverity

    assert [s.value for s in Severity] == [s.value for s in UplinkSeverity]


def test_event_to_json_is_the_platform_shape() -> None:
    d = Driver(rules({**FLOOD_WARNING, "hold": 0}))
    [ev] = d.at(0, 30)
    js = ev.to_json()
    assert js["kind"] == "event" and js["type"] == "flood_warning"
    assert js["device"] == "water-1" and js["severity"] == "warning"
    assert js["detail"]["point"] == "water_level" and js["detail"]["since"] == T0
    json.dumps(js)
