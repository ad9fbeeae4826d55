"""Scripted episodes (simulators/scenarios.py) and the issue's alert rules end to end through
them: a storm raises flood_rising, flood_warning (after 60 s above 25 cm) and flood_alarm (above
40 cm), and every one ends with its `_cleared` event; a pollution episode raises
air_quality_poor on the 1-hour mean."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from policies.alerts import (
    AlertEvent,
    AlertRules,
    AlertState,
    Pattern,
    evaluate,
    lighting_demands,
    parse_alerts,
)
from simulators.scenarios import (
    Quantity,
    Scenario,
    ScenarioError,
    Track,
    apply_scenario,
    pollution_episode,
    pollution_script,
    script_value,
    storm,
    storm_script,
)
from simulators.world import ManualClock, World

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_764_032_400_000
WATER = ("water-1", "water_level")
PM = ("env-1", "pm25")


def example_rules() -> AlertRules:
    raw = yaml.safe_load((ROOT / "examples" / "alerts-flood-air.yaml").read_text())
    return parse_alerts(raw["alerts"], timezone="Asia/Ho_Chi_Minh")


def play(rules: AlertRules, point: tuple[str, str], script: list[tuple[float, float]], *,
         poll_s: int, until_s: float, noise: float, seed: int,
         ) -> tuple[list[AlertEvent], list[tuple[int, float]], AlertState]:
    """Poll `point` every `poll_s` through the world's step `script`, as the sensor would read
    it (0.1 resolution, a little noise). Only `point` has a poll period, so the stale rules of
    the example's other (silent) points stay unjudged."""
    rng = random.Random(seed)
    state = AlertState()
    events: list[AlertEvent] = []
    readings: list[tuple[int, float]] = []
    for k in range(0, int(until_s) + 1, poll_s):
        level = script_value(script, k)
        assert level is not None
        value = round(max(0.0, level + rng.gauss(0, noise)), 1)
        now = T0 + k * 1000
        readings.append((now, value))
        res = evaluate(now, samples=[(*point, now, value)], rules=rules, state=state,
                       poll_periods={point: poll_s})
        state = res.state
        events.extend(res.events)
    return events, readings, state


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_issue_s_flood_rules_through_a_scripted_storm(seed: int) -> None:
    rules = example_rules()
    script = storm_script(peak_cm=45)
    end = storm().duration_s + 1200
    events, readings, state = play(rules, WATER, script, poll_s=10, until_s=end, noise=0.3,
                                   seed=seed)
    types = [e.type for e in events]
    assert types == ["flood_rising", "flood_warning", "flood_alarm", "flood_rising_cleared",
                     "flood_alarm_cleared", "flood_warning_cleared"]
    by = {e.type: e for e in events}

    # flood_warning: 60 s after a run of readings above 25 began (noise may restart the run)
    warn = by["flood_warning"]
    i = next(i for i, (ts, _) in enumerate(readings) if ts == warn.since)
    assert readings[i - 1][1] <= 25 < readings[i][1]
    assert warn.ts - warn.since == 60_000
    assert all(v > 25 for ts, v in readings if warn.since <= ts <= warn.ts)
    # flood_alarm: the first reading above 40
    assert by["flood_alarm"].ts == next(ts for ts, v in readings if v > 40)
    # flood_rising: the first reading more than 5 cm above the lowest of the last 10 min
    rising = next(ts for ts, v in readings
                  if v - min(x for t, x in readings if ts - 600_000 <= t <= ts) > 5)
    assert by["flood_rising"].ts == rising
    # the ends: duration from firing, each on its clear level
    for name, clear in (("flood_warning", 20), ("flood_alarm", 35)):
        c = by[f"{name}_cleared"]
        assert c.since == by[name].ts and c.duration_s == (c.ts - c.since) / 1000
        assert c.values["value"] <= clear and c.values["peak"] >= 40
    assert by["flood_rising_cleared"].values["delta"] <= 2
    assert all(e.device == "water-1" for e in events)
    final = evaluate(T0 + int(end * 1000) + 1, samples=[], rules=rules, state=state,
                     poll_periods={WATER: 10})
    assert final.active == () and final.events == ()


