"""Small helpers shared by the lighting and the alert rules, and by the agent's config (policies
imports nothing of ours, so the agent may use these)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

NAME_FORM = "a valid name (letters, digits, `-`, `_`, `.`)"


def describe_error(err: Mapping[str, Any], *, doc: str, tag: str = "type",
                   kinds: str | None = None, name_form: str | None = NAME_FORM) -> str:
    """One validation error (policies.validation) as a person reads it: what is wrong with the
    value, and the fix.
    ``doc`` is where the keys are documented; ``tag`` and ``kinds`` name a union's tag key and
    its choices; ``name_form`` describes what a pattern-checked string must look like (None:
    show the pattern)."""
    typ = str(err.get("type", ""))
    inp = err.get("input")
    ctx = err.get("ctx") or {}
    if typ in ("enum", "literal_error"):
        expected = re.sub(r"\s+or\s+", ", ", str(ctx.get("expected", "")).replace("'", ""))
        return f"{inp!r} is not one of {expected}"
    if typ == "extra_forbidden":
        return f"unknown key (check its spelling against {doc})"
    if typ == "missing":
        return "required key is missing"
    if typ == "union_tag_invalid":
        choices = kinds or str(ctx.get("expected_tags", "")).replace("'", "")
        return f"{tag} {ctx.get('tag')!r} is not one of {choices}"
    if typ == "union_tag_not_found":
        choices = kinds or str(ctx.get("expected_tags", "")).replace("'", "")
        return f"`{tag}:` is missing (one of {choices})"
    if typ == "string_pattern_mismatch":
        if name_form is not None:
            return f"{inp!r} is not {name_form}"
        return f"{inp!r} has an invalid form (expected to match {ctx.get('pattern')})"
    if typ == "model_type" and isinstance(inp, list):
        return "expected a mapping (key: value), got a list"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if typ == "value_error" or inp is None or isinstance(inp, (dict, list)):
        return msg
    return f"{msg} (got {inp!r})"


def format_path(loc: tuple[int | str, ...]) -> str:
    """``('groups', 0, 'program')`` -> ``groups[0].program``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def coerce_level(v: Any) -> Any:
    """A level as operators write it: 60, "60%", on/off (YAML 1.1 reads on/off as booleans)."""
    if isinstance(v, bool):
        return 100.0 if v else 0.0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("off", "dark"):
            return 0.0
        if s in ("on", "full"):
            return 100.0
        try:
            return float(s.removesuffix("%").strip())
        except ValueError:
            raise ValueError(
                f"{v!r} is not a level (write a number 0..100, `60%`, `on` or `off`)") from None
    return v


LEVEL_KEYS = frozenset({"level", "min_level", "max_level", "failsafe_level"})


def levels_as_numbers(obj: Any) -> Any:
    """Rules as written, with every level a number (``off`` -> 0, ``on`` -> 100, ``"60%"`` ->
    60): what ``get_rules`` shows, whatever YAML made of the operator's ``off``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in LEVEL_KEYS:
                with contextlib.suppress(ValueError):    # not a level: left as written
                    v = coerce_level(v)
            else:
                v = levels_as_numbers(v)
            out[k] = v
        return out
    if isinstance(obj, list):
        return [levels_as_numbers(v) for v in obj]
    return obj


def check_timezone(v: str) -> str:
    """An IANA time zone name, or ValueError saying what to write instead."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Paris)") from err
    return v


def rules_version(raw: Mapping[str, Any] | None) -> str:
    """A content hash of rules as written: the version `get_rules`/`set_rules` report."""
    blob = json.dumps(raw or {}, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
