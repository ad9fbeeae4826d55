"""A night simulated with the resolver: every level change with its reason, burning hours,
energy, and the energy the same lamps would use at 100 %.

The night runs from local noon of the date to local noon of the next day, with a trusted clock,
no sensor readings, and only the overrides given. The resolver is evaluated every
`step_minutes` and, in addition, at the exact instant of every program step and override
expiry, so changes are listed at their true time and the energy is exact for the program.

"Always at 100 %" (the baseline for the saving) means the same lamps at full power for every
moment the program has them lit: the saving is what dimming saves. Burning hours are equal in
both by construction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policies.lighting.astro import SunState, solar_night
from policies.lighting.energy import Counters, accumulate
from policies.lighting.model import AstroEvent, LightingRules, Location
from policies.lighting.resolver import Override, ResolverState, Source, resolve
from policies.lighting.schedule import night_bounds, steps_between


@dataclass(frozen=True, kw_only=True)
class LevelChange:
    at: dt.datetime
    level: float
    reason: str
    source: Source


@dataclass(frozen=True, kw_only=True)
class GroupPreview:
    name: str
    rated_w: float
    changes: tuple[LevelChange, ...]
    burning_hours: float
    energy_kwh: float
    full_on_kwh: float            # the same burning hours at 100 %
    saving_pct: float | None      # None when the group never burns


@dataclass(frozen=True, kw_only=True)
class Preview:
    """A simulated night. Times are local, for display: to measure between two of them across
    a DST change, convert both to UTC first (Python subtracts same-zone times by wall clock)."""

    night: dt.date
    timezone: str
    start: dt.datetime
    end: dt.datetime
    step_minutes: float
    sunset: dt.datetime | None
    civil_dusk: dt.datetime | None
    civil_dawn: dt.datetime | None
    sunrise: dt.datetime | None
    polar: SunState
    groups: tuple[GroupPreview, ...]

    @property
    def energy_kwh(self) -> float:
        return sum(g.energy_kwh for g in self.groups)

    @property
    def full_on_kwh(self) -> float:
        return sum(g.full_on_kwh for g in self.groups)


def _saving(energy: float, full: float) -> float | None:
    return None if full <= 0 else round(100.0 * (1.0 - energy / full), 2)


def preview(rules: LightingRules, location: Location | None, day: dt.date, *,
            step_minutes: float = 1, overrides: Sequence[Override] = ()) -> Preview:
    """Simulate the night of `day` (noon to noon) at `location` (default: the rules')."""
    if step_minutes <= 0:
        raise ValueError("preview: step_minutes must be positive")
    if location is not None and location != rules.location:
        rules = rules.model_copy(update={"location": location})
    if rules.location is None:
        raise ValueError("preview: no location (give one, or parse the rules with one)")
    loc = rules.location
    start, end = night_bounds(day, loc.tz)

    times: set[dt.datetime] = set()
    t, step = start, dt.timedelta(minutes=step_minutes)
    while t < end:
        times.add(t)
        t += step
    for group in rules.groups:
        times.update(steps_between(rules.program_of(group), rules.holidays, loc, start, end))
    times.update(o.expires_at for o in overrides
                 if o.expires_at is not None and start <= o.expires_at < end)
    instants = sorted(x.astimezone(dt.UTC) for x in times)

    state = ResolverState()
    counters = Counters()
    rated = rules.rated_watts()
    changes: dict[str, list[LevelChange]] = {g.name: [] for g in rules.groups}
    for i, now in enumerate(instants):
        res = resolve(now, clock_trusted=True, values={}, rules=rules, overrides=overrides,
                      state=state)
        state = res.state
        for name, decision in res.groups.items():
            seen = changes[name]
            if not seen or seen[-1].level != decision.level or seen[-1].source != decision.source:
                seen.append(LevelChange(at=now.astimezone(loc.tz), level=decision.level,
                                        reason=decision.reason, source=decision.source))
        nxt = instants[i + 1] if i + 1 < len(instants) else end
        counters = accumulate(counters, levels={n: d.level for n, d in res.groups.items()},
                              rated_w=rated, dt_s=(nxt - now).total_seconds())

    groups = []
    for group in rules.groups:
        c = counters.groups.get(group.name)
        hours = c.burning_hours if c else 0.0
        energy = c.energy_kwh if c else 0.0
        full = group.rated_w * hours / 1000.0
        groups.append(GroupPreview(
            name=group.name, rated_w=group.rated_w, changes=tuple(changes[group.name]),
            burning_hours=round(hours, 4), energy_kwh=round(energy, 4),
            full_on_kwh=round(full, 4), saving_pct=_saving(energy, full)))
    sun = solar_night(loc, day)

    def occurs(ev: AstroEvent) -> dt.datetime | None:
        return sun[ev].at.astimezone(loc.tz) if sun[ev].occurs else None

    return Preview(
        night=day, timezone=loc.timezone, start=start.astimezone(loc.tz),
        end=end.astimezone(loc.tz), step_minutes=step_minutes,
        sunset=occurs(AstroEvent.SUNSET), civil_dusk=occurs(AstroEvent.CIVIL_DUSK),
        civil_dawn=occurs(AstroEvent.CIVIL_DAWN), sunrise=occurs(AstroEvent.SUNRISE),
        polar=sun.polar, groups=tuple(groups))


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds")


def preview_to_json(p: Preview) -> dict[str, Any]:
    """The preview as plain JSON-able data (``edgegw rules preview --format json``)."""
    return {
        "night": p.night.isoformat(),
        "timezone": p.timezone,
        "start": _iso(p.start),
        "end": _iso(p.end),
        "step_minutes": p.step_minutes,
        "sun": {"sunset": _iso(p.sunset), "civil_dusk": _iso(p.civil_dusk),
                "civil_dawn": _iso(p.civil_dawn), "sunrise": _iso(p.sunrise),
                "polar": str(p.polar)},
        "baseline": "the same lamps at 100% whenever the program has them lit",
        "groups": [
            {
                "name": g.name,
                "rated_w": g.rated_w,
                "changes": [{"at": _iso(c.at), "level": c.level, "reason": c.reason,
                             "source": str(c.source)} for c in g.changes],
                "burning_hours": g.burning_hours,
                "energy_kwh": g.energy_kwh,
                "full_on_kwh": g.full_on_kwh,
                "saving_pct": g.saving_pct,
            }
            for g in p.groups
        ],
        "total": {"energy_kwh": round(p.energy_kwh, 4), "full_on_kwh": round(p.full_on_kwh, 4),
                  "saving_pct": _saving(p.energy_kwh, p.full_on_kwh)},
    }


def preview_to_text(p: Preview) -> str:
    """A plain-text rendering (the CLI draws a richer table from the same data)."""
    def hm(t: dt.datetime | None) -> str:
        return "-" if t is None else t.astimezone(p.start.tzinfo).strftime("%H:%M")

    lines = [f"night of {p.night} ({p.timezone}): sunset {hm(p.sunset)}, "
             f"sunrise {hm(p.sunrise)}" + ("" if p.polar is SunState.NORMAL
                                           else f" [{p.polar}]")]
    for g in p.groups:
        lines.append(f"group {g.name} ({g.rated_w:g} W)")
        for c in g.changes:
            stamp = c.at.astimezone(p.start.tzinfo).strftime("%a %H:%M:%S")
            lines.append(f"  {stamp}  {c.level:5.1f}%  {c.reason}")
        saving = "-" if g.saving_pct is None else f"{g.saving_pct:.1f}%"
        lines.append(f"  burning {g.burning_hours:.2f} h, {g.energy_kwh:.3f} kWh, at 100% "
                     f"{g.full_on_kwh:.3f} kWh, saving {saving}")
    return "\n".join(lines)
