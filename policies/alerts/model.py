"""The `alerts:` section of the gateway config as frozen models (policies.validation).

Operators write YAML (docs/alerts.md)::

    alerts:
      timezone: Asia/Ho_Chi_Minh        # optional; default: the gateway's location
      rules:
        - {name: flood_warning, kind: threshold, severity: warning,
           point: water-1/water_level, above: 25, clear: 22, hold: 60s}

:func:`policies.alerts.load.parse_alerts` turns it into :class:`AlertRules`. Durations are seconds
or text with units (``90s``, ``10m``, ``1h30m``, ``6 h``). Checks that tie two fields of one rule
together raise ``ValueError("@field|message")`` so the loader can name the field in the path.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from policies.common import check_timezone, coerce_level
from policies.validation import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

#: device and point names, as in the rest of the config
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
#: a rule's name is the event type the platform receives
RULE_NAME_RE = r"^[A-Za-z][A-Za-z0-9_.\-]*$"
#: what a clear event's type ends with: ``flood_warning`` -> ``flood_warning_cleared``
CLEARED_SUFFIX = "_cleared"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def field_error(field: str, message: str) -> ValueError:
    """An error about one `field` of the model being validated (the loader puts it in the
    path: ``rules[2].clear``)."""
    return ValueError(f"@{field}|{message}")


# ------------------------------------------------------------------------------------ enums
class Severity(StrEnum):
    """How bad an alert is; the same words as the uplink's event severities."""

    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for critical."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class RuleKind(StrEnum):
    THRESHOLD = "threshold"   # a reading past a level
    RATE = "rate"             # a change larger than X within a window
    MEAN = "mean"             # the mean of a window past a level
    STALE = "stale"           # a silent or stuck sensor


class Direction(StrEnum):
    """Which side of the threshold fires (threshold and mean rules: `above`/`below`; rate
    rules: `rise`/`fall`)."""

    ABOVE = "above"
    BELOW = "below"
    RISE = "rise"
    FALL = "fall"

    @property
    def upward(self) -> bool:
        """True when a larger number is worse."""
        return self in (Direction.ABOVE, Direction.RISE)


class Pattern(StrEnum):
    STEADY = "steady"   # hold `level`
    FLASH = "flash"     # `level` for on_s, `off_level` for off_s, repeated


# ---------------------------------------------------------------------------------- scalars
_UNITS = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_duration(v: Any) -> Any:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"6 h"``; anything else is passed
    on for the model to refuse."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a duration (write seconds, or text like 10m, 1h, 6 h)")
    if not isinstance(v, str):
        return v
    text = v.strip().lower()
    pos, total, parts = 0, 0.0, 0
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        unit = m.group(2) if m else None
        if m is None or (unit and unit not in _UNITS) or (not unit and parts):
            raise ValueError(f"{v!r} is not a duration (write seconds, or text like 90s, 10m, "
                             "1h30m, 6 h)")
        total += float(m.group(1)) * _UNITS[unit or "s"]
        parts += 1
        pos = m.end()
        while pos < len(text) and text[pos] in " ,":
            pos += 1
    if not parts:
        raise ValueError(f"{v!r} is not a duration (write seconds, or text like 10m, 1h)")
    return total


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{v} is not a finite number")
    return v


#: a duration in seconds (>= 0); written as a number of seconds or with units
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=366 * 86400)]
#: a window: a duration > 0
Window = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=31 * 86400)]
Number = Annotated[float, Field(allow_inf_nan=False)]


_coerce_level = coerce_level


#: a light level in percent
Level = Annotated[float, BeforeValidator(_coerce_level), Field(ge=0, le=100)]

_CLOCK_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def _time_of_day(v: Any) -> Any:
    # YAML 1.1 reads an unquoted 22:00 as the sexagesimal integer 22*60+0 = 1320
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a time of day (write \"22:00\")")
    if isinstance(v, int):
        if 0 <= v < 24 * 60:
            return dt.time(v // 60, v % 60)
        raise ValueError(f"{v} is not a time of day: write it quoted, e.g. \"22:00\"")
    if isinstance(v, str):
        m = _CLOCK_RE.match(v)
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError(f"{v!r} is not a time of day (write HH:MM, 00:00..23:59)")
        return dt.time(int(m.group(1)), int(m.group(2)))
    return v


TimeOfDay = Annotated[dt.time, BeforeValidator(_time_of_day)]


# ----------------------------------------------------------------------------------- pieces
class PointRef(_Model):
    """One point of one device: ``{device: water-1, point: water_level}`` or
    ``water-1/water_level``."""

    device: str = Field(pattern=NAME_RE)
    point: str = Field(pattern=NAME_RE)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            device, sep, point = v.partition("/")
            if not sep or not device.strip() or not point.strip():
                raise ValueError(f"{v!r} is not a point: write device/point (water-1/"
                                 "water_level) or {device: ..., point: ...}")
            return {"device": device.strip(), "point": point.strip()}
        return v

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.point)

    def __str__(self) -> str:
        return f"{self.device}/{self.point}"


