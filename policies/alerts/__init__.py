"""Environmental and flood alerts: rules over sensor readings and their recent history.

A pure core, imported by the agent and the CLI; it imports nothing of ours outside `policies`:

- :func:`parse_alerts` reads the `alerts:` config section, ``{rules: [...], timezone: ...}``
  (raises :class:`AlertConfigError` with ``(field_path, message)`` problems); :func:`validate`
  adds :class:`AlertWarning` s; :func:`load_alerts` does both.
- :func:`evaluate` advances every alert with the new readings and the time: threshold (with
  hysteresis, hold and minimum duration), rate of change over a window, rolling mean, staleness.
  It returns the events (``flood_warning``, ``flood_warning_cleared``, ...) and the active
  alerts; :func:`state_to_json` / :func:`state_from_json` persist its state.
- :func:`lighting_demands` and :func:`action_level` turn active alerts into lighting overrides
  (hold full light, flash).

Operator documentation: docs/alerts.md.
"""

from __future__ import annotations

from policies.alerts.action import LightingDemand, action_level, lighting_demands, next_change_ms
from policies.alerts.engine import (
    ActiveAlert,
    AlertEvent,
    AlertResult,
    AlertState,
    Phase,
    SampleLike,
    SampleTuple,
    StaleCondition,
    active_alerts,
    evaluate,
    state_from_json,
    state_to_json,
)
from policies.alerts.load import (
    AlertConfigError,
    AlertWarning,
    load_alerts,
    parse_alerts,
    validate,
)
from policies.alerts.model import (
    CLEARED_SUFFIX,
    AlertRules,
    AnyRule,
    Direction,
    Hours,
    LightingAction,
    MeanRule,
    Pattern,
    PointRef,
    RateRule,
    RuleKind,
    Severity,
    StaleRule,
    ThresholdRule,
)
from policies.alerts.window import BUCKETS, TimeWindow

__all__ = [
    "BUCKETS",
    "CLEARED_SUFFIX",
    "ActiveAlert",
    "AlertConfigError",
    "AlertEvent",
    "AlertResult",
    "AlertRules",
    "AlertState",
    "AlertWarning",
    "AnyRule",
    "Direction",
    "Hours",
    "LightingAction",
    "LightingDemand",
    "MeanRule",
    "Pattern",
    "Phase",
    "PointRef",
    "RateRule",
    "RuleKind",
    "SampleLike",
    "SampleTuple",
    "Severity",
    "StaleCondition",
    "StaleRule",
    "ThresholdRule",
    "TimeWindow",
    "action_level",
    "active_alerts",
    "evaluate",
    "lighting_demands",
    "load_alerts",
    "next_change_ms",
    "parse_alerts",
    "state_from_json",
    "state_to_json",
    "validate",
]
