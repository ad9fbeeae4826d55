"""The issue's example program, resolved every 10 minutes through a whole year.

"group main-street: on at sunset - 10 min at 100 %, 23:00 dim to 60 %, 01:00 to 40 %, 05:00
back to 80 %, off at sunrise + 10 min; on weekends and on listed holidays hold 80 % until 01:00;
never below 20 % while on" (examples/lighting-main-street.yaml).

The expected table is built here from the operator's words and the sun times of
:func:`sun_times` (itself checked against the USNO almanac algorithm in test_lighting_astro),
not from the schedule module under test. Paris covers both DST changes; Ho Chi Minh City the
site of examples/street.yaml.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.lighting import (
    LightingRules,
    Location,
    ResolverState,
    Source,
    parse_lighting,
    resolve,
    sun_times,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lighting-main-street.yaml"
YEAR = 2026
# the example's holidays, as the nights they name (a date = the night that begins that evening)
HOLIDAYS = {dt.date(y, m, d) for y in (YEAR - 1, YEAR)
            for m, d in ((1, 1), (5, 1), (9, 2), (12, 24), (12, 25), (12, 31))}
HOLIDAYS |= {dt.date(YEAR, 2, 16) + dt.timedelta(days=i) for i in range(5)}
WEEKEND_NIGHTS = {4, 5}   # Friday->Saturday and Saturday->Sunday
ENTRY = "weekend or holiday"

SITES = {
    "paris": Location(lat=48.8566, lon=2.3522, timezone="Europe/Paris"),
    "ho-chi-minh-city": Location(lat=10.7769, lon=106.7009, timezone="Asia/Ho_Chi_Minh"),
}


def example_raw() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert set(data) == {"lighting"}, "the example holds the lighting section only"
    raw: dict[str, Any] = data["lighting"]
    return raw


Entry = tuple[dt.datetime, float, str]


def expected_night(loc: Location, night: dt.date) -> list[Entry]:
    """The night's table, straight from the operator's sentence."""
    tz = loc.tz
    evening, morning = sun_times(loc, night), sun_times(loc, night + dt.timedelta(days=1))
    assert evening.sunset is not None and morning.sunrise is not None

    def at(day: dt.date, hh: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hh), tzinfo=tz)

    nxt = night + dt.timedelta(days=1)
    on = evening.sunset - dt.timedelta(minutes=10)
    off = morning.sunrise + dt.timedelta(minutes=10)
    if night.weekday() in WEEKEND_NIGHTS or night in HOLIDAYS:
        tag = f" ({ENTRY})"
        return [(on, 80, f"astro sunset-10m{tag}"),
                (at(nxt, 1), 40, f"program step 01:00{tag}"),
                (at(nxt, 5), 80, f"program step 05:00{tag}"),
                (off, 0, f"astro sunrise+10m{tag}")]
    return [(on, 100, "astro sunset-10m"),
            (at(night, 23), 60, "program step 23:00"),
            (at(nxt, 1), 40, "program step 01:00"),
            (at(nxt, 5), 80, "program step 05:00"),
            (off, 0, "astro sunrise+10m")]


@pytest.fixture(scope="module")
def example_rules() -> dict[str, LightingRules]:
    raw = example_raw()
    return {name: parse_lighting(raw, location=loc) for name, loc in SITES.items()}


@pytest.mark.parametrize("site", list(SITES))
def test_example_program_every_10_minutes_for_a_year(site: str,
                                                     example_rules: dict[str, LightingRules]
                                                     ) -> None:
    loc, rules = SITES[site], example_rules[site]
    table: list[Entry] = []
    night = dt.date(YEAR - 1, 12, 31)
    while night <= dt.date(YEAR, 12, 31):
        table.extend(expected_night(loc, night))
        night += dt.timedelta(days=1)
    instants = [e[0] for e in table]
    assert instants == sorted(instants), "the operator's steps keep their order all year here"
    shortest = min(b - a for a, b in itertools.pairwise(instants))
    assert shortest > dt.timedelta(minutes=10), "a 10-minute grid sees every step here"

    start = dt.datetime(YEAR, 1, 1, 12, tzinfo=loc.tz).astimezone(dt.UTC)
    end = dt.datetime(YEAR + 1, 1, 1, 12, tzinfo=loc.tz).astimezone(dt.UTC)
    state = ResolverState()
    now = start
    seen: list[tuple[float, str]] = []
    mismatches: list[str] = []
    while now < end:
        res = resolve(now, clock_trusted=True, values={}, rules=rules, overrides=(),
                      state=state)
        state = res.state
        got = res.groups["main-street"]
        _, level, reason = table[bisect.bisect_right(instants, now) - 1]
        if (got.level, got.reason) != (level, reason) and len(mismatches) < 5:
            local = now.astimezone(loc.tz).isoformat()
            mismatches.append(f"{local}: got {got.level} {got.reason!r}, want {level} "
                              f"{reason!r}")
        assert got.source is Source.PROGRAM
        assert got.level == 0 or got.level >= 20          # never below 20 % while on
        if not seen or seen[-1] != (got.level, got.reason):
            seen.append((got.level, got.reason))
        now += dt.timedelta(minutes=10)
    assert not mismatches, "\n".join(mismatches)

    # no step missed: every step of every night shows up, in order
    first = bisect.bisect_right(instants, start) - 1
    last = bisect.bisect_right(instants, end - dt.timedelta(minutes=10)) - 1
    want = [(lvl, why) for _, lvl, why in table[first:last + 1]]
    assert seen == want
    weekdays = sum(1 for _, why in seen if why == "program step 23:00")
    assert 240 < weekdays < 270   # 365 nights, minus Fridays, Saturdays and holidays


def test_the_two_dst_nights_in_paris(example_rules: dict[str, LightingRules]) -> None:
    loc, rules = SITES["paris"], example_rules["paris"]
    for night in (dt.date(2026, 3, 28), dt.date(2026, 10, 24)):   # Saturday nights
        for when, level, reason in expected_night(loc, night):
            state = ResolverState()
            for probe, want in ((when - dt.timedelta(seconds=1), None), (when, level)):
                res = resolve(probe, clock_trusted=True, values={}, rules=rules, overrides=(),
                              state=state)
                got = res.groups["main-street"]
                if want is None:
                    assert got.reason != reason, f"{reason} fired early on {night}"
                else:
                    assert (got.level, got.reason) == (level, reason)
