"""Alert evaluation: (now, new readings, rules, state) -> (state, events, active alerts).

:func:`evaluate` has no I/O and no clock of its own. The agent calls it with the wall clock, the
readings that arrived since the last call and the state the last call returned; tests call the
very same function with scripted time. Every rule instance (one rule on one point) is a switch:

- **firing**: the condition (reading above the level, window mean above it, rise larger than
  the amount, sensor silent or stuck) must hold for `hold`, judged between readings: the first
  reading that meets it starts the hold, a reading at least `hold` later with every reading in
  between meeting it fires. A reading that fails it restarts the hold.
- **clearing**: the clear condition (at or below `clear`, the hysteresis level) must hold for
  `clear_after`, and the alert must have been active for `min_active`; a value between `clear`
  and the threshold neither fires nor clears, so noise inside that band cannot flap the alert.
- **staleness** is judged on time passing: call :func:`evaluate` with no readings and a silent
  sensor's rule fires once it has been quiet long enough.

The state is updated in place for speed (windows are deques) and handed back in the result; the
state object passed in is spent and refuses further use, so a caller cannot fork it by mistake
(:meth:`AlertState.copy` forks on purpose). :func:`state_to_json` / :func:`state_from_json` keep
active alerts and windows across a restart.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from policies.alerts.model import (
    CLEARED_SUFFIX,
    AlertRules,
    AnyRule,
    Direction,
    LightingAction,
    MeanRule,
    Pattern,
    RateRule,
    RuleKind,
    Severity,
    StaleRule,
    ThresholdRule,
)
from policies.alerts.window import TimeWindow

STATE_VERSION = 1
#: a reading this much older than the newest of its point means the clock was set back (the
#: point's history restarts); a reading less late is a straggler and is dropped
JUMP_BACK_MS = 30_000

Value = float | int | bool | str | None
#: ``(device, point, ts_ms, value)``; a value of None is a failed read
SampleTuple = tuple[str, str, int, Value]


class SampleLike(Protocol):
    """Any reading object with these attributes (the agent's own samples fit); a `quality`
    attribute other than ``"good"`` makes it a failed read."""

    @property
    def device(self) -> str: ...
    @property
    def point(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def value(self) -> Value: ...


class Phase(StrEnum):
    FIRED = "fired"
    CLEARED = "cleared"


class StaleCondition(StrEnum):
    SILENT = "silent"         # nothing for the silent limit
    UNCHANGED = "unchanged"   # the same value for the unchanged limit


# ----------------------------------------------------------------------------------- output
@dataclass(frozen=True, kw_only=True)
class AlertEvent:
    """An alert firing or clearing, as the platform should see it.

    `type` is the rule's name, or ``<name>_cleared``. `since` is when the condition began for a
    firing event, and when the alert fired for a clear; `duration_s` (clears only) is how long
    the alert was active. `values` are the figures that tripped (or ended) it: `value` (latest
    reading), `threshold`, `clear`, `direction`, and per kind `mean`, `window_s`, `readings`,
    `delta`, `from`, `condition`, ...; clears add `peak`, the worst figure while active.
    """

    type: str
    phase: Phase
    rule: str
    kind: RuleKind
    severity: Severity
    device: str
    point: str
    ts: int
    since: int
    values: Mapping[str, Any]
    reason: str
    duration_s: float | None = None

    def detail(self) -> dict[str, Any]:
        """The event's `detail` object for the uplink (JSON-ready)."""
        out: dict[str, Any] = {"rule": self.rule, "kind": self.kind.value,
                               "point": self.point, "since": self.since}
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        out.update(self.values)
        out["reason"] = self.reason
        return out

    def to_json(self) -> dict[str, Any]:
        """The whole event, shaped like the decoded platform event (without `gateway`)."""
        return {"kind": "event", "ts": self.ts, "type": self.type, "device": self.device,
                "severity": self.severity.value, "detail": self.detail()}


@dataclass(frozen=True, kw_only=True)
class ActiveAlert:
    """An alert that is on now (for `get_state` and the lighting action)."""

    rule: str
    kind: RuleKind
    severity: Severity
    device: str
    point: str
    since: int            # the condition began
    fired_at: int
    value: float | None   # the latest figure judged (reading, mean or delta)
    peak: float | None    # the worst figure while active
    values: Mapping[str, Any]   # as in the firing event
    reason: str
    lighting: LightingAction | None = None

    @property
    def type(self) -> str:
        return self.rule

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.device, self.point)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.rule, "severity": self.severity.value, "kind": self.kind.value,
            "device": self.device, "point": self.point, "since": self.since,
            "fired_at": self.fired_at, "value": self.value, "peak": self.peak,
            "detail": dict(self.values), "reason": self.reason}
        if self.lighting is not None:
            action = self.lighting.model_dump(mode="json")
            if self.lighting.pattern is Pattern.STEADY:
                for key in ("on_s", "off_s", "off_level"):
                    action.pop(key)
            out["lighting"] = action
        return out


