"""The `alerts:` section: what loads, every problem named with its path, the warnings, and the
lighting action helpers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from policies.alerts import (
    ActiveAlert,
    AlertConfigError,
    LightingAction,
    MeanRule,
    Pattern,
    RuleKind,
    Severity,
    StaleRule,
    ThresholdRule,
    action_level,
    lighting_demands,
    load_alerts,
    next_change_ms,
    parse_alerts,
    validate,
)
from policies.alerts.model import parse_duration

OK = {"name": "flood_warning", "kind": "threshold", "point": "water-1/water_level",
      "above": 25, "clear": 20}


def problems(*rules: dict[str, Any], **section: Any) -> list[tuple[str, str]]:
    with pytest.raises(AlertConfigError) as info:
        parse_alerts({"rules": list(rules), **section})
    return info.value.problems


def test_a_rule_loads_with_its_defaults() -> None:
    rules = parse_alerts({"rules": [OK]})
    [rule] = rules.rules
    assert isinstance(rule, ThresholdRule)
    assert rule.rule_kind is RuleKind.THRESHOLD and rule.severity is Severity.WARNING
    assert (rule.threshold, rule.clear_level, rule.hold, rule.min_active) == (25, 20, 0, 0)
    assert rules.points == {("water-1", "water_level")}
    with pytest.raises(ValueError, match="frozen"):
        rule.hold = 5


def test_empty_and_missing_sections_load() -> None:
    assert parse_alerts(None).rules == ()
    assert parse_alerts({}).rules == ()


def test_points_expand_to_one_instance_each() -> None:
    rules = parse_alerts({"rules": [{**OK, "point": None,
                                     "points": ["w1/level", {"device": "w2", "point": "level"}]}]})
    assert [(r.name, str(p)) for r, p in rules.instances] == [
        ("flood_warning", "w1/level"), ("flood_warning", "w2/level")]


@pytest.mark.parametrize(("text", "seconds"), [
    (90, 90), (1.5, 1.5), ("90", 90), ("90s", 90), ("10m", 600), ("10 min", 600),
    ("1h", 3600), ("1h30m", 5400), ("6 h", 21600), ("2d", 172800), ("1.5h", 5400),
    ("250ms", 0.25)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10 parsecs", "m", "", "1h 30", "-5m", True])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(("rule", "path", "fragment"), [
    ({**OK, "clear": 30}, "rules[0].clear", "30 is above the threshold 25"),
    ({**OK, "above": None, "below": 5, "clear": 2}, "rules[0].clear", "below the threshold 5"),
    ({**OK, "above": None}, "rules[0].above", "`above: LEVEL` or `below: LEVEL`"),
    ({**OK, "below": 3}, "rules[0].below", "not both"),
    ({**OK, "kind": "thresh"}, "rules[0]", "kind 'thresh' is not one of threshold, rate"),
    ({k: v for k, v in OK.items() if k != "kind"}, "rules[0]", "`kind:` is missing"),
    ({**OK, "severity": "panic"}, "rules[0].severity", "'panic' is not one of info"),
    ({**OK, "hold": "soon"}, "rules[0].hold", "not a duration"),
    ({**OK, "hold": -1}, "rules[0].hold", "greater than or equal to 0"),
    ({**OK, "colour": "red"}, "rules[0].colour", "unknown key"),
    ({**OK, "point": None}, "rules[0].point", "required"),
    ({**OK, "points": ["a/b"]}, "rules[0].points", "not both"),
    ({**OK, "point": "water-1"}, "rules[0].point", "write device/point"),
    ({**OK, "name": "flood warning"}, "rules[0].name", "not a valid name"),
    ({**OK, "name": "flood_cleared"}, "rules[0].name", "ends with '_cleared'"),
    ({**OK, "above": float("nan")}, "rules[0].above", "finite"),
    ({"name": "r", "kind": "rate", "point": "a/b", "rise": 5}, "rules[0].window", "required"),
    ({"name": "r", "kind": "rate", "point": "a/b", "rise": 5, "window": 0},
     "rules[0].window", "greater than 0"),
    ({"name": "r", "kind": "rate", "point": "a/b", "rise": 5, "window": "10m", "clear": 6},
     "rules[0].clear", "6 is above `rise:` 5"),
    ({"name": "r", "kind": "rate", "point": "a/b", "rise": -5, "window": "10m"},
     "rules[0].rise", "greater than 0"),
    ({"name": "r", "kind": "rate", "point": "a/b", "window": "10m"}, "rules[0].rise",
     "`rise: AMOUNT` or `fall: AMOUNT`"),
    ({"name": "r", "kind": "mean", "point": "a/b", "above": 5, "window": "1h",
      "coverage": 2}, "rules[0].coverage", "less than or equal to 1"),
    ({"name": "s", "kind": "stale", "point": "a/b"}, "rules[0].silent_polls", "needs"),
    ({"name": "s", "kind": "stale", "point": "a/b", "silent": "1m", "silent_polls": 5},
     "rules[0].silent", "not both"),
    ({"name": "s", "kind": "stale", "point": "a/b", "silent": "1m", "tolerance": 1},
     "rules[0].tolerance", "only used with `unchanged:`"),
    ({"name": "s", "kind": "stale", "point": "a/b", "silent": "1m", "hold": 5},
     "rules[0].hold", "unknown key"),
    ({**OK, "hours": {"from": "22:00", "to": "22:00"}}, "rules[0].hours.to", "same time"),
    ({**OK, "hours": {"from": "25:00", "to": "06:00"}}, "rules[0].hours.from",
     "not a time of day"),
    ({**OK, "lighting": {"group": "g", "on_s": 2}}, "rules[0].lighting.on_s",
     "only used with `pattern: flash`"),
    ({**OK, "lighting": {"group": "g", "pattern": "flash", "off_level": 100}},
     "rules[0].lighting.off_level", "not below level 100"),
    ({**OK, "lighting": {"group": "g", "pattern": "flash", "on_s": 0.1}},
     "rules[0].lighting.on_s", "greater than or equal to 0.5"),
    ({**OK, "lighting": {"group": "g", "level": "bright"}}, "rules[0].lighting.level",
     "not a level"),
    ({**OK, "lighting": {"level": 100}}, "rules[0].lighting.group", "required"),
])
def test_problems_name_their_path(rule: dict[str, Any], path: str, fragment: str) -> None:
    rule = {k: v for k, v in rule.items() if v is not None}
    found = problems(OK, rule, timezone="UTC")
    shifted = path.replace("rules[0]", "rules[1]", 1)
    assert any(p == shifted and fragment in m for p, m in found), found


def test_every_problem_at_once() -> None:
    found = problems({**OK, "clear": 30}, {**OK, "name": "b", "hold": "x"},
                     {**OK, "name": "c", "kind": "nope"})
    assert [p for p, _ in found] == ["rules[0].clear", "rules[1].hold", "rules[2]"]


def test_cross_rule_problems() -> None:
    found = problems(OK, OK, {**OK, "name": "night", "hours": "22:00-06:00"})
    assert found == [
        ("rules[1].name", "'flood_warning' is already the name of rules[0]: one rule per "
                          "event type (use `points:` to watch several points)"),
        ("rules[2].hours", "local hours need a time zone: set gateway.location.timezone or "
                           "alerts.timezone")]


def test_sections_that_are_not_mappings() -> None:
    with pytest.raises(AlertConfigError, match=r"alerts: \{rules: \[\.\.\.\]\}"):
        parse_alerts([OK])  # type: ignore[arg-type]
    with pytest.raises(AlertConfigError, match="mapping"):
        parse_alerts("rules")  # type: ignore[arg-type]
    assert problems(timezone="Mars/Olympus") == [
        ("timezone", "unknown time zone 'Mars/Olympus' (use an IANA name like "
                      "Europe/Paris)")]
    assert problems(rules={"a": 1})[0][0] == "rules"


def test_the_gateway_s_zone_is_used_unless_the_section_names_one() -> None:
    r = parse_alerts({"rules": [{**OK, "hours": "22:00-06:00"}]}, timezone="Asia/Ho_Chi_Minh")
    assert r.timezone == "Asia/Ho_Chi_Minh"
    r = parse_alerts({"timezone": "Europe/Oslo", "rules": []}, timezone="Asia/Ho_Chi_Minh")
    assert r.timezone == "Europe/Oslo"


def test_yaml_sexagesimal_hours_are_read_as_times() -> None:
    # unquoted 22:00 in YAML 1.1 arrives as the integer 1320
    r = parse_alerts({"rules": [{**OK, "hours": {"from": 1320, "to": 360}}]}, timezone="UTC")
    [rule] = r.rules
    assert isinstance(rule, ThresholdRule) and rule.hours is not None
    assert (rule.hours.start, rule.hours.end) == (dt.time(22), dt.time(6))
    assert rule.hours.contains(dt.time(23, 59)) and rule.hours.contains(dt.time(0))
    assert not rule.hours.contains(dt.time(6)) and rule.hours.contains(dt.time(22))


def test_warnings() -> None:
    _, warnings = load_alerts({"rules": [
        {**OK, "clear": None},
        {"name": "r", "kind": "rate", "point": "a/b", "rise": 5, "window": "10m",
         "hold": "15m"},
        {"name": "m", "kind": "mean", "point": "a/b", "above": 5, "clear": 4, "window": "1h",
         "coverage": 0},
        {"name": "s", "kind": "stale", "point": "a/b", "silent": "1h", "unchanged": "30m"},
        {**OK, "name": "lit", "lighting": {"group": "nowhere"}},
    ]}, points={("water-1", "water_level")}, groups=["main-street"])
    got = {(w.path, w.message.split(":")[0]) for w in warnings}
    assert ("rules[0].clear", "no hysteresis") in got
    assert ("rules[1].hold", "the hold (15 min) is longer than the window (10 min)") in got
    assert ("rules[2].coverage", "0") in got
    assert ("rules[3].unchanged", "not longer than `silent`") in got
    assert ("rules[1].point", "a/b is not a configured point") in got
    assert ("rules[4].lighting.group", "no lighting group 'nowhere' (groups") in got
    assert str(warnings[0]).startswith("rules[")
    assert validate(parse_alerts({"rules": [OK]})) == []


def test_kinds_parse_to_their_models() -> None:
    r = parse_alerts({"rules": [
        {"name": "m", "kind": "mean", "point": "a/b", "below": 5, "window": "1h"},
        {"name": "s", "kind": "stale", "point": "a/b", "unchanged": "6h"}]})
    m, s = r.rules
    assert isinstance(m, MeanRule) and m.window == 3600 and m.coverage == 0.75
    assert m.clear_level == 5 and not m.worse_up
    assert isinstance(s, StaleRule) and s.unchanged == 21600


# ----------------------------------------------------------------------------- lighting
FLASH = LightingAction(group="underpass", pattern=Pattern.FLASH, level=100, off_level=10,
                       on_s=1, off_s=2)


def test_action_level_steady_and_flash() -> None:
    steady = LightingAction(group="underpass", level=80)
    assert action_level(steady, now_ms=5, since_ms=0) == 80
    assert next_change_ms(steady, now_ms=5, since_ms=0) is None
    since = 1_000_000
    levels = [action_level(FLASH, now_ms=since + t, since_ms=since)
              for t in (0, 999, 1000, 2999, 3000, 3999, 4000)]
    assert levels == [100, 100, 10, 10, 100, 100, 10]
    assert next_change_ms(FLASH, now_ms=since + 200, since_ms=since) == since + 1000
    assert next_change_ms(FLASH, now_ms=since + 1500, since_ms=since) == since + 3000
    assert next_change_ms(FLASH, now_ms=since - 10, since_ms=since) == since


def _alert(rule: str, severity: Severity, fired_at: int,
           action: LightingAction | None) -> ActiveAlert:
    return ActiveAlert(rule=rule, kind=RuleKind.THRESHOLD, severity=severity, device="water-1",
                       point="water_level", since=fired_at, fired_at=fired_at, value=1.0,
                       peak=1.0, values={}, reason="", lighting=action)


def test_lighting_demands_one_per_group_strongest_wins() -> None:
    full = LightingAction(group="underpass", level=100, priority=500)
    flash = FLASH.model_copy(update={"priority": 600})
    other = LightingAction(group="main-street", level=100)
    active = [_alert("flood_warning", Severity.WARNING, 1000, full),
              _alert("flood_alarm", Severity.ALARM, 5000, flash),
              _alert("heat", Severity.WARNING, 0, None),
              _alert("x", Severity.INFO, 0, other)]
    [main, underpass] = lighting_demands(active, now_ms=6500)
    assert (underpass.group, underpass.rule, underpass.level) == ("underpass", "flood_alarm", 10)
    assert underpass.next_change_ms == 8000 and underpass.override_id == "alert:flood_alarm:water-1"
    assert (main.group, main.level, main.next_change_ms) == ("main-street", 100, None)
    # equal priorities: the worse severity, then the first fired
    tie = [_alert("b", Severity.WARNING, 10, full), _alert("a", Severity.ALARM, 20, full),
           _alert("c", Severity.ALARM, 5, full)]
    assert lighting_demands(tie, now_ms=30)[0].rule == "c"


def test_a_copy_recomputes_its_derived_tables() -> None:
    rules = parse_alerts({"rules": [OK]})
    assert rules.points == {("water-1", "water_level")}
    empty = rules.model_copy(update={"rules": ()})
    assert empty.points == frozenset() and empty.instances == () and empty.fingerprints == {}
    assert rules.points == {("water-1", "water_level")}
