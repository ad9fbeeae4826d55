"""Checks that need the sun: each program laid out on every night of a year at the location.

:func:`parse_lighting` already refuses what is wrong anywhere (unknown programs, steps out of
order, overlapping calendar entries, levels outside 0..100). What is left is site- and
season-dependent and comes back as warnings: fixed times that the sun overtakes in summer or
winter, lamps lit in daylight, switch-on periods shorter than the minimum burning time, polar
periods, and settings that leave a street dark when the clock is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from policies.lighting.astro import SolarNight, SunState, solar_night
from policies.lighting.model import AstroEvent, LightingRules, Location, Program, dates_overlap
from policies.lighting.schedule import Adjustment, NightPlan, night_plan


@dataclass(frozen=True, kw_only=True)
class LightingWarning:
    """Something the operator should look at; the rules still load."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _nights(days: list[dt.date]) -> str:
    """``on 12 nights (2026-05-11..2026-05-22)``; several runs listed, up to three."""
    if len(days) == 1:
        return f"on the night of {days[0]}"
    runs: list[list[dt.date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == dt.timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    if len(runs) > 3:
        return f"on {len(days)} nights (first {runs[0][0]}, last {runs[-1][-1]})"
    spans = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)
    return f"on {len(days)} nights ({spans})"


def _list_path(base: str, plan: NightPlan) -> str:
    if plan.entry_index is None:
        return f"{base}.steps"
    return f"{base}.calendar[{plan.entry_index}].steps"


class _Year:
    """The sun over each night of the walk, computed once, kept for this check only (the
    memoised planner would keep a year of nights in the agent's memory)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._suns: dict[dt.date, SolarNight] = {}

    def sun(self, night: dt.date) -> SolarNight:
        s = self._suns.get(night)
        if s is None:
            s = self._suns[night] = solar_night.__wrapped__(self.location, night)
        return s

    def plan(self, program: Program, rules: LightingRules, night: dt.date) -> NightPlan:
        return night_plan(program, rules.holidays, self.location, night, sun=self.sun(night))


def _program_warnings(base: str, program: Program, rules: LightingRules, year: _Year,
                      nights: list[dt.date]) -> list[LightingWarning]:
    out: list[LightingWarning] = []
    adjusted: dict[tuple[str, int, Adjustment, str, str], list[dt.date]] = defaultdict(list)
    daylight: dict[tuple[str, int, str, str], list[dt.date]] = defaultdict(list)
    for night in nights:
        plan = year.plan(program, rules, night)
        where = _list_path(base, plan)
        for adj in plan.adjustments:
            adjusted[(where, adj.index, adj.kind, adj.label, adj.anchor)].append(night)
        sunset, sunrise = plan.sun[AstroEvent.SUNSET], plan.sun[AstroEvent.SUNRISE]
        level = 0.0
        for step in plan.steps:
            if not step.astro and step.note is None:
                # a fixed step that keeps or turns the lamps on after sunrise, or turns them
                # on before sunset, burns them in daylight
                if sunrise.occurs and step.at > sunrise.at and (level > 0 or step.level > 0):
                    daylight[(where, step.index, step.label, "after sunrise")].append(night)
                elif sunset.occurs and step.at < sunset.at and level <= 0 < step.level:
                    daylight[(where, step.index, step.label, "before sunset")].append(night)
            level = step.level
    for (where, i, kind, label, anchor), days in adjusted.items():
        if kind is Adjustment.SKIPPED:
            msg = (f"{label} falls after {anchor} {_nights(days)}: the step is skipped on "
                   "those nights")
        else:
            msg = (f"{label} falls before {anchor} {_nights(days)}: it applies from {anchor} "
                   "on those nights")
        out.append(LightingWarning(path=f"{where}[{i}].at", message=msg))
    for (where, i, label, side), days in daylight.items():
        out.append(LightingWarning(
            path=f"{where}[{i}].at",
            message=f"{label} falls {side} {_nights(days)}: the lamps burn in daylight then"))
    if all(s.level <= 0 for s in program.steps) and all(
            s.level <= 0 for e in program.calendar for s in e.steps):
        out.append(LightingWarning(path=f"{base}.steps", message="the program never lights"))
    return out


def _min_burn(plan: NightPlan, minimum: dt.timedelta) -> dt.timedelta | None:
    """The shortest lit period of the night, if one is shorter than `minimum`."""
    shortest: dt.timedelta | None = None
    on_at: dt.datetime | None = None
    for step in plan.steps:
        if step.level > 0 and on_at is None:
            on_at = step.at
        elif step.level <= 0 and on_at is not None:
            span = step.at - on_at
            if dt.timedelta(0) < span < minimum and (shortest is None or span < shortest):
                shortest = span
            on_at = None
    return shortest


def validate(rules: LightingRules, location: Location | None = None, *,
             year: int | None = None) -> list[LightingWarning]:
    """Warnings for `rules` at `location` (default: the rules' own) over every night of `year`
    (default: the current year)."""
    loc = location or rules.location
    walk = _Year(loc) if loc is not None else None
    out: list[LightingWarning] = []
    if year is None:
        year = dt.date.today().year
    first = dt.date(year, 1, 1)
    nights = [first + dt.timedelta(days=i) for i in range((dt.date(year + 1, 1, 1) - first).days)]

    used = {g.program for g in rules.groups if isinstance(g.program, str)}
    for name in rules.programs:
        if name not in used:
            out.append(LightingWarning(path=f"programs.{name}",
                                       message="not used by any group"))
    checked: dict[str, Program] = {f"programs.{n}": p for n, p in rules.programs.items()
                                   if n in used}
    for i, g in enumerate(rules.groups):
        if not isinstance(g.program, str):
            checked[f"groups[{i}].program"] = g.program

    for base, program in checked.items():
        for j, entry in enumerate(program.calendar):
            if entry.holidays and not rules.holidays:
                out.append(LightingWarning(path=f"{base}.calendar[{j}].holidays",
                                           message="no `holidays:` are listed, so this entry "
                                                   "applies only on its other nights"))
            for k, spec in enumerate(entry.dates):
                if any(e.holidays for e in program.calendar):
                    hit = next((d for h in rules.holidays
                                if (d := dates_overlap(spec, h)) is not None), None)
                    if hit is not None:
                        out.append(LightingWarning(
                            path=f"{base}.calendar[{j}].dates[{k}]",
                            message=f"{spec.label} is also a holiday: this entry wins there"))
        if walk is not None:
            out.extend(_program_warnings(base, program, rules, walk, nights))

    for i, g in enumerate(rules.groups):
        where = f"groups[{i}]"
        base = f"programs.{g.program}" if isinstance(g.program, str) else f"{where}.program"
        if g.failsafe_level <= 0:
            out.append(LightingWarning(
                path=f"{where}.failsafe_level",
                message="0 leaves the street dark whenever the clock is untrusted"
                        + ("" if g.illuminance else " (and the group has no illuminance "
                                                    "sensor to follow)")))
        if g.rated_w <= 0:
            out.append(LightingWarning(path=f"{where}.outputs",
                                       message="no output has `watts`: energy figures are 0"))
        if walk is None or g.min_burn_minutes <= 0:
            continue
        minimum = dt.timedelta(minutes=g.min_burn_minutes)
        short: list[tuple[dt.date, dt.timedelta]] = []
        for night in nights:
            span = _min_burn(walk.plan(rules.program_of(g), rules, night), minimum)
            if span is not None:
                short.append((night, span))
        if short:
            worst = min(s for _, s in short)
            out.append(LightingWarning(
                path=f"{base}.steps",
                message=f"group {g.name} would be lit for less than min_burn_minutes "
                        f"({g.min_burn_minutes:g}) {_nights([d for d, _ in short])}, as little "
                        f"as {worst.total_seconds() / 60:.0f} min: it is kept on for "
                        f"{g.min_burn_minutes:g} min"))

    if walk is not None and rules.groups:
        polar: dict[SunState, list[dt.date]] = defaultdict(list)
        for night in nights:
            state = walk.sun(night).polar
            if state is not SunState.NORMAL:
                polar[state].append(night)
        if polar[SunState.POLAR_DAY]:
            out.append(LightingWarning(
                path="location",
                message=f"polar day {_nights(polar[SunState.POLAR_DAY])}: no sunset, so "
                        "steps at sunset/sunrise collapse to solar midnight and the lamps stay "
                        "off unless a sensor or an override lights them"))
        if polar[SunState.POLAR_NIGHT]:
            out.append(LightingWarning(
                path="location",
                message=f"polar night {_nights(polar[SunState.POLAR_NIGHT])}: no sunrise, so "
                        "the program runs around the clock (evening steps from solar noon)"))
    return out