# ------------------------------------------------------------------------------------ state
@dataclass(slots=True)
class _Instance:
    """One rule on one point."""

    rule: str
    device: str
    point: str
    fingerprint: str
    last_ts: int | None = None        # newest reading processed (failed reads included)
    # the switch
    active: bool = False
    pending: int | None = None        # the condition to switch has held since (ms)
    judged_at: int | None = None      # last reading judged while pending
    onset: int | None = None          # the firing condition began
    fired_at: int | None = None
    peak: float | None = None
    metric: float | None = None
    fired_values: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    last_values: dict[str, Any] = field(default_factory=dict)   # of the last judgement
    clear_why: str | None = None      # why the pending clear (None: the usual level)
    # rate and mean
    window: TimeWindow | None = None
    # stale
    last_seen: int | None = None      # newest reading with a value
    run_value: float | str | None = None
    run_start: int | None = None      # the current run of equal readings began
    run_last: int | None = None


@dataclass(slots=True)
class _Data:
    started: int | None = None        # the first evaluate of this process (silence baseline)
    instances: dict[tuple[str, str, str], _Instance] = field(default_factory=dict)


class AlertState:
    """What evaluation remembers between calls. Start with ``AlertState()``; afterwards always
    pass the state the last result returned."""

    __slots__ = ("_data",)

    def __init__(self, _data: _Data | None = None) -> None:
        self._data: _Data | None = _data if _data is not None else _Data()

    def _take(self) -> _Data:
        data = self._live()
        self._data = None
        return data

    def _live(self) -> _Data:
        if self._data is None:
            raise ValueError("this AlertState was already passed to evaluate(): use the state "
                             "in its result (or AlertState.copy() to fork one)")
        return self._data

    def copy(self) -> AlertState:
        """An independent copy (for previews and tests)."""
        return AlertState(copy.deepcopy(self._live()))

    @property
    def memory(self) -> int:
        """Window buckets held over all rules: the state's size, for tests and monitoring."""
        return sum(len(i.window) for i in self._live().instances.values()
                   if i.window is not None)


@dataclass(frozen=True, kw_only=True)
class AlertResult:
    state: AlertState
    events: tuple[AlertEvent, ...]
    active: tuple[ActiveAlert, ...]   # worst first, then oldest first


# ------------------------------------------------------------------------------- formatting
def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120 and minutes % 60:
        return f"{minutes} min"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def _round(v: float) -> float:
    return round(v, 4)


# ------------------------------------------------------------------------------- evaluation
_Reading = tuple[int, str, str, float | str | None]   # (ts, device, point, value)


