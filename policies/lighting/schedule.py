"""A program laid out on one night's timeline, and the program's level at any instant.

A night runs from 12:00 local time to 12:00 the next day and is named by the date of its
evening. Fixed times from 12:00 to 23:59 fall on that evening, 00:00 to 11:59 on the next
morning. Astronomical steps sit at the night's event (see :mod:`policies.lighting.astro`).

Steps keep the order they are written in. Where the sun moves an astronomical step past a fixed
one, the fixed step gives way: it is *moved* to the astronomical step before it (and, written
later, wins at that instant: "dim to 60 % from 23:00" still holds when the sun sets at 23:50),
or *skipped* when it would fall after the astronomical step that follows it (05:00 "back to
80 %" does not relight a street after sunrise+10m in June). Astronomical steps never move
backwards past one another.

Daylight saving time: a fixed time that does not exist that night (in the gap of a spring
change) happens when the clock jumps past it, at the end of the gap; a time that occurs twice
(autumn) happens once, at its first occurrence. Nights of 23 and 25 hours are laid out on real
instants, so durations and energy stay exact.

Between nights, the later night supersedes: once a night's first step has happened, the
previous night's remaining steps no longer apply.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from policies.lighting.astro import SolarNight, solar_night
from policies.lighting.model import (
    NIGHT_START_HOUR,
    DateSpec,
    Location,
    Program,
    Step,
    Weekday,
)

UTC = dt.UTC


def wall_time(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The instant (UTC) a local clock shows `time` on `day`: the first one, or, if the clock
    skips that time (DST gap), the instant it jumps past it."""
    naive = dt.datetime.combine(day, time)
    first = naive.replace(tzinfo=tz, fold=0)
    back = first.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) == naive:
        return back.astimezone(UTC)
    # In the gap: the transition lies between the two readings of the wall time.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    after = hi.astimezone(tz).utcoffset()
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def night_of(at: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The night an instant belongs to (named by the date of its evening)."""
    local = at.astimezone(tz)
    if local.hour >= NIGHT_START_HOUR:
        return local.date()
    return local.date() - dt.timedelta(days=1)


def night_bounds(night: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Local noon of the night's date and of the next day (as UTC instants)."""
    noon = dt.time(NIGHT_START_HOUR)
    return wall_time(night, noon, tz), wall_time(night + dt.timedelta(days=1), noon, tz)


class Adjustment(StrEnum):
    MOVED = "moved"       # a fixed step applied at the astronomical step before it
    SKIPPED = "skipped"   # a fixed step that fell after the astronomical step following it


@dataclass(frozen=True, kw_only=True)
class StepAdjustment:
    """A fixed step the sun displaced on one night (validation turns these into warnings)."""

    index: int
    label: str
    kind: Adjustment
    anchor: str


@dataclass(frozen=True, kw_only=True)
class PlannedStep:
    """A step placed on a night: when it happens (UTC), its level and why."""

    at: dt.datetime
    level: float
    label: str
    index: int
    astro: bool
    entry: str | None = None
    note: str | None = None

    @property
    def reason(self) -> str:
        """``astro sunset-10m``, ``program step 23:00 (weekend)``..."""
        text = f"astro {self.label}" if self.astro else f"program step {self.label}"
        extras = [x for x in (self.note, self.entry) if x]
        return f"{text} ({', '.join(extras)})" if extras else text


@dataclass(frozen=True, kw_only=True)
class NightPlan:
    """A program's steps for one night, in time order (equal times: the later-written wins)."""

    night: dt.date
    entry_index: int | None
    entry_name: str | None
    steps: tuple[PlannedStep, ...]
    adjustments: tuple[StepAdjustment, ...]
    sun: SolarNight


def select_steps(program: Program, holidays: tuple[DateSpec, ...],
                 night: dt.date) -> tuple[int | None, tuple[Step, ...]]:
    """Which step list a night follows: dated entries first, then holidays, then weekdays,
    then the program's own steps. Returns (calendar index or None, steps)."""
    for i, entry in enumerate(program.calendar):
        if any(d.matches(night) for d in entry.dates):
            return i, entry.steps
    if any(h.matches(night) for h in holidays):
        for i, entry in enumerate(program.calendar):
            if entry.holidays:
                return i, entry.steps
    weekday = Weekday.of(night)
    for i, entry in enumerate(program.calendar):
        if weekday in entry.nights:
            return i, entry.steps
    return None, program.steps


# A memo of plans keyed by the identity of the (immutable) inputs: hashing a program tree on
# every resolver call would cost more than the lookup saves. Each entry holds its inputs, so
# their ids cannot be reused while it lives; a different but equal program just misses.
_PLANS: dict[tuple[int, int, int, dt.date],
             tuple[Program, tuple[DateSpec, ...], Location, NightPlan]] = {}
_PLANS_MAX = 8192


def night_plan(program: Program, holidays: tuple[DateSpec, ...], location: Location,
               night: dt.date, *, sun: SolarNight | None = None) -> NightPlan:
    """Lay `program` out on `night` at `location` (memoised; a pure function). Given `sun`
    (that night's, from the caller), nothing is memoised: for a walk over many nights, whose
    plans would otherwise stay in memory."""
    if sun is not None:
        return _night_plan(program, holidays, location, night, sun)
    key = (id(program), id(holidays), id(location), night)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is program and hit[1] is holidays and hit[2] is location:
        return hit[3]
    plan = _night_plan(program, holidays, location, night)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = (program, holidays, location, plan)
    return plan


def _night_plan(program: Program, holidays: tuple[DateSpec, ...], location: Location,
                night: dt.date, sun: SolarNight | None = None) -> NightPlan:
    tz = location.tz
    if sun is None:
        sun = solar_night(location, night)
    entry_index, steps = select_steps(program, holidays, night)
    entry_name = None
    if entry_index is not None:
        entry_name = program.calendar[entry_index].name or f"calendar[{entry_index}]"

    # astronomical anchors, in written order, never earlier than the one before
    anchors: dict[int, tuple[dt.datetime, str | None]] = {}
    last: dt.datetime | None = None
    for i, step in enumerate(steps):
        if step.at.event is None:
            continue
        ev = sun[step.at.event]
        at = ev.at + dt.timedelta(minutes=step.at.offset_min) if ev.occurs else ev.at
        if last is not None and at < last:
            at = last
        anchors[i] = (at, ev.note)
        last = at

    planned: list[PlannedStep] = []
    adjustments: list[StepAdjustment] = []
    order = sorted(anchors)
    for i, step in enumerate(steps):
        if i in anchors:
            at, note = anchors[i]
            planned.append(PlannedStep(at=at, level=step.level, label=step.at.label, index=i,
                                       astro=True, entry=entry_name, note=note))
            continue
        assert step.at.time is not None
        day = night if step.at.time.hour >= NIGHT_START_HOUR else night + dt.timedelta(days=1)
        at = wall_time(day, step.at.time, tz)
        before = [j for j in order if j < i]
        after = [j for j in order if j > i]
        note = None
        if after and at > anchors[after[0]][0]:
            adjustments.append(StepAdjustment(index=i, label=step.at.label,
                                              kind=Adjustment.SKIPPED,
                                              anchor=steps[after[0]].at.label))
            continue
        if before and at < anchors[before[-1]][0]:
            anchor = steps[before[-1]].at.label
            at = anchors[before[-1]][0]
            note = f"at {anchor}"
            adjustments.append(StepAdjustment(index=i, label=step.at.label,
                                              kind=Adjustment.MOVED, anchor=anchor))
        planned.append(PlannedStep(at=at, level=step.level, label=step.at.label, index=i,
                                   astro=False, entry=entry_name, note=note))
    planned.sort(key=lambda s: (s.at, s.index))
    return NightPlan(night=night, entry_index=entry_index, entry_name=entry_name,
                     steps=tuple(planned), adjustments=tuple(adjustments), sun=sun)


def step_at(program: Program, holidays: tuple[DateSpec, ...], location: Location,
            at: dt.datetime) -> PlannedStep:
    """The step in force at `at`: the latest one at or before it, the later night first."""
    night = night_of(at, location.tz)
    for offset in (1, 0, -1, -2, -3):
        plan = night_plan(program, holidays, location, night + dt.timedelta(days=offset))
        best = None
        for step in plan.steps:
            if step.at > at:
                break
            best = step
        if best is not None:
            return best
    raise AssertionError(f"no program step found before {at}")  # every night has an anchor


def next_step(program: Program, holidays: tuple[DateSpec, ...], location: Location,
              after: dt.datetime) -> PlannedStep | None:
    """The program's next step strictly after `after` whose level differs from the one in
    force (within the next two nights), or None."""
    current = step_at(program, holidays, location, after).level
    night = night_of(after, location.tz)
    for offset in (0, 1, 2):
        for step in night_plan(program, holidays, location,
                               night + dt.timedelta(days=offset)).steps:
            if step.at > after and step.level != current:
                return step
    return None


def steps_between(program: Program, holidays: tuple[DateSpec, ...], location: Location,
                  start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The instants of the steps planned in [start, end) (for preview's evaluation times)."""
    tz = location.tz
    first, last = night_of(start, tz) - dt.timedelta(days=1), night_of(end, tz)
    out: list[dt.datetime] = []
    night = first
    while night <= last:
        out.extend(s.at for s in night_plan(program, holidays, location, night).steps
                   if start <= s.at < end)
        night += dt.timedelta(days=1)
    return sorted(set(out))