def test_the_storm_lights_the_underpass_full_then_flashing() -> None:
    rules = example_rules()
    state = AlertState()
    seen: dict[str, set[str]] = {}
    for k in range(0, 4000, 10):
        now = T0 + k * 1000
        level = script_value(storm_script(), k) or 0.0
        res = evaluate(now, samples=[(*WATER, now, level)], rules=rules, state=state)
        state = res.state
        for d in lighting_demands(res.active, now_ms=now):
            seen.setdefault(d.rule, set()).add(d.action.pattern.value)
            assert d.group == "underpass"
    assert seen == {"flood_warning": {Pattern.STEADY.value}, "flood_alarm": {"flash"}}


def test_a_pollution_episode_raises_air_quality_poor_on_the_hourly_mean() -> None:
    rules = example_rules()
    episode = pollution_episode()
    script = pollution_script(step_s=60)
    events, readings, _ = play(rules, PM, script, poll_s=60, until_s=episode.duration_s + 3600,
                               noise=2.0, seed=4)
    assert [e.type for e in events] == ["air_quality_poor", "air_quality_poor_cleared"]
    fired, cleared = events
    inside = [v for ts, v in readings if fired.ts - 3_600_000 <= ts <= fired.ts]
    assert fired.values["mean"] == pytest.approx(sum(inside) / len(inside), abs=1e-3)
    assert fired.values["mean"] > 55 and fired.device == "env-1"
    assert cleared.values["mean"] <= 45 and cleared.values["peak"] > 100


# ----------------------------------------------------------------------------- scenarios
def test_storm_shape_and_speed() -> None:
    s = storm(lead_s=0, rise_s=600, plateau_s=300, fall_s=900, peak_cm=30)
    assert s.duration_s == 1800
    assert [s.value(Quantity.WATER, t) for t in (0, 300, 600, 750, 900, 1350, 1800, 9999)] == [
        0, 15, 30, 30, 30, 15, 0, 0]
    assert s.value(Quantity.PM25, 0) is None
    fast = s.fit(120)
    assert fast.duration_s == 120 and fast.value(Quantity.WATER, 40) == 30
    assert s.faster(2).duration_s == 900
    assert storm(speed=10).duration_s == storm().duration_s / 10
    assert s.values_at(600)[Quantity.CLOUD] == pytest.approx(0.08)


def test_scripts_are_steps_through_every_keyframe() -> None:
    script = storm_script(peak_cm=45)
    offsets = [t for t, _ in script]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert max(v for _, v in script) == 45 and script[-1][1] == 0
    assert all(a[1] != b[1] for a, b in itertools.pairwise(script))  # merged
    s = storm()
    for t, v in script:
        assert v == pytest.approx(s.value(Quantity.WATER, t), abs=1e-3)
    two_minutes = storm_script(duration_s=120)
    assert two_minutes[-1][0] == 120 and max(v for _, v in two_minutes) == 45
    pm = pollution_script()
    assert max(v for _, v in pm) == 120 and pm[0] == (0, 15)
    assert script_value(pm, -1) is None and script_value(pm, 0) == 15


def test_bad_scenarios_are_refused() -> None:
    with pytest.raises(ScenarioError):
        Track(Quantity.WATER, ())
    with pytest.raises(ScenarioError, match="go back"):
        Track(Quantity.WATER, ((10, 1), (5, 2)))
    with pytest.raises(ScenarioError, match="one track per quantity"):
        Scenario(name="x", description="", duration_s=1,
                 tracks=(Track(Quantity.WATER, ((0, 1),)), Track(Quantity.WATER, ((0, 2),))))
    with pytest.raises(ScenarioError):
        storm(peak_cm=-1)
    with pytest.raises(ScenarioError):
        storm().faster(0)
    with pytest.raises(ScenarioError):
        pollution_episode(pm10_ratio=0.5)
    with pytest.raises(ScenarioError, match="no pm25 track"):
        storm().script(Quantity.PM25)