def _normalise(samples: Iterable[SampleLike | SampleTuple],
               watched: frozenset[tuple[str, str]]) -> list[_Reading]:
    out: list[_Reading] = []
    for s in samples:
        if isinstance(s, tuple):
            device, point, ts, value = s
        else:
            device, point, ts, value = s.device, s.point, s.ts, s.value
            quality = getattr(s, "quality", None)
            if quality is not None and str(quality) != "good":
                value = None
        if (device, point) not in watched:
            continue
        v: float | str | None
        if isinstance(value, bool):
            v = 1.0 if value else 0.0
        elif isinstance(value, (int, float)):
            v = float(value) if math.isfinite(value) else None
        else:
            v = value
        out.append((int(ts), device, point, v))
    out.sort(key=lambda r: r[0])
    return out


def _make_window(rule: AnyRule) -> TimeWindow | None:
    if isinstance(rule, (RateRule, MeanRule)):
        return TimeWindow(int(rule.window * 1000))
    return None


class _Run:
    """One evaluate call: the rules, the time, and the events it produces."""

    def __init__(self, rules: AlertRules, data: _Data, now: int,
                 poll_periods: Mapping[tuple[str, str], float] | None) -> None:
        self.rules = rules
        self.data = data
        self.now = now
        self.poll_periods = poll_periods or {}
        self.events: list[AlertEvent] = []

    # ------------------------------------------------------------------ instance bookkeeping
    def sync(self) -> dict[tuple[str, str], list[tuple[AnyRule, _Instance]]]:
        """Match the state's instances to the rules: new ones start, removed ones clear,
        changed ones keep their alert (and their window when its length is unchanged)."""
        old = self.data.instances
        new: dict[tuple[str, str, str], _Instance] = {}
        by_point: dict[tuple[str, str], list[tuple[AnyRule, _Instance]]] = {}
        for rule, p in self.rules.instances:
            key = (rule.name, p.device, p.point)
            fp = self.rules.fingerprints[rule.name]
            inst = old.get(key)
            if inst is None or inst.fingerprint != fp:
                fresh = _Instance(rule.name, p.device, p.point, fp, window=_make_window(rule))
                if inst is not None:
                    _carry(inst, fresh)
                inst = fresh
            new[key] = inst
            by_point.setdefault(p.key, []).append((rule, inst))
        for key, inst in old.items():
            if key not in new and inst.active:
                self._removed(inst)
        self.data.instances = new
        return by_point

    def _removed(self, inst: _Instance) -> None:
        fired = inst.fired_at if inst.fired_at is not None else self.now
        severity = Severity(inst.fired_values.get("severity", Severity.INFO.value))
        kind = RuleKind(inst.fired_values.get("kind", RuleKind.THRESHOLD.value))
        self.events.append(AlertEvent(
            type=inst.rule + CLEARED_SUFFIX, phase=Phase.CLEARED, rule=inst.rule, kind=kind,
            severity=Severity.INFO, device=inst.device, point=inst.point, ts=self.now,
            since=fired, duration_s=max(0.0, (self.now - fired) / 1000),
            values={"alert_severity": severity.value, "peak": inst.peak},
            reason="the rule was removed from the configuration"))

    # ---------------------------------------------------------------------------- readings
    def feed(self, rule: AnyRule, inst: _Instance, ts: int, value: float | str | None) -> None:
        if inst.last_ts is not None and ts <= inst.last_ts:
            if ts > inst.last_ts - JUMP_BACK_MS:
                return   # the same reading twice, or one that arrived late: already judged
            # the clock went backwards: the history no longer lines up, start it again
            _restart(inst)
        inst.last_ts = ts
        if value is None:
            return
        if isinstance(rule, StaleRule):
            inst.last_seen = ts
            if inst.run_value is None or not _same(inst.run_value, value, rule.tolerance):
                inst.run_value, inst.run_start = value, ts
            inst.run_last = ts
            return
        if isinstance(value, str):
            return
        metric: float | None
        values: dict[str, Any] = {"value": _round(value)}
        if isinstance(rule, ThresholdRule):
            metric = value
        elif isinstance(rule, MeanRule):
            assert inst.window is not None
            inst.window.add(ts, value)
            metric = None
            if inst.window.covered_ms >= rule.coverage * rule.window * 1000:
                metric = inst.window.mean()
            values.update(mean=None if metric is None else _round(metric),
                          window_s=rule.window, readings=inst.window.count)
        else:
            assert inst.window is not None
            inst.window.add(ts, value)
            ref = inst.window.low() if rule.direction is Direction.RISE else inst.window.high()
            assert ref is not None
            metric = value - ref[0] if rule.direction is Direction.RISE else ref[0] - value
            values.update(delta=_round(metric), window_s=rule.window, **{"from": ref[0]},
                          from_ts=ref[1])
        self.judge(rule, inst, ts, metric, values)

    def judge(self, rule: ThresholdRule | RateRule | MeanRule, inst: _Instance, t: int,
              metric: float | None, values: dict[str, Any]) -> None:
        """One step of the hysteresis switch at reading time `t`."""
        if metric is None:            # not judged yet (a mean without enough readings)
            inst.pending = None
            return
        inst.metric = metric
        up = rule.worse_up
        fires = metric > rule.threshold if up else metric < rule.threshold
        clears = metric <= rule.clear_level if up else metric >= rule.clear_level
        outside = False
        if rule.hours is not None:
            local = dt.datetime.fromtimestamp(t / 1000, self.rules.tz).time()
            if not rule.hours.contains(local):
                fires, clears, outside = False, True, True
        values.update(threshold=rule.threshold, clear=rule.clear_level,
                      direction=rule.direction.value)
        inst.last_values = values
        if not inst.active:
            if not fires:
                inst.pending = None
                return
            if inst.pending is None:
                inst.pending = t
            if t - inst.pending >= rule.hold * 1000:
                self._fire(rule, inst, t, since=inst.pending, values=values,
                           reason=_fire_reason(rule, inst, values, t - inst.pending))
            return
        if inst.peak is None or (metric > inst.peak if up else metric < inst.peak):
            inst.peak = metric
        if not clears:
            inst.pending = None
            return
        if inst.pending is None:
            inst.pending = t
        inst.judged_at = t
        inst.clear_why = f"outside its hours ({rule.hours.label})" if (
            outside and rule.hours is not None) else None
        self._maybe_clear(rule, inst, t)

    def _maybe_clear(self, rule: ThresholdRule | RateRule | MeanRule, inst: _Instance,
                     t: int) -> None:
        assert inst.pending is not None and inst.fired_at is not None
        held = (inst.judged_at or inst.pending) - inst.pending
        if held < rule.clear_after * 1000 or t - inst.fired_at < rule.min_active * 1000:
            return
        why = inst.clear_why
        if why is None:
            what = {RuleKind.MEAN: "the mean ", RuleKind.RATE: "the change "}.get(
                rule.rule_kind, "")
            level = "at or below" if rule.worse_up else "at or above"
            shown = _num(inst.metric) if inst.metric is not None else "?"
            why = f"{what}{shown} back {level} {_num(rule.clear_level)}"
        self._clear(rule, inst, t, values=dict(inst.last_values),
                    reason=f"{inst.device}/{inst.point}: {why}")

    # -------------------------------------------------------------------------------- time
    def tick(self, rule: AnyRule, inst: _Instance) -> None:
        """What time alone decides: staleness, and clears that waited for `min_active`."""
        if isinstance(rule, StaleRule):
            self._stale(rule, inst)
        elif inst.active and inst.pending is not None:
            self._maybe_clear(rule, inst, max(self.now, inst.judged_at or self.now))

    def _stale(self, rule: StaleRule, inst: _Instance) -> None:
        assert self.data.started is not None
        limit: float | None = rule.silent
        period = self.poll_periods.get((inst.device, inst.point))
        if rule.silent_polls is not None and period is not None and period > 0:
            limit = rule.silent_polls * period
        baseline = max(inst.last_seen if inst.last_seen is not None else self.data.started,
                       self.data.started)
        silent = limit is not None and self.now - baseline > limit * 1000
        unchanged = (rule.unchanged is not None and inst.run_start is not None
                     and inst.run_last is not None
                     and inst.run_last - inst.run_start >= rule.unchanged * 1000)
        where = f"{inst.device}/{inst.point}"
        if not inst.active:
            if silent and limit is not None:
                polls = "" if rule.silent_polls is None or period is None else (
                    f" ({_num(rule.silent_polls)} polls of {_num(period)} s)")
                last = " since the gateway started" if inst.last_seen is None else ""
                self._fire(rule, inst, self.now, since=baseline, values={
                    "condition": StaleCondition.SILENT.value, "last_seen": inst.last_seen,
                    "silent_s": (self.now - baseline) / 1000, "limit_s": limit},
                    reason=f"{where} sent nothing for "
                           f"{_dur((self.now - baseline) / 1000)}{polls}{last}")
            elif unchanged and inst.run_start is not None and inst.run_last is not None:
                shown = (_num(inst.run_value) if isinstance(inst.run_value, float)
                         else repr(inst.run_value))
                self._fire(rule, inst, self.now, since=inst.run_start, values={
                    "condition": StaleCondition.UNCHANGED.value, "value": inst.run_value,
                    "unchanged_s": (inst.run_last - inst.run_start) / 1000,
                    "limit_s": rule.unchanged},
                    reason=f"{where} has read {shown} for "
                           f"{_dur((inst.run_last - inst.run_start) / 1000)}")
            return
        assert inst.fired_at is not None
        back = inst.last_seen is not None and inst.last_seen > inst.fired_at
        if (back and not silent and not unchanged
                and self.now - inst.fired_at >= rule.min_active * 1000):
            cond = inst.fired_values.get("condition")
            why = ("readings are back" if cond == StaleCondition.SILENT.value
                   else "the reading changes again")
            self._clear(rule, inst, self.now, values={
                "condition": cond, "value": inst.run_value, "last_seen": inst.last_seen},
                reason=f"{where}: {why}")

    # ---------------------------------------------------------------------- transitions
    def _fire(self, rule: AnyRule, inst: _Instance, t: int, *, since: int,
              values: dict[str, Any], reason: str) -> None:
        inst.active, inst.pending, inst.judged_at = True, None, None
        inst.onset, inst.fired_at = since, t
        inst.peak = inst.metric if not isinstance(rule, StaleRule) else None
        inst.fired_values = {**values, "severity": rule.severity.value,
                             "kind": rule.rule_kind.value}
        inst.reason = reason
        if isinstance(rule, (ThresholdRule, RateRule, MeanRule)):
            values = {**values, "hold_s": rule.hold}
        self.events.append(AlertEvent(
            type=rule.name, phase=Phase.FIRED, rule=rule.name, kind=rule.rule_kind,
            severity=rule.severity, device=inst.device, point=inst.point, ts=t, since=since,
            values=values, reason=reason))

    def _clear(self, rule: AnyRule, inst: _Instance, t: int, *, values: dict[str, Any],
               reason: str) -> None:
        assert inst.fired_at is not None
        fired = inst.fired_at
        extra: dict[str, Any] = {"alert_severity": rule.severity.value}
        if not isinstance(rule, StaleRule):
            extra["peak"] = None if inst.peak is None else _round(inst.peak)
        self.events.append(AlertEvent(
            type=rule.name + CLEARED_SUFFIX, phase=Phase.CLEARED, rule=rule.name,
            kind=rule.rule_kind, severity=Severity.INFO, device=inst.device, point=inst.point,
            ts=t, since=fired, duration_s=(t - fired) / 1000, values={**values, **extra},
            reason=reason))
        inst.active, inst.pending, inst.judged_at, inst.clear_why = False, None, None, None
        inst.onset = inst.fired_at = None
        inst.peak = None
        inst.fired_values = {}
        inst.reason = ""

    def active(self, rules_by_name: Mapping[str, AnyRule]) -> list[ActiveAlert]:
        out: list[ActiveAlert] = []
        for inst in self.data.instances.values():
            if not inst.active or inst.fired_at is None or inst.onset is None:
                continue
            rule = rules_by_name[inst.rule]
            values = {k: v for k, v in inst.fired_values.items()
                      if k not in ("severity", "kind")}
            out.append(ActiveAlert(
                rule=rule.name, kind=rule.rule_kind, severity=rule.severity,
                device=inst.device, point=inst.point, since=inst.onset,
                fired_at=inst.fired_at,
                value=None if inst.metric is None else _round(inst.metric),
                peak=None if inst.peak is None else _round(inst.peak), values=values,
                reason=inst.reason, lighting=rule.lighting))
        out.sort(key=lambda a: (-a.severity.rank, a.fired_at, a.rule, a.device, a.point))
        return out


