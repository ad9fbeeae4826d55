"""An active alert's lighting action, as levels over time for the lighting resolver.

The agent keeps one lighting override per group that some active alert drives
(:func:`lighting_demands`), with the level :func:`action_level` gives now; for a flash it
re-resolves the group at :func:`next_change_ms`. The flash's phase is anchored at the moment the
alert fired, so every lamp of the group (and every restart) flashes in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from policies.alerts.engine import ActiveAlert
from policies.alerts.model import LightingAction, Pattern, Severity


def action_level(action: LightingAction, *, now_ms: int, since_ms: int) -> float:
    """The level (0..100) `action` asks for at `now_ms`, for an alert active since `since_ms`:
    `level` for a steady action; for a flash `level` during the first `on_s` of every
    ``on_s + off_s`` period and `off_level` during the rest."""
    if action.pattern is Pattern.STEADY:
        return action.level
    on_ms = round(action.on_s * 1000)
    period = on_ms + round(action.off_s * 1000)
    phase = max(0, now_ms - since_ms) % period
    return action.level if phase < on_ms else action.off_level


def next_change_ms(action: LightingAction, *, now_ms: int, since_ms: int) -> int | None:
    """When the level of `action` changes next (Unix ms, after `now_ms`); None for a steady
    action."""
    if action.pattern is Pattern.STEADY:
        return None
    on_ms = round(action.on_s * 1000)
    period = on_ms + round(action.off_s * 1000)
    if now_ms < since_ms:
        return since_ms
    phase = (now_ms - since_ms) % period
    return now_ms + (on_ms - phase if phase < on_ms else period - phase)


@dataclass(frozen=True, kw_only=True)
class LightingDemand:
    """What the alerts ask of one lighting group now: one override for the resolver."""

    group: str                    # a group name, or "*" for every group
    level: float                  # at `now_ms`
    priority: int
    override_id: str              # stable while the same alert drives the group
    rule: str
    device: str
    point: str
    severity: Severity
    since_ms: int                 # the alert fired (the flash's phase origin)
    next_change_ms: int | None    # re-resolve then (flash); None: steady
    action: LightingAction


def lighting_demands(active: Iterable[ActiveAlert], *, now_ms: int) -> tuple[LightingDemand, ...]:
    """One demand per group driven by an active alert: the highest `priority` wins, then the
    worse severity, then the alert that fired first. Sorted by group."""
    best: dict[str, tuple[tuple[int, int, int], ActiveAlert, LightingAction]] = {}
    for alert in active:
        action = alert.lighting
        if action is None:
            continue
        rank = (action.priority, alert.severity.rank, -alert.fired_at)
        current = best.get(action.group)
        if current is None or rank > current[0]:
            best[action.group] = (rank, alert, action)
    out: list[LightingDemand] = []
    for group in sorted(best):
        _, alert, action = best[group]
        out.append(LightingDemand(
            group=group, level=action_level(action, now_ms=now_ms, since_ms=alert.fired_at),
            priority=action.priority, override_id=f"alert:{alert.rule}:{alert.device}",
            rule=alert.rule, device=alert.device, point=alert.point, severity=alert.severity,
            since_ms=alert.fired_at,
            next_change_ms=next_change_ms(action, now_ms=now_ms, since_ms=alert.fired_at),
            action=action))
    return tuple(out)
