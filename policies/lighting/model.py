"""The `lighting:` section of the gateway config as frozen models (policies.validation).

Operators write YAML (docs/lighting-rules.md); :func:`policies.lighting.load.parse_lighting` turns
it into a :class:`LightingRules`. The models accept what YAML 1.1 makes of natural input:
``at: 23:00`` arrives as the integer 1380 (sexagesimal), ``level: off`` as ``False``,
``2026-12-24`` as a date; each is read the way the operator meant it.

Everything here is immutable (frozen models, tuples), so the schedule can memoise per-night
plans per program object.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from policies.common import check_timezone, coerce_level
from policies.validation import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

#: a night runs from this local hour to the same hour next day; fixed times before it belong to
#: the morning after the night's evening.
NIGHT_START_HOUR = 12


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------ scalars
_coerce_level = coerce_level


#: a light level in percent: 0 is off, 100 full.
Level = Annotated[float, BeforeValidator(_coerce_level), Field(ge=0, le=100)]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @classmethod
    def of(cls, day: dt.date) -> Weekday:
        return _WEEKDAYS[day.weekday()]


_WEEKDAYS = tuple(Weekday)


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _coerce_weekday(v: Any) -> Any:
    # `Friday`, `fri`, `FRI`: all the same; anything else is reported as written
    if isinstance(v, str) and v.strip().lower() in _DAY_NAMES:
        return v.strip().lower()[:3]
    if isinstance(v, str):
        return v.strip().lower()
    return v


class AstroEvent(StrEnum):
    """A moment of the sun's course that a step can be anchored to."""

    SUNSET = "sunset"
    CIVIL_DUSK = "civil_dusk"
    CIVIL_DAWN = "civil_dawn"
    SUNRISE = "sunrise"

    @property
    def evening(self) -> bool:
        """True for the events that start the night (the sun going down)."""
        return self in (AstroEvent.SUNSET, AstroEvent.CIVIL_DUSK)

    @property
    def depression(self) -> float:
        """Nominal degrees of the sun's centre below the horizon at the event (refraction and,
        at sunrise and sunset, the sun's radius included)."""
        return 0.833 if self in (AstroEvent.SUNSET, AstroEvent.SUNRISE) else 6.0


_EVENT_ALIASES = {
    "sunset": AstroEvent.SUNSET,
    "sunrise": AstroEvent.SUNRISE,
    "civil_dusk": AstroEvent.CIVIL_DUSK,
    "civil_dawn": AstroEvent.CIVIL_DAWN,
    "dusk": AstroEvent.CIVIL_DUSK,
    "dawn": AstroEvent.CIVIL_DAWN,
}
_EVENT_NAMES = "sunset, sunrise, civil_dusk, civil_dawn"


def _event(name: str) -> AstroEvent:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if key not in _EVENT_ALIASES:
        raise ValueError(f"{name!r} is not an event (one of {_EVENT_NAMES})")
    return _EVENT_ALIASES[key]


_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_ASTRO_RE = re.compile(
    r"^\s*(?P<event>[A-Za-z][A-Za-z_\- ]*?)\s*"
    r"(?:(?P<sign>[+-])\s*(?P<num>\d+)\s*(?P<unit>h|hours?|m|mins?|minutes?)?)?\s*$")


def _parse_clock(text: str) -> dt.time:
    m = _TIME_RE.match(text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} is not a time of day (write HH:MM, 00:00..23:59)")
    return dt.time(int(m.group(1)), int(m.group(2)))