def _fire_reason(rule: ThresholdRule | RateRule | MeanRule, inst: _Instance,
                 values: Mapping[str, Any], held_ms: int) -> str:
    where = f"{inst.device}/{inst.point}"
    held = f" for {_dur(held_ms / 1000)}" if rule.hold > 0 else ""
    if isinstance(rule, ThresholdRule):
        return (f"{where} {_num(values['value'])} {rule.direction.value} "
                f"{_num(rule.threshold)}{held}")
    if isinstance(rule, MeanRule):
        return (f"{where} {_dur(rule.window)} mean {_num(values['mean'])} "
                f"{rule.direction.value} {_num(rule.threshold)}{held}")
    verb = "rose" if rule.direction is Direction.RISE else "fell"
    return (f"{where} {verb} {_num(values['delta'])} within {_dur(rule.window)} (from "
            f"{_num(values['from'])} to {_num(values['value'])}), more than "
            f"{_num(rule.threshold)}{held}")


def _same(a: float | str, b: float | str, tolerance: float) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return abs(a - b) <= tolerance


def _restart(inst: _Instance) -> None:
    inst.pending = inst.judged_at = None
    if inst.window is not None:
        inst.window.clear()
    inst.run_value = inst.run_start = inst.run_last = None
    inst.last_seen = None