class Hours(_Model):
    """Local hours when a rule may fire: ``{from: "22:00", to: "06:00"}`` (may span midnight;
    `from` included, `to` excluded). Outside them the rule's alert clears."""

    start: TimeOfDay = Field(alias="from")
    end: TimeOfDay = Field(alias="to")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: Any) -> Any:
        if isinstance(v, str) and "-" in v:
            start, _, end = v.partition("-")
            return {"from": start.strip(), "to": end.strip()}
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> Hours:
        if self.start == self.end:
            raise field_error("to", "`from` and `to` are the same time: the rule could never "
                                    "fire (leave `hours` out to watch around the clock)")
        return self

    def contains(self, local: dt.time) -> bool:
        """True when the local time of day `local` is within the hours."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    @property
    def label(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class LightingAction(_Model):
    """What an active alert does to a lighting group: hold a level, or flash.

    The agent turns it into a lighting override (source `alert`) while the alert is active;
    :func:`policies.alerts.action.action_level` gives the level at any instant.
    """

    group: str = Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.\-]*)$")
    level: Level = 100.0
    priority: int = Field(default=500, ge=0, le=999)
    pattern: Pattern = Pattern.STEADY
    on_s: float = Field(default=1.0, ge=0.5, le=3600)
    off_s: float = Field(default=1.0, ge=0.5, le=3600)
    off_level: Level = 0.0

    @model_validator(mode="after")
    def _flash_keys(self) -> LightingAction:
        if self.pattern is Pattern.STEADY:
            for key in ("on_s", "off_s", "off_level"):
                if key in self.model_fields_set:
                    raise field_error(key, "only used with `pattern: flash`")
        elif self.off_level >= self.level:
            raise field_error("off_level", f"{self.off_level:g} is not below level "
                                           f"{self.level:g}: the flash would not show")
        return self


# ------------------------------------------------------------------------------------ rules
class _Rule(_Model):
    name: str = Field(pattern=RULE_NAME_RE, max_length=64)
    severity: Severity = Severity.WARNING
    point: PointRef | None = None
    points: tuple[PointRef, ...] | None = None
    description: str | None = None
    lighting: LightingAction | None = None
    #: an alert stays active at least this long once fired (seconds)
    min_active: Duration = 0.0

    @field_validator("name")
    @classmethod
    def _not_cleared(cls, v: str) -> str:
        if v.endswith(CLEARED_SUFFIX):
            raise ValueError(f"{v!r} ends with {CLEARED_SUFFIX!r}, which the clear event "
                             "adds by itself: name the alert, not its end")
        return v

    @model_validator(mode="after")
    def _one_point(self) -> _Rule:
        if self.point is None and self.points is None:
            raise field_error("point", "required: `point: device/point` (or `points: [...]`, "
                                       "one alert per point)")
        if self.point is not None and self.points is not None:
            raise field_error("points", "give `point:` or `points:`, not both")
        if self.points is not None:
            if not self.points:
                raise field_error("points", "the list is empty")
            seen: set[tuple[str, str]] = set()
            for p in self.points:
                if p.key in seen:
                    raise field_error("points", f"{p} is listed twice")
                seen.add(p.key)
        return self

    @property
    def targets(self) -> tuple[PointRef, ...]:
        """The points this rule watches, one alert instance each."""
        if self.point is not None:
            return (self.point,)
        return self.points or ()

    @property
    def rule_kind(self) -> RuleKind:
        return RuleKind(str(getattr(self, "kind")))  # noqa: B009  (set by each subclass)


class _Judged(_Rule):
    """Rules with a level, hysteresis and timers (threshold, rate, mean)."""

    #: the firing condition must hold this long (between readings) before the alert fires
    hold: Duration = 0.0
    #: the clearing condition must hold this long before the alert clears
    clear_after: Duration = 0.0
    #: local hours when the rule may fire
    hours: Hours | None = None

    @property
    def direction(self) -> Direction:
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        raise NotImplementedError

    @property
    def worse_up(self) -> bool:
        """True when a larger figure is worse: `above`, and every rate rule (its figure is the
        size of the rise or fall)."""
        return self.direction.upward

    @property
    def clear_level(self) -> float:
        """Where the alert clears: `clear`, or the threshold itself (no hysteresis)."""
        clear = getattr(self, "clear", None)
        return self.threshold if clear is None else float(clear)

    def _check_sides(self, name_of_threshold: str) -> None:
        clear = getattr(self, "clear", None)
        if clear is None:
            return
        t = self.threshold
        if self.worse_up and clear > t:
            raise field_error("clear", f"{clear:g} is above {name_of_threshold} {t:g}: an "
                                       f"alert that fires above {t:g} clears at or below a "
                                       f"lower level (e.g. clear: {_suggest(t, down=True)})")
        if not self.worse_up and clear < t:
            raise field_error("clear", f"{clear:g} is below {name_of_threshold} {t:g}: an "
                                       f"alert that fires below {t:g} clears at or above a "
                                       f"higher level (e.g. clear: {_suggest(t, down=False)})")


def _suggest(t: float, *, down: bool) -> str:
    step = max(abs(t) * 0.1, 0.5)
    return f"{(t - step if down else t + step):g}"


class _AboveBelow(_Judged):
    above: Number | None = None
    below: Number | None = None
    clear: Number | None = None

    @model_validator(mode="after")
    def _one_side(self) -> _AboveBelow:
        if self.above is None and self.below is None:
            raise field_error("above", "required: `above: LEVEL` or `below: LEVEL`")
        if self.above is not None and self.below is not None:
            raise field_error("below", "give `above:` or `below:`, not both")
        self._check_sides("the threshold")
        return self

    @property
    def direction(self) -> Direction:
        return Direction.ABOVE if self.above is not None else Direction.BELOW

    @property
    def threshold(self) -> float:
        return float(self.above if self.above is not None else self.below or 0.0)


class ThresholdRule(_AboveBelow):
    """A reading above (below) a level fires; the alert clears at or below (above) `clear`."""

    kind: Literal["threshold"]


class MeanRule(_AboveBelow):
    """The mean of the readings over the last `window` above (below) a level."""

    kind: Literal["mean"]
    window: Window
    #: the readings must span at least this fraction of the window before the mean is judged
    coverage: float = Field(default=0.75, ge=0, le=1)


class RateRule(_Judged):
    """A rise (fall) larger than `rise` (`fall`) units within `window`: the latest reading
    against the lowest (highest) reading of the window."""

    kind: Literal["rate"]
    rise: Number | None = Field(default=None, gt=0)
    fall: Number | None = Field(default=None, gt=0)
    window: Window
    clear: Number | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_side(self) -> RateRule:
        if self.rise is None and self.fall is None:
            raise field_error("rise", "required: `rise: AMOUNT` or `fall: AMOUNT` (per window)")
        if self.rise is not None and self.fall is not None:
            raise field_error("fall", "give `rise:` or `fall:`, not both (two rules watch both "
                                      "ways)")
        self._check_sides(f"`{self.direction.value}:`")
        return self

    @property
    def direction(self) -> Direction:
        return Direction.RISE if self.rise is not None else Direction.FALL

    @property
    def worse_up(self) -> bool:
        return True

    @property
    def threshold(self) -> float:
        return float(self.rise if self.rise is not None else self.fall or 0.0)


class StaleRule(_Rule):
    """A sensor that sends nothing for `silent_polls` poll periods (or `silent` seconds), or the
    same value (within `tolerance`) for `unchanged`."""

    kind: Literal["stale"]
    silent_polls: float | None = Field(default=None, gt=0, le=10_000)
    silent: Window | None = None
    unchanged: Window | None = None
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some(self) -> StaleRule:
        if self.silent_polls is None and self.silent is None and self.unchanged is None:
            raise field_error("silent_polls", "a stale rule needs `silent_polls: N`, "
                                              "`silent: DURATION` and/or `unchanged: DURATION`")
        if self.silent_polls is not None and self.silent is not None:
            raise field_error("silent", "give `silent_polls:` or `silent:`, not both")
        if "tolerance" in self.model_fields_set and self.unchanged is None:
            raise field_error("tolerance", "only used with `unchanged:`")
        return self


Rule = Annotated[ThresholdRule | RateRule | MeanRule | StaleRule, Field(discriminator="kind")]
JudgedRule = ThresholdRule | RateRule | MeanRule
AnyRule = ThresholdRule | RateRule | MeanRule | StaleRule


class AlertRules(_Model):
    """The whole `alerts:` section."""

    rules: tuple[Rule, ...] = ()
    #: the zone of `hours:`; the loader fills in the gateway's own when this is left out
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else check_timezone(v)

    @functools.cached_property
    def tz(self) -> dt.tzinfo:
        return ZoneInfo(self.timezone) if self.timezone else dt.UTC

    @functools.cached_property
    def instances(self) -> tuple[tuple[AnyRule, PointRef], ...]:
        """Every (rule, point) pair: one alert each."""
        return tuple((r, p) for r in self.rules for p in r.targets)

    @functools.cached_property
    def points(self) -> frozenset[tuple[str, str]]:
        """Every (device, point) some rule watches."""
        return frozenset(p.key for _, p in self.instances)

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """Rule name -> a digest of its settings: evaluation notices a changed rule by it."""
        return {r.name: hashlib.sha256(r.model_dump_json().encode()).hexdigest()[:16]
                for r in self.rules}

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> AlertRules:
        """A copy; the derived tables are computed afresh for it."""
        copied = super().model_copy(update=update, deep=deep)
        for name in _DERIVED:
            copied.__dict__.pop(name, None)
        return copied

    def rule(self, name: str) -> AnyRule | None:
        return next((r for r in self.rules if r.name == name), None)


_DERIVED = ("tz", "instances", "points", "fingerprints")
