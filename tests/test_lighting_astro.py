"""Sun times from policies.lighting.astro against an independent reference, and polar states.

Reference: the sunrise/sunset algorithm of the *Almanac for Computers* (Nautical Almanac
Office, United States Naval Observatory, 1990), as published by Ed Williams
(https://edwilliams.org/sunrise_sunset_algorithm.htm). It is a different method from the NOAA
equations astral implements (low-precision solar coordinates, no equation-of-time term of its
own), and is implemented here from that text alone, so the two agree only if both are right.
Its stated accuracy is about a minute; we require agreement within 2 minutes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from zoneinfo import ZoneInfo

import pytest

from policies.lighting.astro import SunState, solar_night, sun_times
from policies.lighting.model import AstroEvent, Location

OFFICIAL = 90.0 + 50.0 / 60.0   # zenith at sunrise/sunset: refraction + the sun's radius
CIVIL = 96.0


def _sin(d: float) -> float:
    return math.sin(math.radians(d))


def _cos(d: float) -> float:
    return math.cos(math.radians(d))


def usno(day: dt.date, lat: float, lon: float, tz: str, *, rising: bool,
         zenith: float = OFFICIAL) -> dt.datetime | None:
    """The Almanac for Computers (1990) algorithm, step by step; None when the sun does not
    cross `zenith` that day."""
    n = day.timetuple().tm_yday                                    # 1. day of the year
    lng_hour = lon / 15.0                                          # 2. approximate time
    t = n + ((6.0 if rising else 18.0) - lng_hour) / 24.0
    m = 0.9856 * t - 3.289                                         # 3. mean anomaly
    true_long = (m + 1.916 * _sin(m) + 0.020 * _sin(2 * m) + 282.634) % 360.0   # 4.
    ra = math.degrees(math.atan(0.91764 * math.tan(math.radians(true_long)))) % 360.0  # 5a.
    ra += math.floor(true_long / 90.0) * 90.0 - math.floor(ra / 90.0) * 90.0        # 5b.
    ra /= 15.0                                                                        # 5c.
    sin_dec = 0.39782 * _sin(true_long)                            # 6. declination
    cos_dec = math.cos(math.asin(sin_dec))
    cos_h = (_cos(zenith) - sin_dec * _sin(lat)) / (cos_dec * _cos(lat))   # 7a. hour angle
    if not -1.0 <= cos_h <= 1.0:
        return None
    h = math.degrees(math.acos(cos_h))                             # 7b.
    h = (360.0 - h if rising else h) / 15.0
    local_mean = h + ra - 0.06571 * t - 6.622                      # 8. local mean time
    ut = (local_mean - lng_hour) % 24.0                            # 9. to UTC
    zone = ZoneInfo(tz)
    at = (dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
          + dt.timedelta(hours=ut)).astimezone(zone)
    # the UTC clock time belongs to the local day asked for: fix the date if it slipped
    if at.date() != day:
        at += dt.timedelta(days=1 if at.date() < day else -1)
    return at.astimezone(zone)


CITIES = {
    "Paris": Location(lat=48.8566, lon=2.3522, timezone="Europe/Paris"),
    "New York": Location(lat=40.7128, lon=-74.0060, timezone="America/New_York"),
    "Sydney": Location(lat=-33.8688, lon=151.2093, timezone="Australia/Sydney"),
    "Ho Chi Minh City": Location(lat=10.7769, lon=106.7009, timezone="Asia/Ho_Chi_Minh"),
    "Reykjavik": Location(lat=64.1466, lon=-21.9426, timezone="Atlantic/Reykjavik"),
}
DATES = [dt.date(2026, 3, 20), dt.date(2026, 6, 21), dt.date(2026, 9, 23),
         dt.date(2026, 12, 21), dt.date(2026, 10, 25)]
TOLERANCE = dt.timedelta(minutes=2)


@pytest.mark.parametrize("city", list(CITIES))
@pytest.mark.parametrize("day", DATES, ids=str)
def test_sun_times_match_the_almanac_for_computers(city: str, day: dt.date) -> None:
    loc = CITIES[city]
    got = sun_times(loc, day)
    cases = [
        ("sunrise", got.sunrise, usno(day, loc.lat, loc.lon, loc.timezone, rising=True)),
        ("sunset", got.sunset, usno(day, loc.lat, loc.lon, loc.timezone, rising=False)),
        ("civil dawn", got.civil_dawn,
         usno(day, loc.lat, loc.lon, loc.timezone, rising=True, zenith=CIVIL)),
        ("civil dusk", got.civil_dusk,
         usno(day, loc.lat, loc.lon, loc.timezone, rising=False, zenith=CIVIL)),
    ]
    for name, ours, ref in cases:
        # both agree when an event does not happen (Reykjavik's white night in June)
        assert (ours is None) == (ref is None), (city, day, name, ours, ref)
        if ours is None or ref is None:
            continue
        assert ours.date() == day, f"{city} {day} {name}: {ours} is not on that local day"
        assert abs(ours - ref) <= TOLERANCE, f"{city} {day} {name}: {ours} vs reference {ref}"
        assert ours.utcoffset() == ref.utcoffset(), "local time zone not applied"


@pytest.mark.parametrize("city", list(CITIES))
@pytest.mark.parametrize("day", DATES, ids=str)
def test_solar_night_uses_that_evening_and_the_next_morning(city: str, day: dt.date) -> None:
    loc = CITIES[city]
    night = solar_night(loc, day)
    # the night runs from local noon to local noon; in Reykjavik in June the sun sets after
    # 00:00, so the reference's "sunset of 21 June" is the one of the evening before
    zone = ZoneInfo(loc.timezone)
    lo = dt.datetime.combine(day, dt.time(12), tzinfo=zone)
    hi = lo + dt.timedelta(days=1)

    def within(rising: bool) -> dt.datetime | None:
        found = [t for d in (day, day + dt.timedelta(days=1))
                 if (t := usno(d, loc.lat, loc.lon, loc.timezone, rising=rising)) is not None
                 and lo < t < hi]
        return found[0] if len(found) == 1 else None

    sunset, sunrise = within(False), within(True)
    assert sunset is not None and sunrise is not None
    assert night.polar is SunState.NORMAL
    assert abs(night[AstroEvent.SUNSET].at - sunset) <= TOLERANCE
    assert abs(night[AstroEvent.SUNRISE].at - sunrise) <= TOLERANCE
    # civil twilight may last all night (Reykjavik in June): those events then stand at
    # solar midnight
    assert (night.noon < night[AstroEvent.SUNSET].at <= night[AstroEvent.CIVIL_DUSK].at
            <= night.midnight <= night[AstroEvent.CIVIL_DAWN].at
            <= night[AstroEvent.SUNRISE].at < night.next_noon)


def test_the_time_zone_is_always_passed() -> None:
    # Ho Chi Minh City is UTC+7: with astral's default UTC, the 21 June sunrise (about 05:30
    # local, 22:30 UTC the day before) would come back on the wrong day.
    loc = CITIES["Ho Chi Minh City"]
    got = sun_times(loc, dt.date(2026, 6, 21))
    assert got.sunrise is not None
    assert got.sunrise.date() == dt.date(2026, 6, 21)
    assert dt.time(5, 20) < got.sunrise.time() < dt.time(5, 40)
    assert str(got.sunrise.tzinfo) == "Asia/Ho_Chi_Minh"


TROMSO = Location(lat=69.6492, lon=18.9553, timezone="Europe/Oslo")
LONGYEARBYEN = Location(lat=78.2232, lon=15.6267, timezone="Arctic/Longyearbyen")


@pytest.mark.parametrize("loc", [TROMSO, LONGYEARBYEN], ids=["Tromso", "Longyearbyen"])
def test_polar_night_in_december(loc: Location) -> None:
    day = dt.date(2026, 12, 15)
    assert usno(day, loc.lat, loc.lon, loc.timezone, rising=True) is None   # reference agrees
    got = sun_times(loc, day)
    assert got.sunrise is None and got.sunset is None
    night = solar_night(loc, day)
    assert night.polar is SunState.POLAR_NIGHT
    sunset, sunrise = night[AstroEvent.SUNSET], night[AstroEvent.SUNRISE]
    assert not sunset.occurs and sunset.state is SunState.POLAR_NIGHT
    # stand-ins: the evening event at the solar noon that opens the night, the morning one at
    # the solar noon that closes it, so a program runs around the clock
    assert sunset.at == night.noon and sunrise.at == night.next_noon
    assert sunset.note == "polar night: no sunset"


def test_tromso_keeps_civil_twilight_at_noon_in_december_longyearbyen_does_not() -> None:
    day = dt.date(2026, 12, 15)
    tromso = solar_night(TROMSO, day)
    assert tromso[AstroEvent.CIVIL_DUSK].occurs and tromso[AstroEvent.CIVIL_DAWN].occurs
    ref = usno(day, TROMSO.lat, TROMSO.lon, TROMSO.timezone, rising=False, zenith=CIVIL)
    assert ref is not None
    assert abs(tromso[AstroEvent.CIVIL_DUSK].at - ref) <= TOLERANCE
    svalbard = solar_night(LONGYEARBYEN, day)
    assert svalbard[AstroEvent.CIVIL_DUSK].state is SunState.POLAR_NIGHT


@pytest.mark.parametrize("loc", [TROMSO, LONGYEARBYEN], ids=["Tromso", "Longyearbyen"])
def test_polar_day_in_june(loc: Location) -> None:
    day = dt.date(2026, 6, 21)
    assert usno(day, loc.lat, loc.lon, loc.timezone, rising=False) is None
    got = sun_times(loc, day)
    assert got.sunrise is None and got.sunset is None
    night = solar_night(loc, day)
    assert night.polar is SunState.POLAR_DAY
    for ev in AstroEvent:
        # every event collapses to solar midnight: whatever a program lights between an
        # evening and a morning event lasts no time at all
        assert night[ev].state is SunState.POLAR_DAY
        assert night[ev].at == night.midnight
    assert night[AstroEvent.SUNSET].note == "polar day: no sunset"


def test_sunset_after_midnight_belongs_to_the_evening_before() -> None:
    # Tromso, mid May: the sun sets after 23:30 and rises before 02:00 (CEST).
    night = solar_night(TROMSO, dt.date(2026, 5, 15))
    sunset, sunrise = night[AstroEvent.SUNSET], night[AstroEvent.SUNRISE]
    assert sunset.occurs and sunrise.occurs
    assert night.noon < sunset.at < night.midnight < sunrise.at
    assert night[AstroEvent.CIVIL_DUSK].state is SunState.POLAR_DAY   # a white night
    assert night[AstroEvent.CIVIL_DUSK].note == "white night: no civil dusk"


@pytest.mark.parametrize("loc", [TROMSO, LONGYEARBYEN, CITIES["Reykjavik"]],
                         ids=["Tromso", "Longyearbyen", "Reykjavik"])
def test_every_night_of_a_year_near_the_poles_is_consistent(loc: Location) -> None:
    # Near the polar circles astral sometimes fails to match an existing sunrise to a calendar
    # date (Tromso, 14 May 2026); such nights must not turn into polar nights.
    night = dt.date(2026, 1, 1)
    runs: dict[SunState, list[dt.date]] = {SunState.POLAR_DAY: [], SunState.POLAR_NIGHT: []}
    while night.year == 2026:
        sun = solar_night(loc, night)
        assert sun.noon < sun.midnight < sun.next_noon
        for ev in AstroEvent:
            e = sun[ev]
            if e.occurs:
                lo, hi = (sun.noon, sun.midnight) if ev.evening else (sun.midnight,
                                                                      sun.next_noon)
                assert lo <= e.at <= hi, (night, ev)
            elif e.state is SunState.POLAR_DAY:
                # civil white nights last into September in Longyearbyen
                assert 4 <= night.month <= 9, (night, ev)
            else:
                assert night.month in (1, 2, 10, 11, 12), (night, ev)
        if sun.polar is not SunState.NORMAL:
            runs[sun.polar].append(night)
        night += dt.timedelta(days=1)
    for state, nights in runs.items():
        # each polar period is one unbroken run of nights (winter's wraps over the new year)
        breaks = sum(1 for a, b in itertools.pairwise(nights)
                     if b - a != dt.timedelta(days=1))
        assert breaks <= (1 if state is SunState.POLAR_NIGHT else 0), (state, nights)
    if loc is CITIES["Reykjavik"]:
        assert runs == {SunState.POLAR_DAY: [], SunState.POLAR_NIGHT: []}