def _carry(old: _Instance, new: _Instance) -> None:
    """A changed rule keeps its alert, the point's history and, if the window kept its length,
    the window."""
    if old.active:
        new.active, new.onset, new.fired_at = True, old.onset, old.fired_at
        new.peak, new.metric = old.peak, old.metric
        new.fired_values, new.reason = old.fired_values, old.reason
    new.last_ts, new.last_seen = old.last_ts, old.last_seen
    new.run_value, new.run_start, new.run_last = old.run_value, old.run_start, old.run_last
    if (old.window is not None and new.window is not None
            and old.window.span_ms == new.window.span_ms):
        new.window = old.window


def evaluate(now_ms: int, *, samples: Sequence[SampleLike | SampleTuple], rules: AlertRules,
             state: AlertState,
             poll_periods: Mapping[tuple[str, str], float] | None = None) -> AlertResult:
    """Advance every alert to `now_ms` (Unix ms) with the readings that arrived since the last
    call (``(device, point, ts_ms, value)`` tuples or sample objects, any order; a value of
    None, NaN or a sample whose quality is not good is a failed read).

    `poll_periods` gives each point's poll period in seconds, for `silent_polls`. `state` is
    spent: continue with ``result.state``. Alerts of rules that are gone clear at once;
    a changed rule keeps its active alert and judges it by the new settings.
    """
    data = state._take()
    if data.started is None:
        data.started = now_ms
    run = _Run(rules, data, now_ms, poll_periods)
    by_point = run.sync()
    for ts, device, point, value in _normalise(samples, rules.points):
        for rule, inst in by_point.get((device, point), ()):
            run.feed(rule, inst, ts, value)
    for rule, p in rules.instances:
        run.tick(rule, data.instances[(rule.name, p.device, p.point)])
    run.events.sort(key=lambda e: e.ts)
    active = run.active({r.name: r for r in rules.rules})
    return AlertResult(state=AlertState(data), events=tuple(run.events), active=tuple(active))


