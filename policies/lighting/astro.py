"""The sun's course for a location: sunrise, sunset, civil dawn and dusk, and polar states.

Built on ``astral`` (the NOAA algorithm), with its two traps avoided: every call is given the
location's own time zone (with astral's default UTC, a date near midnight returns the
neighbouring day's event), and each event is asked for separately, so a missing sunset cannot
hide a sunrise. Astral raises ``ValueError`` when the sun never crosses an event's angle; here
that becomes an explicit :class:`SunState`:

- ``POLAR_DAY``: the sun stays above the angle all night (midnight sun; for civil twilight, a
  white night). The evening and morning events both collapse to solar midnight, so whatever a
  program lights between them lasts zero time: the lamps stay off.
- ``POLAR_NIGHT``: the sun stays below the angle all day. The evening event moves back to the
  solar noon that starts the night, the morning event forward to the solar noon that ends it, so
  the program runs around the clock at its night levels.

Results are memoised per (location, night): a pure function of its arguments. Instants in a
:class:`SolarNight` are in UTC (Python compares and subtracts two datetimes that share a time zone
by their wall clocks, which goes wrong across a DST change); :class:`SunTimes` is local, for
display.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

import astral
import astral.sun

from policies.lighting.model import AstroEvent, Location

UTC = dt.UTC


class SunState(StrEnum):
    NORMAL = "normal"            # the event happens
    POLAR_DAY = "polar_day"      # the sun never gets down to the event's angle
    POLAR_NIGHT = "polar_night"  # the sun never gets up to the event's angle


@dataclass(frozen=True, kw_only=True)
class EventTime:
    """An event of one night: when it happens, or the instant that stands in for it."""

    event: AstroEvent
    at: dt.datetime
    state: SunState

    @property
    def occurs(self) -> bool:
        return self.state is SunState.NORMAL

    @property
    def note(self) -> str | None:
        """Why the event is missing, in an operator's words (``polar night: no sunset``)."""
        if self.occurs:
            return None
        name = str(self.event).replace("_", " ")
        if self.event in (AstroEvent.SUNSET, AstroEvent.SUNRISE):
            kind = "polar day" if self.state is SunState.POLAR_DAY else "polar night"
        else:
            kind = "white night" if self.state is SunState.POLAR_DAY else "polar night"
        return f"{kind}: no {name}"


@dataclass(frozen=True, kw_only=True)
class SolarNight:
    """The sun through one night: from the solar noon of `night` to the next day's (UTC).

    `events` holds each :class:`AstroEvent` once: the evening ones (sunset, civil dusk) between
    `noon` and `midnight`, the morning ones between `midnight` and `next_noon`.
    """

    night: dt.date
    noon: dt.datetime
    midnight: dt.datetime
    next_noon: dt.datetime
    events: Mapping[AstroEvent, EventTime]

    def __getitem__(self, event: AstroEvent) -> EventTime:
        return self.events[event]

    @property
    def polar(self) -> SunState:
        """NORMAL when the sun sets and rises this night, else which polar state it is in."""
        for ev in (AstroEvent.SUNSET, AstroEvent.SUNRISE):
            if not self.events[ev].occurs:
                return self.events[ev].state
        return SunState.NORMAL


@dataclass(frozen=True, kw_only=True)
class SunTimes:
    """A calendar day's events in local time (None when the event does not happen that day)."""

    day: dt.date
    civil_dawn: dt.datetime | None
    sunrise: dt.datetime | None
    noon: dt.datetime
    sunset: dt.datetime | None
    civil_dusk: dt.datetime | None


def _observer(location: Location) -> astral.Observer:
    return astral.Observer(latitude=location.lat, longitude=location.lon, elevation=0.0)


_Fn = Callable[[astral.Observer, dt.date, ZoneInfo], dt.datetime]


