"""Alerts in the running agent: the pure rules of `policies.alerts` fed with every reading.

The monitor listens to the latest-values table (every poll, before any deadband), evaluates the
rules about once a second (and at the next change of a flash pattern), sends each alert and its
clearing as an event (the store's priority lane: alerts go out before a telemetry backlog),
turns the lighting actions of active alerts into overrides for the lighting controller, and
keeps its state in the store so that an alert active before a restart stays active.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from drivers.sample import Sample
from gateway.codec import Severity
from gateway.commands.target import RulesRejected
from gateway.latest import LatestValues
from gateway.lighting import LightingController
from gateway.store import KeyValue
from policies.alerts import (
    ActiveAlert,
    AlertConfigError,
    AlertRules,
    AlertState,
    LightingDemand,
    evaluate,
    lighting_demands,
    load_alerts,
    state_from_json,
    state_to_json,
)
from policies.lighting import Override, OverrideSource

log = logging.getLogger("edgegw.alerts")
_STATE_KEY = "alerts.state"
_RULES_KEY = "alerts.rules"

class Emit(Protocol):
    def __call__(self, type_: str, device: str | None = None,
                 detail: Mapping[str, Any] | None = None, *,
                 severity: Severity | None = None) -> None: ...


class AlertMonitor:
    """Evaluates the alert rules against every reading; an async context manager."""

    def __init__(self, raw: dict[str, Any] | None, *, timezone: str | None,
                 points: Mapping[tuple[str, str], bool], groups: list[str],
                 poll_periods: Mapping[tuple[str, str], float], latest: LatestValues,
                 emit: Emit, lighting: LightingController | None,
                 kv: KeyValue | None = None,
                 wall_clock: Callable[[], float] = time.time, tick: float = 1.0) -> None:
        self._timezone = timezone
        self._points = points
        self._groups = groups
        self._poll_periods = dict(poll_periods)
        self._emit = emit
        self._lighting = lighting
        self._kv = kv
        self._wall = wall_clock
        self._tick = tick
        self.raw = raw
        self.rules = self.check(self.raw)
        self.state = AlertState()
        self._rules_set = False
        self._stepped = False
        self.active: tuple[ActiveAlert, ...] = ()
        self.progress: Callable[[], None] = lambda: None
        self.demands: tuple[LightingDemand, ...] = ()      # what the alerts ask of the lamps
        self._buffer: list[Sample] = []
        self._unsubscribe = latest.subscribe(self._buffer.extend)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_change: int | None = None
        if kv is not None:
            self.restore({k: v for k in (_RULES_KEY, _STATE_KEY)
                          if (v := kv.kv_get(k)) is not None})

    def check(self, raw: dict[str, Any] | None) -> AlertRules:
        try:
            rules, warnings = load_alerts(raw or {}, timezone=self._timezone,
                                          points=self._points, groups=self._groups)
        except AlertConfigError as err:
            raise RulesRejected([(f"alerts.{p}" if p else "alerts", m)
                                 for p, m in err.problems]) from None
        for w in warnings:
            log.warning("alert rules: %s", w)
        return rules

    def set_rules(self, raw: dict[str, Any] | None) -> None:
        """New rules, checked, kept in the store (they outlive a restart), applied."""
        self.rules = self.check(raw)
        self.raw = raw
        self._rules_set = True
        if self._kv is not None:
            self._kv.kv_set(_RULES_KEY, json.dumps(raw).encode())
        self._wake.set()

    def restore(self, saved: Mapping[str, bytes]) -> None:
        """Merge what the store kept (it may arrive after the monitor started): remote rules
        unless set since, the alerts' state unless evaluation began without it."""
        blob = saved.get(_RULES_KEY)
        if blob and not self._rules_set:
            try:
                raw = json.loads(blob)
                rules = self.check(raw)
            except ValueError as err:
                log.error("alert rules set remotely are unusable (%s); using the config's", err)
            else:
                if isinstance(raw, dict):
                    self.raw, self.rules = raw, rules
        blob = saved.get(_STATE_KEY)
        if blob and not self._stepped:
            try:
                self.state = state_from_json(json.loads(blob))
            except ValueError as err:
                log.warning("saved alert state unusable (%s): starting fresh", err)
        self._wake.set()

    async def __aenter__(self) -> AlertMonitor:
        self._task = asyncio.create_task(self.serve(), name="alerts")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._save()

    def _save(self) -> None:
        if self._kv is not None:
            self._kv.kv_set(_STATE_KEY, json.dumps(state_to_json(self.state)).encode())

    async def serve(self) -> None:
        """Evaluate about once a tick until cancelled; a failing evaluation ends it (the
        supervisor reports and restarts it)."""
        while True:
            self.progress()
            wait = self._tick
            if self._next_change is not None:
                wait = max(0.0, min(wait, self._next_change / 1000 - self._wall()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self.step()

    def step(self) -> tuple[ActiveAlert, ...]:
        now_ms = int(self._wall() * 1000)
        samples, self._buffer[:] = list(self._buffer), []
        result = evaluate(now_ms, samples=samples, rules=self.rules, state=self.state,
                          poll_periods=self._poll_periods)
        self.state = result.state
        self._stepped = True
        self.active = result.active
        for ev in result.events:
            log.log(logging.WARNING if ev.phase.value == "fired" else logging.INFO,
                    "alert %s %s.%s: %s", ev.type, ev.device, ev.point, ev.reason)
            self._emit(ev.type, ev.device, ev.detail(), severity=Severity(ev.severity.value))
        if result.events:
            self._save()
        self._drive_lighting(now_ms)
        return self.active

    def _drive_lighting(self, now_ms: int) -> None:
        demands = lighting_demands(self.active, now_ms=now_ms)
        self.demands = demands
        changes = [d.next_change_ms for d in demands if d.next_change_ms is not None]
        self._next_change = min(changes) if changes else None
        if self._lighting is None:
            return
        overrides = {d.override_id: Override(id=d.override_id, group=d.group, level=d.level,
                                             priority=d.priority, source=OverrideSource.ALERT)
                     for d in demands}
        self._lighting.set_alert_overrides(overrides)

    def snapshot(self) -> list[dict[str, Any]]:
        return [a.to_json() for a in self.active]