def active_alerts(state: AlertState, rules: AlertRules) -> tuple[ActiveAlert, ...]:
    """The alerts active in `state` without advancing it (e.g. for `get_state` right after a
    restart); alerts of rules that are gone are left out (the next evaluate clears them)."""
    data = state._live()
    names = {r.name: r for r in rules.rules}
    live = _Data(started=data.started, instances={
        k: i for k, i in data.instances.items() if i.rule in names})
    return tuple(_Run(rules, live, data.started or 0, None).active(names))


# ------------------------------------------------------------------------------ persistence
_INSTANCE_FIELDS = ("last_ts", "active", "pending", "judged_at", "onset", "fired_at", "peak",
                    "metric", "fired_values", "reason", "last_values", "clear_why",
                    "last_seen", "run_value", "run_start", "run_last")


def state_to_json(state: AlertState) -> dict[str, Any]:
    """The state as JSON-ready data: active alerts, timers and windows."""
    data = state._live()
    out: list[dict[str, Any]] = []
    for inst in data.instances.values():
        row: dict[str, Any] = {"rule": inst.rule, "device": inst.device, "point": inst.point,
                               "fingerprint": inst.fingerprint}
        row.update({f: getattr(inst, f) for f in _INSTANCE_FIELDS})
        if inst.window is not None:
            row["window"] = {"span_ms": inst.window.span_ms, "buckets": inst.window.to_json()}
        out.append(row)
    return {"version": STATE_VERSION, "instances": out}


