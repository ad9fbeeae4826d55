"""Reading the `alerts:` section: raw dict -> :class:`AlertRules`, or every problem at once; then
the warnings that do not stop the rules from loading.

Problems are ``(field_path, message)`` pairs with paths relative to the section, like
``rules[2].window`` or ``rules[0].lighting.on_s``; the agent prefixes ``alerts.`` and adds the
file and line.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from policies.alerts.model import (
    AlertRules,
    MeanRule,
    RateRule,
    StaleRule,
    ThresholdRule,
)
from policies.common import describe_error, format_path
from policies.validation import ValidationError

_KINDS = "threshold, rate, mean, stale"
_TAGS = frozenset({"threshold", "rate", "mean", "stale"})


class AlertConfigError(ValueError):
    """The alert rules are invalid. `problems` lists each as ``(field_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))


@dataclass(frozen=True, kw_only=True)
class AlertWarning:
    """Something the operator should look at; the rules still load."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # drop the tag the validation adds for the rule union (`rules, 2, 'threshold', 'above'`)
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[i - 2] == "rules" and isinstance(loc[i - 1], int) and part in _TAGS:
            continue
        out.append(part)
    return tuple(out)


def _validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        loc = _clean(tuple(e["loc"]))
        msg = describe_error(e, doc="docs/alerts.md", tag="kind", kinds=_KINDS)
        # a check on two fields of one rule names its field as "@field|message"
        if msg.startswith("@") and "|" in msg:
            field, _, msg = msg[1:].partition("|")
            loc = (*loc, field)
        out.append((format_path(loc), msg))
    return out


def _cross_check(rules: AlertRules) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.rules):
        where = f"rules[{i}]"
        if rule.name in seen:
            problems.append((f"{where}.name", f"{rule.name!r} is already the name of "
                                              f"rules[{seen[rule.name]}]: one rule per event "
                                              "type (use `points:` to watch several points)"))
        seen.setdefault(rule.name, i)
        if (isinstance(rule, (ThresholdRule, RateRule, MeanRule)) and rule.hours is not None
                and rules.timezone is None):
            problems.append((f"{where}.hours", "local hours need a time zone: set "
                                               "gateway.location.timezone or alerts.timezone"))
    return problems


def parse_alerts(raw: Mapping[str, Any] | None, *, timezone: str | None = None) -> AlertRules:
    """Validate the `alerts:` section, ``{rules: [...], timezone: ...}``. `timezone` (the
    gateway's) is used unless the section names its own. Raises :class:`AlertConfigError`
    naming every problem."""
    if raw is None:
        raw = {}
    if isinstance(raw, list):
        raise AlertConfigError([("", "the alerts section is a mapping: write `alerts: {rules: "
                                     "[...]}` (the rules go under `rules:`)")])
    if not isinstance(raw, Mapping):
        raise AlertConfigError([("", "the alerts section must be a mapping (key: value)")])
    data = dict(raw)
    if data.get("timezone") is None and timezone is not None:
        data["timezone"] = timezone
    try:
        rules = AlertRules.model_validate(data)
    except ValidationError as err:
        raise AlertConfigError(_validation_problems(err)) from None
    problems = _cross_check(rules)
    if problems:
        raise AlertConfigError(problems)
    return rules


def _s(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def validate(rules: AlertRules, *, points: Collection[tuple[str, str]] | None = None,
             groups: Collection[str] | None = None) -> list[AlertWarning]:
    """Warnings for `rules`: settings that load but probably do not do what was meant. With
    `points` (every configured ``(device, point)``) and `groups` (the lighting group names) it
    also names points and groups that do not exist."""
    out: list[AlertWarning] = []
    for i, rule in enumerate(rules.rules):
        where = f"rules[{i}]"
        if points is not None:
            for j, p in enumerate(rule.targets):
                if p.key not in points:
                    path = f"{where}.point" if rule.point is not None else f"{where}.points[{j}]"
                    out.append(AlertWarning(path=path, message=f"{p} is not a configured "
                                                               "point: the rule never sees a "
                                                               "reading"))
        if rule.lighting is not None and groups is not None and rule.lighting.group != "*" \
                and rule.lighting.group not in groups:
            out.append(AlertWarning(path=f"{where}.lighting.group",
                                    message=f"no lighting group {rule.lighting.group!r} "
                                            f"(groups: {', '.join(groups) or 'none'})"))
        if isinstance(rule, (ThresholdRule, MeanRule)) and rule.clear is None \
                and rule.clear_after == 0:
            out.append(AlertWarning(
                path=f"{where}.clear",
                message=f"no hysteresis: a reading that hovers around {rule.threshold:g} fires "
                        "and clears again and again; set `clear:` a little "
                        f"{'below' if rule.worse_up else 'above'} the threshold "
                        "(or `clear_after:`)"))
        if isinstance(rule, (RateRule, MeanRule)) and rule.hold > rule.window:
            out.append(AlertWarning(
                path=f"{where}.hold",
                message=f"the hold ({_s(rule.hold)}) is longer than the window "
                        f"({_s(rule.window)}): the condition must outlast its own window, so "
                        "the alert comes late; shorten the hold or lengthen the window"))
        if isinstance(rule, MeanRule) and rule.coverage == 0:
            out.append(AlertWarning(path=f"{where}.coverage",
                                    message="0: right after a start one reading is already "
                                            "the window's mean"))
        if isinstance(rule, StaleRule) and rule.silent is not None and rule.unchanged is not None \
                and rule.unchanged <= rule.silent:
            out.append(AlertWarning(path=f"{where}.unchanged",
                                    message="not longer than `silent`: a sensor that reports "
                                            "rarely looks stuck"))
    return out


def load_alerts(raw: Mapping[str, Any] | None, *, timezone: str | None = None,
                points: Collection[tuple[str, str]] | None = None,
                groups: Collection[str] | None = None) -> tuple[AlertRules, list[AlertWarning]]:
    """:func:`parse_alerts` then :func:`validate`: the rules and their warnings."""
    rules = parse_alerts(raw, timezone=timezone)
    return rules, validate(rules, points=points, groups=groups)