def _time_from_yaml_int(v: int) -> dt.time:
    # YAML 1.1 reads an unquoted 23:00 as the sexagesimal integer 23*60+0 = 1380.
    if 0 <= v < 24 * 60:
        return dt.time(v // 60, v % 60)
    raise ValueError(f"{v} is not a time of day: write it quoted, e.g. \"23:00\"")


class At(_Model):
    """When a step happens: a fixed local time, or an astronomical event plus an offset.

    Written as ``"23:00"``, ``sunset-10m``, ``sunrise + 1h`` or
    ``{event: sunset, offset_min: -10}``.
    """

    time: dt.time | None = None
    event: AstroEvent | None = None
    offset_min: int = Field(default=0, ge=-720, le=720)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a time (write \"23:00\" or sunset-10m)")
        if isinstance(v, int):
            return {"time": _time_from_yaml_int(v)}
        if isinstance(v, float):
            raise ValueError(f"{v!r} is not a time: write it as text with a colon, \"23:00\" "
                             "(YAML reads 23.00 as a number)")
        if isinstance(v, dt.time):
            return {"time": v}
        if isinstance(v, str):
            if _TIME_RE.match(v) or v.strip()[:1].isdigit():
                return {"time": _parse_clock(v)}
            m = _ASTRO_RE.match(v)
            if not m:
                raise ValueError(
                    f"{v!r} is not a time: write \"23:00\", or an event with an offset "
                    f"like sunset-10m or sunrise+1h ({_EVENT_NAMES})")
            offset = 0
            if m.group("num") is not None:
                offset = int(m.group("num")) * (60 if (m.group("unit") or "m")[0] == "h" else 1)
                offset = -offset if m.group("sign") == "-" else offset
            return {"event": _event(m.group("event")), "offset_min": offset}
        if isinstance(v, dict):
            out = dict(v)
            if isinstance(out.get("time"), int) and not isinstance(out.get("time"), bool):
                out["time"] = _time_from_yaml_int(out["time"])
            elif isinstance(out.get("time"), str):
                out["time"] = _parse_clock(out["time"])
            if isinstance(out.get("event"), str):
                out["event"] = _event(out["event"])
            return out
        return v

    @model_validator(mode="after")
    def _one(self) -> At:
        if (self.time is None) == (self.event is None):
            raise ValueError("give either a time (\"23:00\") or an event (sunset-10m)")
        if self.time is not None and self.offset_min:
            raise ValueError("`offset_min` only goes with an event")
        if self.time is not None and (self.time.second or self.time.microsecond):
            raise ValueError("times are whole minutes (HH:MM)")
        return self

    @property
    def label(self) -> str:
        """How the step is named in reasons: ``23:00`` or ``sunset-10m``."""
        if self.time is not None:
            return self.time.strftime("%H:%M")
        assert self.event is not None
        if not self.offset_min:
            return str(self.event)
        return f"{self.event}{self.offset_min:+d}m"

    @property
    def night_minute(self) -> int:
        """Minutes after the night's start (12:00) for a fixed time: orders steps in a night."""
        assert self.time is not None
        return (self.time.hour * 60 + self.time.minute - NIGHT_START_HOUR * 60) % (24 * 60)


class Step(_Model):
    """From `at` on, the group burns at `level` percent (0 = off) until the next step."""

    at: At
    level: Level


# -------------------------------------------------------------------------------------- dates
_MD_RE = re.compile(r"^\s*(\d{1,2})-(\d{1,2})\s*$")
_LEAP = 2000  # yearly dates are kept in a leap year so that 02-29 is representable


def _one_date(v: Any) -> tuple[dt.date, bool]:
    """A date and whether it repeats every year (written ``MM-DD``)."""
    if isinstance(v, dt.datetime):
        return v.date(), False
    if isinstance(v, dt.date):
        return v, False
    if isinstance(v, str):
        m = _MD_RE.match(v)
        if m:
            try:
                return dt.date(_LEAP, int(m.group(1)), int(m.group(2))), True
            except ValueError:
                raise ValueError(f"{v!r} is not a day of the year (MM-DD)") from None
        try:
            return dt.date.fromisoformat(v.strip()), False
        except ValueError:
            pass
    raise ValueError(f"{v!r} is not a date (YYYY-MM-DD, or MM-DD for every year)")


class DateSpec(_Model):
    """One night or a range of nights, either on given dates or every year (``MM-DD``), or a
    country's public holidays.

    Written ``2026-12-24``, ``12-24`` (every year), ``{from: 2026-12-24, to: 2026-12-26}`` or
    ``{from: 12-24, to: 01-01}`` (a yearly range may wrap over the new year), or
    ``{country: VN}`` / ``{country: DE, subdivision: BY}``: every public holiday of that country
    (or region) in every year, lunar ones such as Tết included, from the ``holidays`` library. A
    date names the night that begins on that date's evening.
    """

    start: dt.date = dt.date(2000, 1, 1)
    end: dt.date = dt.date(2000, 1, 1)
    yearly: bool = False
    country: str | None = None
    subdivision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if isinstance(v, dict) and "country" in v:
            extra = set(v) - {"country", "subdivision"}
            if extra:
                raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, extra)))} "
                                 "(a country's holidays are {country: VN, subdivision: ...})")
            country, sub = _check_country(v.get("country"), v.get("subdivision"))
            return {"country": country, "subdivision": sub}
        if isinstance(v, dict) and ("from" in v or "to" in v):
            extra = set(v) - {"from", "to"}
            if extra:
                raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, extra)))} "
                                 "(a range is {from: DATE, to: DATE})")
            if "from" not in v or "to" not in v:
                raise ValueError("a range needs both `from` and `to`")
            start, y1 = _one_date(v["from"])
            end, y2 = _one_date(v["to"])
            if y1 != y2:
                raise ValueError("`from` and `to` must both be full dates or both MM-DD")
            if not y1 and end < start:
                raise ValueError(f"the range ends ({end}) before it starts ({start})")
            if not y1 and (end - start).days > 366:
                raise ValueError("a date range is at most a year long (use `nights:` for "
                                 "weekly patterns)")
            return {"start": start, "end": end, "yearly": y1}
        if isinstance(v, dict):
            return v
        day, yearly = _one_date(v)
        return {"start": day, "end": day, "yearly": yearly}

    def matches(self, day: dt.date) -> bool:
        """Whether the night of `day` falls in this spec."""
        if self.country is not None:
            return day in _public_holidays(self.country, self.subdivision, day.year)
        if not self.yearly:
            return self.start <= day <= self.end
        md = (day.month, day.day)
        lo, hi = (self.start.month, self.start.day), (self.end.month, self.end.day)
        return lo <= md <= hi if lo <= hi else (md >= lo or md <= hi)

    def days(self) -> Iterator[dt.date]:
        """Every date covered (yearly specs, and a country's holidays, in the reference leap
        year)."""
        if self.country is not None:
            yield from sorted(_public_holidays(self.country, self.subdivision, _LEAP))
            return
        day = self.start
        end = self.end if self.end >= self.start else dt.date(_LEAP + 1, self.end.month,
                                                              self.end.day)
        while day <= end:
            yield day if not self.yearly else day.replace(year=_LEAP)
            day += dt.timedelta(days=1)

    @property
    def label(self) -> str:
        if self.country is not None:
            where = self.country + (f"-{self.subdivision}" if self.subdivision else "")
            return f"{where} public holidays"
        fmt = "%m-%d" if self.yearly else "%Y-%m-%d"
        a, b = self.start.strftime(fmt), self.end.strftime(fmt)
        return a if a == b else f"{a}..{b}"