def _world(hour_utc: int) -> tuple[World, ManualClock]:
    # Ho Chi Minh City is UTC+7: 05:00 UTC is noon there, 15:00 UTC is 22:00
    clock = ManualClock(datetime(2025, 6, 1, hour_utc, tzinfo=UTC))
    return World(clock=clock, seed=3), clock


def test_a_world_plays_a_storm_and_gets_its_sun_back() -> None:
    world, clock = _world(5)
    sunny = world.illuminance()
    episode = storm().fit(600)
    playback = apply_scenario(world, episode)
    assert playback.played == (Quantity.WATER, Quantity.CLOUD) and playback.skipped == ()
    assert playback.ends_at - playback.starts_at == timedelta(seconds=600)
    peak, darkest = 0.0, sunny
    for _ in range(0, 600, 5):
        clock.advance(5)
        peak = max(peak, world.water())
        darkest = min(darkest, world.illuminance())
    assert 44 < peak < 46
    assert darkest < 0.1 * sunny
    assert playback.over(world.now())
    assert world.water() < 0.5
    playback.restore(world)
    assert world.illuminance() > 0.9 * sunny


def test_a_storm_at_night_stays_dark() -> None:
    world, clock = _world(15)
    night = world.illuminance()
    apply_scenario(world, storm().fit(600))
    clock.advance(300)
    assert world.illuminance() <= night


def test_a_world_storm_drives_the_flood_alerts() -> None:
    world, clock = _world(5)
    apply_scenario(world, storm().fit(900), start=world.now() + timedelta(seconds=60))
    rules = example_rules()
    state = AlertState()
    types: list[str] = []
    for _ in range(0, 1800, 5):
        now = int(world.now().timestamp() * 1000)
        res = evaluate(now, samples=[(*WATER, now, round(world.water(), 1))], rules=rules,
                       state=state, poll_periods={WATER: 5})
        state = res.state
        types += [e.type for e in res.events]
        clock.advance(5)
    assert sorted(types) == sorted(["flood_rising", "flood_warning", "flood_alarm",
                                    "flood_rising_cleared", "flood_alarm_cleared",
                                    "flood_warning_cleared"])


def test_a_past_start_joins_the_storm_midway() -> None:
    world, _ = _world(5)
    episode = storm(lead_s=0, rise_s=600, plateau_s=600, fall_s=600)
    apply_scenario(world, episode, start=world.now() - timedelta(seconds=900))
    assert 44 < world.water() < 46


def test_a_world_plays_a_pollution_episode() -> None:
    world, clock = _world(5)
    playback = apply_scenario(world, pollution_episode(rise_s=600, plateau_s=600, fall_s=600))
    assert set(playback.played) == {Quantity.PM25, Quantity.PM10}
    assert world.pm25() < 30
    clock.advance(900)                            # on the plateau
    assert 110 < world.pm25() < 130
    assert 170 < world.pm10() < 215


def test_a_world_without_a_particulate_hook_says_so() -> None:
    class NoPm:
        def __init__(self, world: World) -> None:
            self._w = world

        def now(self) -> datetime:
            return self._w.now()

    world, _ = _world(5)
    with pytest.raises(ScenarioError, match="set_pm25_script"):
        apply_scenario(NoPm(world), pollution_episode())  # type: ignore[arg-type]
    playback = apply_scenario(NoPm(world), pollution_episode(),  # type: ignore[arg-type]
                              skip_unsupported=True)
    assert playback.played == () and set(playback.skipped) == {Quantity.PM25, Quantity.PM10}
    with pytest.raises(ScenarioError, match="aware"):
        apply_scenario(world, storm(), start=datetime(2025, 6, 1))
