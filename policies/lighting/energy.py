"""Burning hours and energy per group: a pure accumulator the agent persists across restarts.

Energy is estimated as rated watts x level fraction x time (LED drivers are close to linear in
their dimming range); the lamp read-back compares it with measured power.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class GroupCounters:
    burning_s: float = 0.0    # seconds with level > 0
    energy_wh: float = 0.0

    @property
    def burning_hours(self) -> float:
        return self.burning_s / 3600.0

    @property
    def energy_kwh(self) -> float:
        return self.energy_wh / 1000.0


@dataclass(frozen=True, kw_only=True)
class Counters:
    groups: Mapping[str, GroupCounters] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the agent's state file and telemetry."""
        return {name: {"burning_s": c.burning_s, "energy_wh": c.energy_wh}
                for name, c in sorted(self.groups.items())}

    def plus(self, other: Counters) -> Counters:
        """Both counts added group by group (saved totals and what was counted since)."""
        groups = dict(self.groups)
        for name, c in other.groups.items():
            mine = groups.get(name, GroupCounters())
            groups[name] = GroupCounters(burning_s=mine.burning_s + c.burning_s,
                                         energy_wh=mine.energy_wh + c.energy_wh)
        return Counters(groups=groups)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counters:
        """The inverse of :meth:`to_json`; raises ValueError on malformed data."""
        groups: dict[str, GroupCounters] = {}
        for name, c in data.items():
            try:
                groups[str(name)] = GroupCounters(burning_s=float(c["burning_s"]),
                                                  energy_wh=float(c["energy_wh"]))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"energy counters: group {name!r}: {err}") from err
        return cls(groups=groups)


def accumulate(counters: Counters, *, levels: Mapping[str, float],
               rated_w: Mapping[str, float], dt_s: float) -> Counters:
    """Add `dt_s` seconds at `levels` (percent per group) to `counters`.

    Groups missing from `rated_w` count burning time but no energy. A negative `dt_s` (a clock
    that went backwards) is a ValueError: the caller decides what time passed.
    """
    if dt_s < 0:
        raise ValueError(f"accumulate: negative interval {dt_s} s")
    groups = dict(counters.groups)
    for name, level in levels.items():
        c = groups.get(name, GroupCounters())
        if level > 0:
            c = GroupCounters(
                burning_s=c.burning_s + dt_s,
                energy_wh=c.energy_wh + rated_w.get(name, 0.0) * level / 100.0 * dt_s / 3600.0)
        groups[name] = c
    return Counters(groups=groups)
