"""Reading the `lighting:` section: raw dict -> :class:`LightingRules`, or every problem at once.

Problems are ``(field_path, message)`` pairs with paths relative to the section, like
``groups[0].program.steps[2].at`` or ``programs.main-street.calendar[1].nights``; the agent
prefixes ``lighting.`` and adds the file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from policies.common import describe_error, format_path
from policies.lighting.model import NAME_RE, LightingRules, Location, Program, dates_overlap
from policies.validation import ValidationError


class LocationLike(Protocol):
    """Anything with a location's fields, such as the gateway config's own `Location`."""

    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def timezone(self) -> str: ...


class LightingConfigError(ValueError):
    """The lighting rules are invalid. `problems` lists each as ``(field_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))


def _clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # drop the tags the validation adds for the `program` union (`name` / `inline`)
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i and loc[i - 1] == "program" and part in ("name", "inline"):
            continue
        out.append(part)
    return tuple(out)


def _validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    errors = [(_clean(tuple(e["loc"])), e) for e in err.errors()]
    out: list[tuple[str, str]] = []
    for loc, e in errors:
        # a list that came out too short only because its items failed says nothing more
        if e["type"] == "too_short" and any(
                other[: len(loc)] == loc and len(other) > len(loc) for other, _ in errors):
            continue
        out.append((format_path(loc), describe_error(e, doc="docs/lighting-rules.md")))
    return out


def _program_problems(program: Program, base: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    lists = [(f"{base}.steps", program.steps)] + [
        (f"{base}.calendar[{i}].steps", e.steps) for i, e in enumerate(program.calendar)]
    for where, steps in lists:
        last_fixed: tuple[int, int] | None = None   # (night minute, index)
        last_morning: int | None = None
        for i, step in enumerate(steps):
            at = step.at
            if at.time is not None:
                if last_fixed is not None and at.night_minute <= last_fixed[0]:
                    prev = steps[last_fixed[1]].at.label
                    word = "repeats" if at.night_minute == last_fixed[0] else "comes before"
                    problems.append((
                        f"{where}[{i}].at",
                        f"{at.label} {word} {prev} (steps[{last_fixed[1]}]) in the night; a "
                        "night runs from 12:00 to 12:00: list the steps in the order they "
                        "happen"))
                last_fixed = (at.night_minute, i)
            elif at.event is not None:
                if at.event.evening and last_morning is not None:
                    problems.append((
                        f"{where}[{i}].at",
                        f"{at.label} is an evening event but comes after "
                        f"{steps[last_morning].at.label} (steps[{last_morning}]), a morning "
                        "one: list the steps in the order they happen"))
                if not at.event.evening:
                    last_morning = i
    # overlapping calendar entries: a night follows one entry per kind of selector
    cal = program.calendar
    for j, b in enumerate(cal):
        for i in range(j):
            a = cal[i]
            a_name = a.name or f"calendar[{i}]"
            common = [str(d) for d in b.nights if d in a.nights]
            if common:
                problems.append((f"{base}.calendar[{j}].nights",
                                 f"{', '.join(common)} also in {a_name}: a night can follow "
                                 "only one entry"))
            if a.holidays and b.holidays:
                problems.append((f"{base}.calendar[{j}].holidays",
                                 f"{a_name} already takes the holidays"))
            for k, db in enumerate(b.dates):
                for da in a.dates:
                    day = dates_overlap(da, db)
                    if day is not None:
                        shown = day.strftime("%m-%d") if da.yearly and db.yearly else str(day)
                        problems.append((f"{base}.calendar[{j}].dates[{k}]",
                                         f"{db.label} overlaps {da.label} of {a_name} (the "
                                         f"night of {shown}): a night can follow only one "
                                         "entry"))
                        break
    return problems


def _cross_check(rules: LightingRules) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if rules.groups and rules.location is None:
        problems.append(("location", "the lighting rules need the gateway's location (lat, "
                                     "lon, timezone): set gateway.location"))
    for name, program in rules.programs.items():
        if not re.match(NAME_RE, name):
            problems.append((f"programs.{name}", f"{name!r} is not a valid program name "
                                                 "(letters, digits, `-`, `_`, `.`)"))
        problems.extend(_program_problems(program, f"programs.{name}"))
    seen: dict[str, int] = {}
    outputs: dict[str, str] = {}
    for i, group in enumerate(rules.groups):
        where = f"groups[{i}]"
        if group.name in seen:
            problems.append((f"{where}.name", f"group name {group.name!r} is used twice"))
        seen[group.name] = i
        if isinstance(group.program, str):
            if group.program not in rules.programs:
                known = ", ".join(rules.programs) or "none defined"
                problems.append((f"{where}.program",
                                 f"no program named {group.program!r} (programs: {known})"))
        else:
            problems.extend(_program_problems(group.program, f"{where}.program"))
        for j, out in enumerate(group.outputs):
            if out.key in outputs:
                problems.append((f"{where}.outputs[{j}]",
                                 f"{out.key} is already driven by group {outputs[out.key]}"))
            outputs.setdefault(out.key, group.name)
    return problems


def parse_lighting(raw: Mapping[str, Any] | None, *,
                   location: Location | LocationLike | Mapping[str, Any] | None = None,
                   ) -> LightingRules:
    """Validate the `lighting:` section. `location` (the gateway's: a mapping or any object with
    `lat`, `lon`, `timezone`) is used unless the section has its own `location:`. Raises
    :class:`LightingConfigError` naming every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise LightingConfigError([("", "the lighting section must be a mapping (key: value)")])
    data = dict(raw)
    if data.get("location") is None and location is not None:
        if not isinstance(location, (Location, Mapping)):
            location = {"lat": location.lat, "lon": location.lon,
                        "timezone": location.timezone}
        data["location"] = location
    try:
        rules = LightingRules.model_validate(data)
    except ValidationError as err:
        raise LightingConfigError(_validation_problems(err)) from None
    problems = _cross_check(rules)
    if problems:
        raise LightingConfigError(problems)
    return rules