def state_from_json(obj: Any) -> AlertState:
    """A state from :func:`state_to_json`. Silence is measured again from the first evaluate
    after loading (the gateway was off, not the sensors). Raises ValueError if malformed."""
    if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
        raise ValueError(f"alert state: expected an object with version {STATE_VERSION}")
    rows = obj.get("instances")
    if not isinstance(rows, list):
        raise ValueError("alert state: `instances` must be a list")
    data = _Data()
    for i, row in enumerate(rows):
        try:
            inst = _Instance(str(row["rule"]), str(row["device"]), str(row["point"]),
                             str(row["fingerprint"]))
            for f in _INSTANCE_FIELDS:
                setattr(inst, f, row.get(f, getattr(inst, f)))
            _check_instance(inst)
            if "window" in row:
                w = row["window"]
                inst.window = TimeWindow(int(w["span_ms"]))
                inst.window.load(w["buckets"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"alert state: instances[{i}]: {err}") from None
        data.instances[(inst.rule, inst.device, inst.point)] = inst
    return AlertState(data)


def _check_instance(inst: _Instance) -> None:
    for f in ("last_ts", "pending", "judged_at", "onset", "fired_at", "last_seen", "run_start",
              "run_last"):
        v = getattr(inst, f)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"{f} must be milliseconds, got {v!r}")
    for f in ("peak", "metric"):
        v = getattr(inst, f)
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(f"{f} must be a number, got {v!r}")
    if not isinstance(inst.active, bool) or not isinstance(inst.fired_values, dict):
        raise ValueError("active must be a boolean and fired_values an object")
    if inst.active and (inst.fired_at is None or inst.onset is None):
        raise ValueError("an active alert needs onset and fired_at")
    if inst.run_value is not None and not isinstance(inst.run_value, (int, float, str)):
        raise ValueError(f"run_value must be a number or text, got {inst.run_value!r}")
    if isinstance(inst.run_value, int):
        inst.run_value = float(inst.run_value)