def _check_country(country: Any, subdivision: Any) -> tuple[str, str | None]:
    """A country code (and subdivision) the holidays library knows; ValueError otherwise."""
    import holidays  # only when a config names a country: it takes ~50 ms to import

    if not isinstance(country, str) or not country.strip():
        raise ValueError("country must be an ISO 3166 code, e.g. VN")
    code = country.strip().upper()
    known = holidays.list_supported_countries()
    if code not in known:
        raise ValueError(f"{country!r} is not a country the holidays library knows (ISO 3166 "
                         "alpha-2 codes, e.g. VN, DE, FR, US)")
    if subdivision is None:
        return code, None
    sub = str(subdivision).strip().upper()
    if sub not in known[code]:
        raise ValueError(f"{subdivision!r} is not a subdivision of {code} (known: "
                         f"{', '.join(known[code][:12]) or 'none'}"
                         f"{', ...' if len(known[code]) > 12 else ''})")
    return code, sub


@functools.lru_cache(maxsize=64)
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[dt.date]:
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


def dates_overlap(a: DateSpec, b: DateSpec) -> dt.date | None:
    """A night both specs cover, if any (for yearly specs and a country's holidays, in the
    reference leap year)."""
    if a.country is not None or b.country is not None:
        fixed, other = (a, b) if b.country is not None else (b, a)
        return next((d for d in fixed.days() if other.matches(d)), None)
    if not a.yearly and not b.yearly:
        lo, hi = max(a.start, b.start), min(a.end, b.end)
        return lo if lo <= hi else None
    if a.yearly and b.yearly:
        mine = set(a.days())
        return next((d for d in b.days() if d in mine), None)
    fixed, yearly = (a, b) if b.yearly else (b, a)
    return next((d for d in fixed.days() if yearly.matches(d)), None)


