"""Scripted episodes the simulated world can play: a storm that floods the street, a pollution
episode. Pure data plus functions of elapsed time, so tests can use the very numbers a demo plays.

A :class:`Scenario` is a set of :class:`Track` s, one per :class:`Quantity`, each a list of
keyframes ``(elapsed_s, value)`` joined by straight lines (held flat before the first and after
the last). For the world's setters a track becomes a step script ``[(offset_s, value), ...]``
(:meth:`Scenario.script`, :func:`storm_script`, :func:`pollution_script`);
:func:`apply_scenario` hands those to a :class:`~simulators.world.World`::

    storm_ = storm(peak_cm=45).fit(120)        # a whole storm in two minutes for the demo
    playback = apply_scenario(world, storm_)
    ...                                        # when world.now() >= playback.ends_at:
    playback.restore(world)                    # the sun lights the street again

Time runs in world seconds (an accelerated world clock plays the scenario faster again). The
storm's darkness is a cloud factor on the clear-sky illuminance, computed from the world's own
sun at each step, so a storm at night stays dark and one at noon dims the day.

The world has no hook for particulates yet: playing a pollution episode needs
``World.set_pm25_script(steps)`` (and optionally ``set_pm10_script``), stepped like
``set_water_script``; without it :func:`apply_scenario` raises :class:`ScenarioError` (or skips
the tracks with ``skip_unsupported=True``).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from simulators.world import clear_sky_lux

Script = list[tuple[float, float]]


class ScenarioError(ValueError):
    """A scenario that cannot be built or played (bad timings, a world without a hook)."""


class Quantity(StrEnum):
    WATER = "water_level"     # cm of water above the road
    CLOUD = "cloud_factor"    # fraction of the clear-sky illuminance that gets through (0..1)
    PM25 = "pm25"             # ug/m3
    PM10 = "pm10"             # ug/m3


@dataclass(frozen=True)
class Track:
    """One quantity over time: ``keyframes`` ``((elapsed_s, value), ...)``, linear between."""

    quantity: Quantity
    keyframes: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.keyframes:
            raise ScenarioError(f"track {self.quantity}: needs at least one keyframe")
        times = [t for t, _ in self.keyframes]
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ScenarioError(f"track {self.quantity}: keyframe times must not go back "
                                f"({times})")
        if any(not math.isfinite(v) for _, v in self.keyframes):
            raise ScenarioError(f"track {self.quantity}: values must be finite")

    def at(self, elapsed_s: float) -> float:
        """The value `elapsed_s` seconds into the scenario."""
        frames = self.keyframes
        times = [t for t, _ in frames]
        i = bisect.bisect_right(times, elapsed_s)
        if i == 0:
            return frames[0][1]
        if i == len(frames):
            return frames[-1][1]
        (t0, v0), (t1, v1) = frames[i - 1], frames[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (elapsed_s - t0) / (t1 - t0)

    def scaled(self, factor: float) -> Track:
        """The same track with every time multiplied by `factor`."""
        return Track(self.quantity, tuple((t * factor, v) for t, v in self.keyframes))


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A named episode: tracks over `duration_s` seconds of world time."""

    name: str
    description: str
    tracks: tuple[Track, ...]
    duration_s: float

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ScenarioError(f"scenario {self.name}: duration must be positive")
        seen = [t.quantity for t in self.tracks]
        if len(seen) != len(set(seen)):
            raise ScenarioError(f"scenario {self.name}: one track per quantity")

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        return tuple(t.quantity for t in self.tracks)

    def track(self, quantity: Quantity) -> Track | None:
        return next((t for t in self.tracks if t.quantity is quantity), None)

    def value(self, quantity: Quantity, elapsed_s: float) -> float | None:
        """`quantity` `elapsed_s` seconds in (None if the scenario does not move it)."""
        track = self.track(quantity)
        return None if track is None else track.at(elapsed_s)

    def values_at(self, elapsed_s: float) -> dict[Quantity, float]:
        return {t.quantity: t.at(elapsed_s) for t in self.tracks}

    def faster(self, speed: float) -> Scenario:
        """The same episode played `speed` times faster (``speed=30``: an hour in two
        minutes)."""
        if not speed > 0 or not math.isfinite(speed):
            raise ScenarioError(f"scenario {self.name}: speed must be positive, got {speed}")
        return replace(self, tracks=tuple(t.scaled(1 / speed) for t in self.tracks),
                       duration_s=self.duration_s / speed)

    def fit(self, duration_s: float) -> Scenario:
        """The same episode squeezed (or stretched) to last `duration_s` seconds."""
        if not duration_s > 0:
            raise ScenarioError(f"scenario {self.name}: duration must be positive")
        return self.faster(self.duration_s / duration_s)

    def script(self, quantity: Quantity, *, step_s: float | None = None,
               transform: Callable[[float, float], float] | None = None) -> Script:
        """The track as a step script for the world's setters: the value every `step_s` seconds
        (default: 1/240 of the duration, at least 1 s) and at every keyframe; consecutive
        equal steps are merged. `transform(offset_s, value)` may map each value (the storm's
        cloud factor becomes lux this way)."""
        track = self.track(quantity)
        if track is None:
            raise ScenarioError(f"scenario {self.name} has no {quantity} track")
        step = step_s if step_s is not None else max(1.0, self.duration_s / 240)
        if not step > 0:
            raise ScenarioError(f"step_s must be positive, got {step_s}")
        times = {round(i * step, 6) for i in range(int(self.duration_s // step) + 1)}
        times.update(t for t, _ in track.keyframes if 0 <= t <= self.duration_s)
        times.add(self.duration_s)
        out: Script = []
        for t in sorted(times):
            v = track.at(t)
            if transform is not None:
                v = transform(t, v)
            v = round(v, 3)
            if not out or out[-1][1] != v:
                out.append((t, v))
        return out


# -------------------------------------------------------------------------------- episodes
def _phases(*spans: float) -> list[float]:
    out, t = [0.0], 0.0
    for s in spans:
        if s < 0 or not math.isfinite(s):
            raise ScenarioError(f"phase lengths must be >= 0, got {spans}")
        t += s
        out.append(t)
    return out


def storm(*, lead_s: float = 300.0, rise_s: float = 1800.0, plateau_s: float = 1200.0,
          fall_s: float = 2400.0, peak_cm: float = 45.0, base_cm: float = 0.0,
          darkest: float = 0.08, speed: float = 1.0) -> Scenario:
    """A storm over a street: clouds close in during `lead_s`, the water rises from `base_cm` to
    `peak_cm` over `rise_s`, stays for `plateau_s`, drains over `fall_s`; daylight drops to
    `darkest` of clear sky from the end of the lead-in until a third into the fall. Defaults: a
    90-minute storm reaching 45 cm (1.5 cm/min, 15 cm per 10 min on the way up)."""
    if peak_cm < base_cm or base_cm < 0:
        raise ScenarioError(f"storm: need 0 <= base_cm <= peak_cm, got {base_cm}, {peak_cm}")
    if not 0 <= darkest <= 1:
        raise ScenarioError(f"storm: darkest is a fraction of daylight (0..1), got {darkest}")
    if rise_s + plateau_s + fall_s <= 0:
        raise ScenarioError("storm: the water needs some time to rise and fall")
    t0, t1, t2, t3 = _phases(lead_s, rise_s, plateau_s, fall_s)[1:]
    water = Track(Quantity.WATER, ((0.0, base_cm), (t0, base_cm), (t1, peak_cm),
                                   (t2, peak_cm), (t3, base_cm)))
    cloud = Track(Quantity.CLOUD, ((0.0, 1.0), (t0, darkest), (t2 + fall_s / 3, darkest),
                                   (t2 + fall_s * 2 / 3, 1.0)))
    out = Scenario(name="storm", description=f"storm: water to {peak_cm:g} cm and back",
                   tracks=(water, cloud), duration_s=t3)
    return out if speed == 1.0 else out.faster(speed)


def pollution_episode(*, rise_s: float = 3600.0, plateau_s: float = 1800.0,
                      fall_s: float = 3600.0, peak_pm25: float = 120.0,
                      base_pm25: float = 15.0, pm10_ratio: float = 1.6,
                      speed: float = 1.0) -> Scenario:
    """Smog: PM2.5 climbs from `base_pm25` to `peak_pm25` (ug/m3) over `rise_s`, stays for
    `plateau_s` and falls back over `fall_s`; PM10 follows at `pm10_ratio` times PM2.5."""
    if not 0 <= base_pm25 <= peak_pm25:
        raise ScenarioError(f"pollution: need 0 <= base <= peak, got {base_pm25}, {peak_pm25}")
    if pm10_ratio < 1:
        raise ScenarioError(f"pollution: PM10 includes PM2.5, so pm10_ratio >= 1 "
                            f"(got {pm10_ratio})")
    t0, t1, t2, t3 = _phases(rise_s, plateau_s, fall_s)
    frames = ((t0, base_pm25), (t1, peak_pm25), (t2, peak_pm25), (t3, base_pm25))
    out = Scenario(
        name="pollution", description=f"pollution episode: PM2.5 to {peak_pm25:g} ug/m3",
        tracks=(Track(Quantity.PM25, frames),
                Track(Quantity.PM10, tuple((t, v * pm10_ratio) for t, v in frames))),
        duration_s=t3)
    return out if speed == 1.0 else out.faster(speed)


def storm_script(*, duration_s: float | None = None, peak_cm: float = 45.0,
                 step_s: float | None = None) -> Script:
    """The water level of :func:`storm` (default timings, optionally squeezed into
    `duration_s`) as a script for ``World.set_water_script``."""
    s = storm(peak_cm=peak_cm)
    if duration_s is not None:
        s = s.fit(duration_s)
    return s.script(Quantity.WATER, step_s=step_s)


def pollution_script(*, duration_s: float | None = None, peak_pm25: float = 120.0,
                     quantity: Quantity = Quantity.PM25, step_s: float | None = None) -> Script:
    """PM2.5 (or PM10) of :func:`pollution_episode` as a step script."""
    s = pollution_episode(peak_pm25=peak_pm25)
    if duration_s is not None:
        s = s.fit(duration_s)
    return s.script(quantity, step_s=step_s)


def script_value(script: Sequence[tuple[float, float]], offset_s: float) -> float | None:
    """What a world playing `script` shows `offset_s` after it started (the last step at or
    before it; None before the first), exactly as the world's own step scripts do."""
    i = bisect.bisect_right([t for t, _ in script], offset_s)
    return None if i == 0 else script[i - 1][1]


# ---------------------------------------------------------------------------------- playing
class ScriptableWorld(Protocol):
    """What :func:`apply_scenario` needs of a world (:class:`simulators.world.World` has it)."""

    def now(self) -> datetime: ...
    def sun_elevation(self, when: datetime | None = None) -> float: ...
    def set_water_script(self, steps: Sequence[tuple[float, float]] | None) -> None: ...
    def set_lux_script(self, steps: Sequence[tuple[float, float]] | None) -> None: ...


#: quantity -> the world method that plays it
SETTERS: dict[Quantity, str] = {
    Quantity.WATER: "set_water_script",
    Quantity.CLOUD: "set_lux_script",
    Quantity.PM25: "set_pm25_script",
    Quantity.PM10: "set_pm10_script",
}
#: tracks a world may lack a hook for without harm (it derives them from others)
_OPTIONAL = frozenset({Quantity.PM10})


@dataclass(frozen=True, kw_only=True)
class Playback:
    """A scenario handed to a world: when it runs, and what the world plays."""

    scenario: Scenario
    starts_at: datetime
    ends_at: datetime
    played: tuple[Quantity, ...]
    skipped: tuple[Quantity, ...]

    def over(self, now: datetime) -> bool:
        return now >= self.ends_at

    def restore(self, world: ScriptableWorld) -> None:
        """Give the world back its own models: the sun for the light, the daily cycle for
        particulates. The water script stays: it ends at the storm's base level."""
        for q in self.played:
            if q is not Quantity.WATER:
                getattr(world, SETTERS[q])(None)


def apply_scenario(world: ScriptableWorld, scenario: Scenario, *,
                   start: datetime | None = None, step_s: float | None = None,
                   skip_unsupported: bool = False) -> Playback:
    """Play `scenario` in `world` from `start` (default: now; a past start joins it midway)
    through the world's script setters. Raises :class:`ScenarioError` if the world has no
    setter for a track, unless `skip_unsupported` (then the track is listed in
    ``Playback.skipped``)."""
    now = world.now()
    begin = now if start is None else start
    if begin.tzinfo is None:
        raise ScenarioError("start must be an aware datetime")
    shift = (begin - now).total_seconds()
    missing = [q for q in scenario.quantities
               if not callable(getattr(world, SETTERS[q], None)) and q not in _OPTIONAL]
    if missing and not skip_unsupported:
        names = ", ".join(f"{SETTERS[q]}()" for q in missing)
        raise ScenarioError(f"scenario {scenario.name}: this world cannot play "
                            f"{', '.join(missing)}: it has no {names} (see "
                            "simulators/scenarios.py)")
    played: list[Quantity] = []
    skipped: list[Quantity] = []
    for q in scenario.quantities:
        setter = getattr(world, SETTERS[q], None)
        if not callable(setter):
            skipped.append(q)
            continue
        transform: Callable[[float, float], float] | None = None
        if q is Quantity.CLOUD:
            def transform(t: float, factor: float) -> float:
                when = begin + timedelta(seconds=t)
                return clear_sky_lux(world.sun_elevation(when)) * factor
        script = scenario.script(q, step_s=step_s, transform=transform)
        setter([(t + shift, v) for t, v in script])
        played.append(q)
    return Playback(scenario=scenario, starts_at=begin,
                    ends_at=begin + timedelta(seconds=scenario.duration_s),
                    played=tuple(played), skipped=tuple(skipped))
