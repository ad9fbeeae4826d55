"""Reading the `lighting:` section: what operators write, the errors they get, the warnings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.lighting import (
    AstroEvent,
    LightingConfigError,
    LightingRules,
    Location,
    load_lighting,
    parse_lighting,
    validate,
)
from policies.lighting.model import DateSpec, Weekday

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lighting-main-street.yaml"
HCMC = {"lat": 10.7769, "lon": 106.7009, "timezone": "Asia/Ho_Chi_Minh"}
OSLO = Location(lat=59.9139, lon=10.7522, timezone="Europe/Oslo")
TROMSO = Location(lat=69.6492, lon=18.9553, timezone="Europe/Oslo")
OUT = [{"device": "lamp-1", "point": "dim_level", "watts": 100}]


def problems(raw: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(LightingConfigError) as info:
        parse_lighting(raw, location=kw.pop("location", HCMC), **kw)
    assert isinstance(info.value, ValueError)
    return dict(info.value.problems)


def one_group(program: Any, **group: Any) -> dict[str, Any]:
    return {"groups": [{"name": "g", "outputs": OUT, "program": program, **group}]}


def test_the_example_reads_as_the_operator_wrote_it() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())["lighting"]
    rules, warnings = load_lighting(raw, location=HCMC, year=2026)
    assert warnings == []
    program = rules.programs["main-street"]
    assert [(s.at.label, s.level) for s in program.steps] == [
        ("sunset-10m", 100), ("23:00", 60), ("01:00", 40), ("05:00", 80), ("sunrise+10m", 0)]
    entry = program.calendar[0]
    assert entry.nights == (Weekday.FRI, Weekday.SAT) and entry.holidays
    assert [(s.at.label, s.level) for s in entry.steps] == [
        ("sunset-10m", 80), ("01:00", 40), ("05:00", 80), ("sunrise+10m", 0)]
    group = rules.group("main-street")
    assert group.limits.min_level == 20 and group.failsafe_level == 100
    assert group.rated_w == 360 and rules.rated_watts() == {"main-street": 360}
    assert group.illuminance is not None and group.illuminance.hold_s == 120
    assert group.motion is not None and group.motion.points[0].key == ("pir-1", "motion")
    assert rules.sensor_points() == {("env-1", "illuminance"), ("pir-1", "motion")}
    assert rules.failsafe.entry_delay_s == 120
    assert rules.location == Location.model_validate(HCMC)
    assert [h.label for h in rules.holidays][-1] == "2026-02-16..2026-02-20"


def test_yaml_idioms_are_read_as_meant() -> None:
    text = """
    groups:
      - name: g
        outputs: [{gpio: relay-1}]
        program:
          steps:
            - {at: sunset - 10 min, level: on}
            - {at: 23:00, level: "60%"}
            - {at: 00:30, level: 40}
            - {at: {event: civil_dawn, offset_min: 5}, level: off}
    """
    rules = parse_lighting(yaml.safe_load(text), location=HCMC)
    program = rules.program_of(rules.groups[0])
    assert [(s.at.label, s.level) for s in program.steps] == [
        ("sunset-10m", 100), ("23:00", 60), ("00:30", 40), ("civil_dawn+5m", 0)]
    assert program.steps[3].at.event is AstroEvent.CIVIL_DAWN
    assert rules.groups[0].outputs[0].key == "gpio:relay-1"


@pytest.mark.parametrize(("spec", "night", "matches"), [
    ("12-24", dt.date(2031, 12, 24), True),
    ({"from": "12-24", "to": "01-01"}, dt.date(2027, 1, 1), True),
    ({"from": "12-24", "to": "01-01"}, dt.date(2027, 1, 2), False),
    ({"from": dt.date(2026, 7, 10), "to": "2026-07-14"}, dt.date(2026, 7, 14), True),
    (dt.date(2026, 7, 10), dt.date(2027, 7, 10), False),
])
def test_date_specs(spec: Any, night: dt.date, matches: bool) -> None:
    assert DateSpec.model_validate(spec).matches(night) is matches


def test_every_problem_is_named_with_its_path() -> None:
    raw = {
        "programs": {"p": {"steps": [{"at": "sunset", "level": 100},
                                     {"at": "25:00", "level": 50},
                                     {"at": "sunrise", "level": 150}]}},
        "groups": [{"name": "g", "outputs": OUT, "program": "p", "colour": "red",
                    "limits": {"min_level": 50, "max_level": 40}}],
    }
    got = problems(raw)
    assert got == {
        "programs.p.steps[1].at": "'25:00' is not a time of day (write HH:MM, 00:00..23:59)",
        "programs.p.steps[2].level": "Input should be less than or equal to 100 (got 150)",
        "groups[0].colour": "unknown key (check its spelling against docs/lighting-rules.md)",
        "groups[0].limits": "min_level 50 is above max_level 40",
    }


def test_inline_program_errors_point_into_the_group() -> None:
    got = problems(one_group({"steps": [{"at": "sunset", "level": 100},
                                        {"at": "23:00", "level": 60},
                                        {"at": "sunsrise", "level": 0}]}))
    assert got == {"groups[0].program.steps[2].at":
                   "'sunsrise' is not an event (one of sunset, sunrise, civil_dusk, "
                   "civil_dawn)"}


def test_cross_checks() -> None:
    raw = {
        "programs": {"night": {"steps": [{"at": "sunset", "level": 100},
                                         {"at": "01:00", "level": 40},
                                         {"at": "23:00", "level": 60},
                                         {"at": "sunrise", "level": 0},
                                         {"at": "civil_dusk", "level": 0}]}},
        "groups": [{"name": "a", "outputs": OUT, "program": "nigth"},
                   {"name": "a", "outputs": OUT, "program": "night"}],
    }
    got = problems(raw)
    assert got["groups[0].program"] == "no program named 'nigth' (programs: night)"
    assert got["groups[1].name"] == "group name 'a' is used twice"
    assert got["groups[1].outputs[0]"] == "lamp-1/dim_level is already driven by group a"
    assert got["programs.night.steps[2].at"].startswith(
        "23:00 comes before 01:00 (steps[1]) in the night; a night runs from 12:00 to 12:00")
    assert got["programs.night.steps[4].at"].startswith(
        "civil_dusk is an evening event but comes after sunrise (steps[3])")


def test_overlapping_calendar_entries_are_errors() -> None:
    steps = [{"at": "sunset", "level": 80}, {"at": "sunrise", "level": 0}]
    program = {"steps": steps, "calendar": [
        {"name": "weekend", "nights": ["Friday", "sat"], "holidays": True, "steps": steps},
        {"name": "party", "nights": ["sat"], "holidays": True, "steps": steps,
         "dates": [{"from": "2026-12-30", "to": "2027-01-02"}]},
        {"name": "new year", "dates": ["12-31"], "steps": steps},
        {"name": "festival", "dates": [{"from": "2026-07-10", "to": "2026-07-14"}],
         "steps": steps},
    ]}
    got = problems(one_group(program))
    base = "groups[0].program.calendar"
    assert got == {
        f"{base}[1].nights": "sat also in weekend: a night can follow only one entry",
        f"{base}[1].holidays": "weekend already takes the holidays",
        f"{base}[2].dates[0]": "12-31 overlaps 2026-12-30..2027-01-02 of party (the night of "
                               "2026-12-31): a night can follow only one entry",
    }


def test_structural_errors() -> None:
    assert problems(one_group({"steps": []})) == {
        "groups[0].program.steps": "Tuple should have at least 1 item after validation, not 0"}
    assert problems(one_group("p") | {"programs": {"p": {"steps": [
        {"at": "sunset", "level": 1}]}}}, location=None) == {
        "location": "the lighting rules need the gateway's location (lat, lon, timezone): "
                    "set gateway.location"}
    got = problems(one_group({"steps": [{"at": "sunset", "level": 1}]},
                             outputs=[{"device": "lamp-1"}, {"gpio": 4, "device": "x",
                                                             "point": "y"}],
                             illuminance={"device": "e", "point": "l", "on_below": 30,
                                          "off_above": 10},
                             thresholds=[{"device": "w", "point": "l", "level": 100}]))
    assert got == {
        "groups[0].outputs[0]": "a device output needs both `device` and `point`",
        "groups[0].outputs[1]": "an output is either `device` + `point` or `gpio`, not both",
        "groups[0].illuminance": "off_above (10) must not be below on_below (30)",
        "groups[0].thresholds[0]": "give exactly one of `above` or `below`",
    }
    assert problems([1, 2]) == {"": "the lighting section must be a mapping (key: value)"}
    with pytest.raises(LightingConfigError, match="timezone: unknown time zone 'Mars/Base'"):
        parse_lighting({}, location={"lat": 1, "lon": 2, "timezone": "Mars/Base"})


def test_the_gateway_location_object_is_accepted() -> None:
    from gateway.config import Location as GatewayLocation  # the agent's own model

    rules = parse_lighting({}, location=GatewayLocation(lat=1.5, lon=2.5, timezone="UTC"))
    assert rules.location == Location(lat=1.5, lon=2.5, timezone="UTC")


def test_an_empty_section_is_fine() -> None:
    rules = parse_lighting(None)
    assert rules == LightingRules() and validate(rules, year=2026) == []


# -------------------------------------------------------------------------------- warnings
def _example(location: Location) -> LightingRules:
    return parse_lighting(yaml.safe_load(EXAMPLE.read_text())["lighting"], location=location)


def test_a_fixed_time_after_sunrise_in_summer_is_a_warning() -> None:
    warnings = {str(w) for w in validate(_example(OSLO), year=2026)}
    # weekday nights only: Friday and Saturday nights follow the calendar entry
    assert ("programs.main-street.steps[3].at: 05:00 falls after sunrise+10m on 56 nights "
            "(first 2026-05-11, last 2026-07-27): the step is skipped on those nights"
            ) in warnings
    assert ("programs.main-street.steps[3].at: 05:00 falls after sunrise on 5 nights "
            "(2026-05-07, 2026-05-10, 2026-07-28..2026-07-30): the lamps burn in daylight then"
            ) in warnings


def test_polar_sites_get_told_how_the_program_behaves() -> None:
    text = "\n".join(str(w) for w in validate(_example(TROMSO), year=2026))
    assert "location: polar day on 68 nights (2026-05-18..2026-07-24)" in text
    assert ("location: polar night on 50 nights (2026-01-01..2026-01-14, "
            "2026-11-26..2026-12-31)") in text
    assert "23:00 falls before sunset-10m on 58 nights" in text


def test_short_burns_fixed_on_times_in_daylight_and_a_dark_failsafe_are_warnings() -> None:
    raw = {
        "programs": {
            "evening": {"steps": [{"at": "18:00", "level": 100}, {"at": "sunset", "level": 0}]},
            "spare": {"steps": [{"at": "sunset", "level": 100}, {"at": "sunrise", "level": 0}],
                      "calendar": [{"holidays": True, "steps": [{"at": "sunset", "level": 1}]}]},
        },
        "groups": [{"name": "g", "outputs": [{"gpio": 1}], "program": "evening",
                    "min_burn_minutes": 30, "failsafe_level": 0}],
    }
    got = {w.path: w.message for w in validate(parse_lighting(raw, location=HCMC), year=2026)}
    assert got["programs.spare"] == "not used by any group"
    assert got["groups[0].failsafe_level"] == (
        "0 leaves the street dark whenever the clock is untrusted (and the group has no "
        "illuminance sensor to follow)")
    assert got["groups[0].outputs"] == "no output has `watts`: energy figures are 0"
    # Ho Chi Minh City: the sun sets after 18:00 from February to September
    assert got["programs.evening.steps[0].at"] == (
        "18:00 falls before sunset on 206 nights (2026-02-12..2026-09-05): the lamps burn in "
        "daylight then")
    assert got["programs.evening.steps"].startswith(
        "group g would be lit for less than min_burn_minutes (30) on ")
    assert "it is kept on for 30 min" in got["programs.evening.steps"]


def test_a_countrys_holidays_follow_the_lunar_calendar_every_year() -> None:
    """`holidays: [{country: VN}]` gives Tết in every year (2026-02-17, 2027-02-06)."""
    import datetime as dt

    from policies.lighting import parse_lighting
    from policies.lighting.schedule import select_steps

    raw = {"holidays": [{"country": "vn"}, "12-24"],
           "programs": {"p": {"steps": [{"at": "18:00", "level": 100},
                                        {"at": "06:00", "level": "off"}],
                              "calendar": [{"name": "holiday", "holidays": True,
                                            "steps": [{"at": "18:00", "level": 80},
                                                      {"at": "06:00", "level": "off"}]}]}},
           "groups": [{"name": "g", "program": "p", "outputs": [{"gpio": "relay-1"}]}]}
    from policies.lighting import Location

    rules = parse_lighting(raw, location=Location(lat=10.78, lon=106.7,
                                                  timezone="Asia/Ho_Chi_Minh"))
    program = rules.programs["p"]
    for night in (dt.date(2026, 2, 17), dt.date(2027, 2, 6), dt.date(2027, 9, 2),
                  dt.date(2026, 12, 24)):
        assert select_steps(program, rules.holidays, night)[0] == 0, night
    assert select_steps(program, rules.holidays, dt.date(2027, 3, 10))[0] is None
    assert rules.holidays[0].label == "VN public holidays"


@pytest.mark.parametrize(("spec", "message"), [
    ({"country": "XX"}, "'XX' is not a country the holidays library knows"),
    ({"country": "DE", "subdivision": "ZZ"}, "'ZZ' is not a subdivision of DE"),
    ({"country": "VN", "year": 2026}, "unknown key(s) year"),
])
def test_an_unknown_country_is_a_located_error(spec: dict[str, object], message: str) -> None:
    from policies.lighting import LightingConfigError, parse_lighting

    raw = {"holidays": [spec], "programs": {"p": {"steps": [{"at": "18:00", "level": 100}]}},
           "groups": [{"name": "g", "program": "p", "outputs": [{"gpio": "relay-1"}]}]}
    with pytest.raises(LightingConfigError) as info:
        parse_lighting(raw, location=None)
    assert any(p == "holidays[0]" and message in m for p, m in info.value.problems), \
        info.value.problems