# ---------------------------------------------------------------------------------- programs
class CalendarEntry(_Model):
    """Another step list for some nights: weekdays, listed dates, or the site's holidays.

    The most specific entry wins: one whose `dates` cover the night, then one with
    `holidays: true` when the night is a holiday, then one whose `nights` name its weekday.
    """

    name: str | None = None
    nights: tuple[Annotated[Weekday, BeforeValidator(_coerce_weekday)], ...] = ()
    dates: tuple[DateSpec, ...] = ()
    holidays: bool = False
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _selects(self) -> CalendarEntry:
        if not (self.nights or self.dates or self.holidays):
            raise ValueError("a calendar entry needs `nights:`, `dates:` or `holidays: true`")
        return self


class Program(_Model):
    """A night's steps, with calendar entries that replace them on some nights."""

    description: str = ""
    steps: tuple[Step, ...] = Field(min_length=1)
    calendar: tuple[CalendarEntry, ...] = ()


def _program_kind(v: Any) -> str:
    return "name" if isinstance(v, str) else "inline"


#: a group's program: the name of one under `programs:`, or written inline.
ProgramField = Annotated[
    Annotated[str, Tag("name")] | Annotated[Program, Tag("inline")],
    Discriminator(_program_kind),
]


# ------------------------------------------------------------------------------------ groups
class Output(_Model):
    """A lamp output the agent drives: a Modbus point (`device` + `point`) or a GPIO (`gpio`).

    `watts` is the rated power at 100 %, for energy figures (0 leaves them at 0).
    """

    device: str | None = None
    point: str | None = None
    gpio: str | int | None = None
    watts: float = Field(default=0.0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _target(self) -> Output:
        modbus = self.device is not None or self.point is not None
        if modbus and self.gpio is not None:
            raise ValueError("an output is either `device` + `point` or `gpio`, not both")
        if modbus and (self.device is None or self.point is None):
            raise ValueError("a device output needs both `device` and `point`")
        if not modbus and self.gpio is None:
            raise ValueError("an output needs `device` + `point`, or `gpio`")
        return self

    @property
    def key(self) -> str:
        """A unique name for the output: ``lamp-1/dim_level`` or ``gpio:relay-1``."""
        return f"gpio:{self.gpio}" if self.gpio is not None else f"{self.device}/{self.point}"


class Limits(_Model):
    """Bounds applied last to every decision: `min_level` only while on, `max_level` always."""

    min_level: Level = 0.0
    max_level: Level = 100.0

    @model_validator(mode="after")
    def _order(self) -> Limits:
        if self.min_level > self.max_level:
            raise ValueError(f"min_level {self.min_level:g} is above max_level "
                             f"{self.max_level:g}")
        return self


class PointRef(_Model):
    device: str
    point: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.point)

    @property
    def label(self) -> str:
        return f"{self.device}/{self.point}"


class IlluminanceRule(_Model):
    """Turn the group on when it is dark although the program has it off (storm, fog, eclipse).

    On after the light stays below `on_below` lux for `hold_s`; off again after it stays above
    `off_above` (the hysteresis) for `off_hold_s`. With `window_min`, the rule only counts within
    that many minutes of sunset or sunrise, so a shadow at noon cannot light a street. Readings
    older than `max_age_s` count as missing.
    """

    device: str
    point: str
    on_below: float = Field(ge=0)
    off_above: float | None = Field(default=None, ge=0)
    hold_s: float = Field(default=120.0, ge=0, le=86400)
    off_hold_s: float | None = Field(default=None, ge=0, le=86400)
    level: Level = 100.0
    window_min: int | None = Field(default=None, ge=1, le=720)
    max_age_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> IlluminanceRule:
        if self.off_above is not None and self.off_above < self.on_below:
            raise ValueError(f"off_above ({self.off_above:g}) must not be below on_below "
                             f"({self.on_below:g})")
        return self

    @property
    def ref(self) -> PointRef:
        return PointRef(device=self.device, point=self.point)

    @property
    def off_threshold(self) -> float:
        return self.on_below if self.off_above is None else self.off_above

    @property
    def off_hold(self) -> float:
        return self.hold_s if self.off_hold_s is None else self.off_hold_s


