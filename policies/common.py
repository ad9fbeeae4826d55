"""Small helpers shared by the lighting and the alert rules (policies imports nothing of ours)."""

from __future__ import annotations

from typing import Any


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


def check_timezone(v: str) -> str:
    """An IANA time zone name, or ValueError saying what to write instead."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Paris)") from err
    return v