def _fn(event: AstroEvent) -> _Fn:
    def sunset(obs: astral.Observer, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        return astral.sun.sunset(obs, day, tzinfo=tz)

    def sunrise(obs: astral.Observer, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        return astral.sun.sunrise(obs, day, tzinfo=tz)

    def dusk(obs: astral.Observer, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        return astral.sun.dusk(obs, day, depression=6.0, tzinfo=tz)

    def dawn(obs: astral.Observer, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        return astral.sun.dawn(obs, day, depression=6.0, tzinfo=tz)

    return {AstroEvent.SUNSET: sunset, AstroEvent.SUNRISE: sunrise,
            AstroEvent.CIVIL_DUSK: dusk, AstroEvent.CIVIL_DAWN: dawn}[event]


def _try(fn: _Fn, obs: astral.Observer, day: dt.date, tz: ZoneInfo) -> dt.datetime | None:
    try:
        return fn(obs, day, tz)
    except ValueError:
        # polar day/night ("Sun never reaches ...", "always above/below") or no crossing that
        # calendar date: the caller decides which from the sun's elevation
        return None


def sun_times(location: Location, day: dt.date) -> SunTimes:
    """The events of a calendar day at `location`, each asked of astral separately."""
    obs, tz = _observer(location), location.tz

    def get(ev: AstroEvent) -> dt.datetime | None:
        return _try(_fn(ev), obs, day, tz)

    return SunTimes(
        day=day,
        civil_dawn=get(AstroEvent.CIVIL_DAWN),
        sunrise=get(AstroEvent.SUNRISE),
        noon=astral.sun.noon(obs, day, tzinfo=tz),
        sunset=get(AstroEvent.SUNSET),
        civil_dusk=get(AstroEvent.CIVIL_DUSK),
    )


@functools.lru_cache(maxsize=4096)
def solar_night(location: Location, night: dt.date) -> SolarNight:
    """The sun through the night that begins on `night`'s afternoon (memoised)."""
    obs, tz = _observer(location), location.tz
    noon = astral.sun.noon(obs, night, tzinfo=tz).astimezone(UTC)
    next_day = night + dt.timedelta(days=1)
    next_noon = astral.sun.noon(obs, next_day, tzinfo=tz).astimezone(UTC)
    # astral gives the solar midnight nearest 00:00 of the date: that of the night before it
    midnight = astral.sun.midnight(obs, next_day, tzinfo=tz).astimezone(UTC)
    if not noon < midnight < next_noon:
        midnight = noon + (next_noon - noon) / 2

    events: dict[AstroEvent, EventTime] = {}
    for ev in AstroEvent:
        lo, hi = (noon, midnight) if ev.evening else (midnight, next_noon)
        found = None
        # the event of this night may carry the calendar date before or after the usual one
        # (a sunset after 00:00, a sunrise before it, near the polar circles)
        for day in (night, next_day, night - dt.timedelta(days=1), night + dt.timedelta(2)):
            t = _try(_fn(ev), obs, day, tz)
            if t is not None and lo <= t <= hi:
                found = t.astimezone(UTC)
                break
        if found is not None:
            events[ev] = EventTime(event=ev, at=found, state=SunState.NORMAL)
            continue
        # Astral found nothing: a polar state only if the sun's height proves it. Near the
        # polar circles astral sometimes cannot match an existing event to a calendar date
        # ("Unable to find a sunrise time on the date specified"); then find the crossing.
        angle = _event_height(ev)
        if _height(obs, midnight) > angle:
            events[ev] = EventTime(event=ev, at=midnight, state=SunState.POLAR_DAY)
        elif _height(obs, lo if ev.evening else hi) < angle:
            events[ev] = EventTime(event=ev, at=noon if ev.evening else next_noon,
                                   state=SunState.POLAR_NIGHT)
        else:
            events[ev] = EventTime(event=ev, at=_crossing(obs, lo, hi, angle),
                                   state=SunState.NORMAL)
    return SolarNight(night=night, noon=noon, midnight=midnight, next_noon=next_noon,
                      events=events)


def _event_height(ev: AstroEvent) -> float:
    # the geometric height astral solves for: the sun's apparent radius at sunrise and sunset
    # (6 degrees for civil twilight), plus astral's refraction term at that zenith
    depression = (astral.sun.SUN_APPARENT_RADIUS
                  if ev in (AstroEvent.SUNSET, AstroEvent.SUNRISE) else ev.depression)
    return -(depression + float(astral.refraction_at_zenith(90.0 + depression)))


def _height(obs: astral.Observer, at: dt.datetime) -> float:
    # geometric elevation: the events' angles (0.833 degrees for sunset) already include
    # refraction and the sun's radius
    return float(astral.sun.elevation(obs, at, with_refraction=False))


def _crossing(obs: astral.Observer, lo: dt.datetime, hi: dt.datetime,
              angle: float) -> dt.datetime:
    """The instant between `lo` and `hi` when the sun's height crosses `angle` (it is
    monotonic between a solar noon and a solar midnight)."""
    rising = _height(obs, hi) > _height(obs, lo)
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if (_height(obs, mid) < angle) == rising:
            lo = mid
        else:
            hi = mid
    return lo