class MotionRule(_Model):
    """While the group is lit, motion raises it to at least `level` for `hold_s` seconds.

    The boost ramps up and back down over `ramp_s`. It never lowers a level and never switches
    a dark group on. Written with `device` + `point`, or `points:` for several detectors.
    """

    points: tuple[PointRef, ...] = Field(min_length=1)
    level: Level = 100.0
    hold_s: float = Field(default=90.0, ge=0, le=86400)
    ramp_s: float = Field(default=0.0, ge=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict) and ("device" in v or "point" in v):
            if "points" in v:
                raise ValueError("give `device` + `point` or `points:`, not both")
            out = {k: x for k, x in v.items() if k not in ("device", "point")}
            out["points"] = [{"device": v.get("device"), "point": v.get("point")}]
            return out
        return v


class ThresholdAction(StrEnum):
    RAISE = "raise"   # at least `level`
    CAP = "cap"       # at most `level`


class ThresholdRule(_Model):
    """Any numeric point against a threshold: while it holds, raise the group to at least
    `level` (`action: raise`) or cap it at `level` (`action: cap`).

    Active after the value is past the threshold for `hold_s`; released when it comes back past
    it by `hysteresis` for `hold_s`.
    """

    name: str | None = None
    device: str
    point: str
    above: float | None = None
    below: float | None = None
    level: Level
    action: ThresholdAction = ThresholdAction.RAISE
    hysteresis: float = Field(default=0.0, ge=0)
    hold_s: float = Field(default=0.0, ge=0, le=86400)
    max_age_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` or `below`")
        return self

    @property
    def ref(self) -> PointRef:
        return PointRef(device=self.device, point=self.point)

    @property
    def label(self) -> str:
        return self.name or f"{self.device}/{self.point}"


class SwitchInput(_Model):
    """The cabinet's manual switch: while its point reads non-zero (zero with `invert`), the
    group is overridden to `level` with `priority`. A reading older than `max_age_s` is
    ignored (the switch counts as released)."""

    device: str
    point: str
    level: Level = 100.0
    priority: int = 1000
    invert: bool = False
    max_age_s: float = Field(default=300.0, gt=0)

    @property
    def ref(self) -> PointRef:
        return PointRef(device=self.device, point=self.point)


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


class Group(_Model):
    """Outputs switched and dimmed together, with their program, limits and sensor rules."""

    name: str = Field(pattern=NAME_RE, max_length=64)
    outputs: tuple[Output, ...] = Field(min_length=1)
    program: ProgramField
    limits: Limits = Limits()
    failsafe_level: Level = 100.0
    min_burn_minutes: float = Field(default=0.0, ge=0, le=720)
    illuminance: IlluminanceRule | None = None
    motion: MotionRule | None = None
    thresholds: Annotated[tuple[ThresholdRule, ...], BeforeValidator(_listify)] = ()
    switches: Annotated[tuple[SwitchInput, ...], BeforeValidator(_listify)] = ()

    @property
    def rated_w(self) -> float:
        """The group's power at 100 %: the sum of its outputs' rated watts."""
        return sum(o.watts for o in self.outputs)


class FailsafeCfg(_Model):
    """How the groups behave while the clock is untrusted."""

    entry_delay_s: float = Field(default=120.0, ge=0, le=86400)


class Location(_Model):
    """Where the gateway stands: for sunrise and sunset, and the local time zone."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: str

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class LightingRules(_Model):
    """The whole `lighting:` section, checked (build it with `parse_lighting`)."""

    location: Location | None = None
    failsafe: FailsafeCfg = FailsafeCfg()
    holidays: tuple[DateSpec, ...] = ()
    programs: dict[str, Program] = {}
    groups: tuple[Group, ...] = ()

    def program_of(self, group: Group) -> Program:
        """The group's program (looked up by name, or its inline one)."""
        if isinstance(group.program, Program):
            return group.program
        return self.programs[group.program]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def rated_watts(self) -> dict[str, float]:
        """Each group's rated power at 100 %, for :func:`accumulate`."""
        return {g.name: g.rated_w for g in self.groups}

    def sensor_points(self) -> set[tuple[str, str]]:
        """Every (device, point) the rules read: the agent checks they exist and polls them."""
        refs: set[tuple[str, str]] = set()
        for g in self.groups:
            if g.illuminance is not None:
                refs.add(g.illuminance.ref.key)
            if g.motion is not None:
                refs.update(p.key for p in g.motion.points)
            refs.update(t.ref.key for t in g.thresholds)
            refs.update(s.ref.key for s in g.switches)
        return refs
