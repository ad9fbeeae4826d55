"""What the page shows, as plain data computed from the agent: one place for the first render
(:mod:`gateway.web.pages`) and the live updates (the stream sends what changed).

:func:`live_values` maps a key per shown value (``p:env-1/temperature``, ``d:env-1``,
``g:main-street:level``...) to ``(text, state, ts)``: the text as shown, a state word the style
colours (``good``, ``timeout``, ``offline``...), and a Unix time the browser turns into "3 s ago"
(or None).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.config import Config

if TYPE_CHECKING:
    from gateway.runtime import Agent

__all__ = ["Cell", "PointRow", "fmt_value", "live_values", "point_rows", "tz_of"]

Cell = tuple[str, str, float | None]


@dataclass(frozen=True, slots=True)
class PointRow:
    device: str
    point: str
    unit: str

    @property
    def key(self) -> str:
        return f"{self.device}/{self.point}"


def tz_of(cfg: Config) -> dt.tzinfo:
    loc = cfg.gateway.location
    return ZoneInfo(loc.timezone) if loc is not None else dt.UTC


def fmt_value(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)[:80]
    return f"{text} {unit}".strip()


def point_rows(agent: Agent) -> list[PointRow]:
    """Every point the agent reads (configured devices, serial sensors, GPIO inputs), in the
    config's order, then any others that have a value (the agent's own)."""
    cfg = agent.config
    rows = [PointRow(d.name, p.name, p.unit or "") for d in cfg.devices if d.enabled
            for p in d.points]
    seen = {(r.device, r.point) for r in rows}
    for (dev, pt), _ in agent.latest.items():
        if (dev, pt) not in seen:
            rows.append(PointRow(dev, pt, ""))
            seen.add((dev, pt))
    return rows


def _ago_state(health: str) -> str:
    return {"online": "good", "offline": "offline", "unknown": "unknown"}.get(health, health)


def live_values(agent: Agent, snap: dict[str, Any], rows: list[PointRow]) -> dict[str, Cell]:
    out: dict[str, Cell] = {}
    tz = tz_of(agent.config)
    now = float(snap.get("now") or agent.wall())
    out["now"] = (dt.datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "", None)
    clock = snap.get("clock") or {}
    out["clock"] = (("trusted" + (f" ({clock['source']})" if clock.get("source") else ""))
                    if clock.get("trusted") else "NOT trusted: lighting on its failsafe",
                    "good" if clock.get("trusted") else "bad", None)
    link = snap.get("link") or {}
    state = str(link.get("state") or "off")
    out["link"] = (f"{state}" + (f" · {link['url']}" if link.get("url") else "")
                   + (f" · {link['reconnects']} reconnects" if link.get("reconnects") else ""),
                   "good" if state == "connected" else "bad", None)
    out["link_error"] = (str(link.get("last_error") or ""), "", None)
    backlog = snap.get("backlog") or {}
    out["backlog"] = (f"{backlog.get('points', 0)} points in {backlog.get('batches', 0)} "
                      f"batches, {backlog.get('events', 0)} events waiting", "", None)
    store = snap.get("store") or {}
    mem = store.get("memory") or {}
    st = str(store.get("state") or "none")
    out["store"] = (st + (f" ({store.get('fault')}): {mem.get('points', 0)} points held in "
                          "memory" if st == "fault" else ""),
                    "good" if st == "ok" else "bad", None)
    out["devices_up"] = (f"{snap.get('devices_online', 0)} of {snap.get('devices_total', 0)} "
                         "answering", "", None)
    for name, d in (snap.get("devices") or {}).items():
        health = str(d.get("health"))
        word = {"online": "answering", "offline": "offline", "unknown": "not polled yet"}.get(
            health, health)
        err = d.get("last_error")
        if health != "online" and err and "timed out" in str(err):
            word = "timing out" if health != "offline" else "offline (timing out)"
        out[f"d:{name}"] = (word, _ago_state(health), None)
        out[f"dl:{name}"] = ("", "", d.get("last_ok"))
        out[f"de:{name}"] = ((str(err)[:200] if err and health != "online" else "")
                             + (f" · {d.get('errors', 0)} errors" if d.get("errors") else ""),
                             "", None)
    for b in snap.get("buses") or []:
        out[f"b:{b['name']}"] = (f"{b['requests']} requests, {b['timeouts']} timeouts, "
                                 f"{b['exceptions']} exceptions, {b['errors']} errors", "", None)
    for r in rows:
        got = agent.latest.get(r.device, r.point)
        if got is None:
            out[f"p:{r.key}"] = ("—", "unknown", None)
            continue
        q = got.quality.value
        good = got if q == "good" else agent.latest.good(r.device, r.point)
        # a failed read shows the last good value, marked by its quality
        out[f"p:{r.key}"] = (fmt_value(good.value, r.unit) if good is not None else "—", q,
                             None)
        out[f"pq:{r.key}"] = (q, q, None)
        out[f"pt:{r.key}"] = ("", "", got.ts / 1000)
    lighting = snap.get("lighting") or {}
    for name, g in (lighting.get("groups") or {}).items():
        level = g.get("level")
        out[f"g:{name}:level"] = ("—" if level is None else f"{level:g} %",
                                  "held" if g.get("held") else
                                  ("on" if level else "off"), None)
        out[f"g:{name}:reason"] = (("LAMP TEST · " if g.get("held") else "")
                                   + str(g.get("reason") or ""), "", None)
        nxt = g.get("next") or {}
        if nxt.get("at"):
            at = dt.datetime.fromisoformat(str(nxt["at"])).astimezone(tz)
            out[f"g:{name}:next"] = (f"{at:%a %H:%M}: {nxt.get('level'):g} % "
                                     f"({nxt.get('reason')})", "", None)
        else:
            out[f"g:{name}:next"] = ("none scheduled", "", None)
    return out
