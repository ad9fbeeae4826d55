"""Street lighting: programs on an astronomical clock, sensor rules, overrides, clock failsafe.

A pure core, imported by the agent and the CLI:

- :func:`parse_lighting` reads the `lighting:` config section (raises
  :class:`LightingConfigError` with ``(field_path, message)`` problems);
  :func:`validate` adds site- and season-dependent :class:`LightingWarning` s;
  :func:`load_lighting` does both.
- :func:`resolve` decides every group's level from (time, clock trust, values, rules,
  overrides, state); no I/O, no hidden clock.
- :func:`preview` simulates a night with the same resolver; :func:`preview_to_json` gives it as
  data.
- :func:`accumulate` adds burning time and energy to persistent :class:`Counters`.

Operator documentation: docs/lighting-rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.lighting.astro import SolarNight, SunState, SunTimes, solar_night, sun_times
from policies.lighting.energy import Counters, GroupCounters, accumulate
from policies.lighting.load import LightingConfigError, LocationLike, parse_lighting
from policies.lighting.model import (
    AstroEvent,
    Group,
    LightingRules,
    Location,
    Output,
    Program,
)
from policies.lighting.preview import (
    GroupPreview,
    LevelChange,
    Preview,
    preview,
    preview_to_json,
    preview_to_text,
)
from policies.lighting.resolver import (
    EventKind,
    GroupDecision,
    GroupState,
    LightingEvent,
    LimitKind,
    Override,
    OverrideSource,
    Resolution,
    ResolverState,
    SensorValue,
    Source,
    resolve,
)
from policies.lighting.validate import LightingWarning, validate

__all__ = [
    "AstroEvent",
    "Counters",
    "EventKind",
    "Group",
    "GroupCounters",
    "GroupDecision",
    "GroupPreview",
    "GroupState",
    "LevelChange",
    "LightingConfigError",
    "LightingEvent",
    "LightingRules",
    "LightingWarning",
    "LimitKind",
    "Location",
    "LocationLike",
    "Output",
    "Override",
    "OverrideSource",
    "Preview",
    "Program",
    "Resolution",
    "ResolverState",
    "SensorValue",
    "SolarNight",
    "Source",
    "SunState",
    "SunTimes",
    "accumulate",
    "load_lighting",
    "parse_lighting",
    "preview",
    "preview_to_json",
    "preview_to_text",
    "resolve",
    "solar_night",
    "sun_times",
    "validate",
]


def load_lighting(raw: Mapping[str, Any] | None, *,
                  location: Location | LocationLike | Mapping[str, Any] | None = None,
                  year: int | None = None) -> tuple[LightingRules, list[LightingWarning]]:
    """:func:`parse_lighting` then :func:`validate`: the rules and their warnings."""
    rules = parse_lighting(raw, location=location)
    return rules, validate(rules, year=year)
