"""The page's HTML, rendered on the gateway (no CDN, no framework: it must work at the roadside
with no internet). Every value is escaped here. Elements that change carry ``data-k`` (their key
in :func:`gateway.web.view.live_values`); the small script (static/app.js) updates them from the
live stream. Made for a 360-pixel phone held in gloves: one column, large targets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from gateway.web.feed import EventRow
from gateway.web.view import Cell, PointRow

__all__ = [
    "check_page",
    "check_rows",
    "event_item",
    "events_page",
    "layout",
    "lighting_page",
    "login_page",
    "overrides_list",
    "overview_page",
    "tag_page",
]

NAV = [("/", "Overview"), ("/lighting", "Lighting"), ("/check", "Check"),
       ("/events", "Events & log"), ("/tag", "Tag")]


def h(value: object) -> str:
    return escape(str(value), quote=True)


def cell(values: Mapping[str, Cell], key: str, tag: str = "span", cls: str = "") -> str:
    text, state, ts = values.get(key, ("", "", None))
    attrs = f' data-k="{h(key)}"'
    if state:
        attrs += f' data-s="{h(state)}"'
    if ts is not None:
        attrs += f' data-ts="{ts:.3f}"'
    if cls:
        attrs += f' class="{h(cls)}"'
    return f"<{tag}{attrs}>{h(text)}</{tag}>"


def ago(values: Mapping[str, Cell], key: str) -> str:
    _text, _state, ts = values.get(key, ("", "", None))
    return (f'<span class="ago" data-k="{h(key)}" data-ts="{ts:.3f}"></span>' if ts is not None
            else f'<span class="ago" data-k="{h(key)}">never</span>')


def layout(title: str, body: str, *, gateway: str, user: str | None = None,
           role: str | None = None, csrf: str | None = None, active: str = "",
           flash: str | None = None, live: bool = False, now: float | None = None) -> str:
    nav = ""
    if user is not None:
        links = "".join(f'<a href="{href}"{" aria-current=page" if href == active else ""}>'
                        f"{h(text)}</a>" for href, text in NAV)
        nav = (f'<nav>{links}<form method="post" action="/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{h(csrf or "")}">'
               f'<button class="link">Log out {h(user)}</button></form></nav>')
    note = f'<p class="flash" role="status">{h(flash)}</p>' if flash else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · {h(gateway)}</title>"
        '<link rel=stylesheet href="/static/app.css"><script src="/static/app.js" defer>'
        f'</script></head><body{" data-live=1" if live else ""}'
        f'{f" data-now={now:.3f}" if now is not None else ""}>'
        f'<header><b>{h(gateway)}</b> <span class="role">{h(role or "")}</span>'
        f'<span id="conn" data-s="idle"></span></header>{nav}<main>{note}'
        f"<h1>{h(title)}</h1>{body}</main></body></html>")


def login_page(gateway: str, *, error: str | None = None) -> str:
    err = f'<p class="flash bad" role="alert">{h(error)}</p>' if error else ""
    body = (f'{err}<form method="post" action="/login" class="card">'
            '<label>User <input name="user" autocomplete="username" required maxlength=32 '
            'autocapitalize="none" autofocus></label>'
            '<label>Password <input name="password" type="password" required maxlength=256 '
            'autocomplete="current-password"></label>'
            '<button type="submit">Log in</button></form>'
            '<p class="small">Accounts are made on the gateway: '
            "<code>edgegw provision --web-user NAME</code>.</p>")
    return layout("Log in", body, gateway=gateway)


def overview_page(snap: Mapping[str, Any], values: Mapping[str, Cell], rows: list[PointRow],
                  *, web_fp: str | None, **kw: Any) -> str:
    groups = ", ".join(snap.get("groups_cfg") or []) or "—"
    ident = (f'<dl class="card"><dt>Gateway</dt><dd>{h(snap.get("gateway"))}</dd>'
             f'<dt>Site</dt><dd>{h(snap.get("site") or "—")}</dd>'
             f"<dt>Groups</dt><dd>{h(groups)}</dd>"
             f'<dt>Version</dt><dd>edgegw {h(snap.get("version"))}</dd>'
             f'<dt>Time</dt><dd>{cell(values, "now")}</dd>'
             f'<dt>Clock</dt><dd>{cell(values, "clock")}</dd>'
             f'<dt>Uplink</dt><dd>{cell(values, "link")} {cell(values, "link_error", cls="small")}'
             f"</dd>"
             f'<dt>Backlog</dt><dd>{cell(values, "backlog")}</dd>'
             f'<dt>Store</dt><dd>{cell(values, "store")}</dd>'
             + (f'<dt>Certificate</dt><dd class="fp">SHA-256 {h(web_fp)}</dd>' if web_fp
                else "") + "</dl>")
    buses = "".join(f'<li><b>{h(b["name"])}</b> {cell(values, "b:" + b["name"], cls="small")}'
                    "</li>" for b in snap.get("buses") or [])
    devs = []
    for name, d in (snap.get("devices") or {}).items():
        devs.append(f'<li class="dev"><b>{h(name)}</b> <span class="small">{h(d.get("bus"))}'
                    f"</span> {cell(values, 'd:' + name, cls='pill')}<br>"
                    f'<span class="small">last answer {ago(values, "dl:" + name)} '
                    f'{cell(values, "de:" + name)}</span></li>')
    pts = []
    last_dev = None
    for r in rows:
        if r.device != last_dev:
            pts.append(f'<li class="head">{h(r.device)}</li>')
            last_dev = r.device
        pts.append(f'<li class="pt"><span class="name">{h(r.point)}</span>'
                   f'{cell(values, "p:" + r.key, cls="val")}'
                   f'<span class="small">{cell(values, "pq:" + r.key)} '
                   f'{ago(values, "pt:" + r.key)}</span></li>')
    body = (ident + f"<h2>Buses</h2><ul class=list>{buses or '<li>none</li>'}</ul>"
            f"<h2>Devices · {cell(values, 'devices_up')}</h2>"
            f"<ul class=list>{''.join(devs) or '<li>none</li>'}</ul>"
            f"<h2>Points</h2><ul class='list points'>{''.join(pts) or '<li>none</li>'}</ul>")
    return layout("Overview", body, live=True, active="/", **kw)


def overrides_list(overrides: Sequence[Mapping[str, Any]], *, csrf: str, may_change: bool,
                   tz: dt.tzinfo) -> str:
    if not overrides:
        return "<p>No override in force.</p>"
    items = []
    for o in overrides:
        until = "until cleared"
        if o.get("expires_at"):
            until = "until " + dt.datetime.fromisoformat(str(o["expires_at"])).astimezone(
                tz).strftime("%a %H:%M")
        clear = ""
        if may_change:
            clear = ('<form method="post" action="/lighting/clear" class="inline">'
                     f'<input type="hidden" name="csrf" value="{h(csrf)}">'
                     f'<input type="hidden" name="group" value="{h(o["group"])}">'
                     f'<input type="hidden" name="source" value="{h(o["id"])}">'
                     '<button class="secondary">Clear</button></form>')
        items.append(f'<li><b>{h(o["group"])}</b> {o["level"]:g} %, priority {o["priority"]}, '
                     f'{h(until)} <span class="small">by {h(o["id"])}</span> {clear}</li>')
    return f"<ul class=list>{''.join(items)}</ul>"


def lighting_page(snap: Mapping[str, Any], values: Mapping[str, Cell], *, csrf: str,
                  may_change: bool, tz: dt.tzinfo, chart_date: str | None,
                  max_priority: int, **kw: Any) -> str:
    lighting = snap.get("lighting")
    if not lighting:
        return layout("Lighting", "<p>This gateway has no lighting groups.</p>",
                      active="/lighting", **kw)
    groups = list((lighting.get("groups") or {}).keys())
    cards = []
    for name in groups:
        cards.append(f'<div class="card group"><h2>{h(name)} '
                     f'{cell(values, f"g:{name}:level", cls="level")}</h2>'
                     f'<p>{cell(values, f"g:{name}:reason")}</p>'
                     f'<p class="small">next: {cell(values, f"g:{name}:next")}</p></div>')
    form = ""
    if may_change:
        options = "".join(f'<option value="{h(g)}">{h(g)}</option>' for g in groups)
        form = (
            '<h2>Temporary override</h2><form method="post" action="/lighting/override" '
            f'class="card" id="override"><input type="hidden" name="csrf" value="{h(csrf)}">'
            f'<label>Group <select name="group">{options}'
            '<option value="*">every group</option></select></label>'
            '<label>Level, % <input name="level" type="number" inputmode="numeric" min=0 '
            'max=100 step=1 value=100 required></label>'
            '<label>For, minutes <input name="minutes" type="number" inputmode="numeric" '
            'min=1 max=1440 step=1 value=30 required></label>'
            f'<label>Priority (below the cabinet switch) <input name="priority" type="number" '
            f'inputmode="numeric" min=0 max={max_priority} step=1 value={max_priority} '
            'required></label><button type="submit">Set override</button></form>')
    chart = ""
    if chart_date:
        chart = (f"<h2>Tonight's program ({h(chart_date)})</h2>"
                 f'<img class="chart" src="/lighting/chart.svg?date={h(chart_date)}" '
                 'alt="the night\'s levels, as edgegw rules preview draws them">')
    body = ("".join(cards)
            + "<h2>Overrides in force</h2><div id=overrides>"
            + overrides_list(lighting.get("overrides") or [], csrf=csrf,
                             may_change=may_change, tz=tz)
            + f"</div>{form}{chart}")
    return layout("Lighting", body, live=True, active="/lighting", **kw)


_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def check_rows(job: Mapping[str, Any] | None) -> str:
    if job is None:
        return "<p>No check has run since the agent started.</p>"
    head = (f'<p><b>{h(job.get("phase"))}</b>'
            + (f' · verdict <b data-s="{h(job["verdict"])}">{h(job["verdict"]).upper()}</b>'
               if job.get("verdict") else "")
            + (f' · <span class="bad">{h(job["error"])}</span>' if job.get("error") else "")
            + "</p>")
    rows = []
    for r in job.get("rows") or []:
        st = str(r.get("status"))
        hint = (f'<br><span class="small">what to do: {h(r["hint"])}</span>'
                if r.get("hint") and st in ("fail", "warn") else "")
        rows.append(f'<li class="row"><span class="pill" data-s="{h(st)}">{_MARK.get(st, st)}'
                    f'</span> <b>{h(r.get("title"))}</b><br>'
                    f'<span class="detail">{h(r.get("detail"))}</span>{hint}</li>')
    links = ""
    if job.get("done") and job.get("verdict"):
        links = ('<p class="buttons"><a class="button" href="/check/report.html" '
                 'download="commissioning-report.html">Report (printable HTML)</a> '
                 '<a class="button secondary" href="/check/report.json" '
                 'download="commissioning-report.json">Report (JSON)</a></p>')
    return head + f"<ol class=list>{''.join(rows)}</ol>" + links


def check_page(job: Mapping[str, Any] | None, *, running: bool, csrf: str, may_change: bool,
               **kw: Any) -> str:
    form = ""
    if may_change:
        dis = " disabled" if running else ""
        form = ('<form method="post" action="/check" class="card buttons">'
                f'<input type="hidden" name="csrf" value="{h(csrf)}">'
                f'<button name="lamp_test" value="0" id="run-check"{dis}>Run the check</button>'
                f'<button name="lamp_test" value="1" id="run-lamp-test"{dis}>Check with the lamp '
                "test</button></form><p class='small'>The lamp test takes each group's LED "
                "drivers off, to 50 % and to 100 % (a few seconds each, watch the poles), then "
                "back to their level. Overrides wait until it ends.</p>")
    body = form + f'<div id="check-rows">{check_rows(job)}</div>'
    return layout("Commissioning check", body, live=True, active="/check", **kw)


def event_item(e: EventRow, tz: dt.tzinfo) -> str:
    when = dt.datetime.fromtimestamp(e.ts, tz).strftime("%H:%M:%S")
    detail = ", ".join(f"{k}={v}" for k, v in e.detail.items())[:300]
    return (f'<li data-s="{h(e.severity or "")}"><span class="small">{h(when)}</span> '
            f'<b>{h(e.type)}</b> {h(e.device or "")} <span class="small">{h(detail)}</span>'
            "</li>")


def events_page(events: Iterable[EventRow], log_lines: Iterable[str], *, tz: dt.tzinfo,
                **kw: Any) -> str:
    items = "".join(event_item(e, tz) for e in reversed(list(events)))
    log = h("\n".join(log_lines)) or "(nothing logged since the page started)"
    body = (f"<h2>Recent events</h2><ul class=list id=events>{items or '<li>none yet</li>'}"
            f"</ul><h2>Log (newest last)</h2><pre class=log id=log>{log}</pre>")
    return layout("Events & log", body, live=True, active="/events", **kw)


def tag_page(gw_id: str, site: str, qr_svg: str, payload: str, **kw: Any) -> str:
    body = (f'<div class="tag card"><div class="qr">{qr_svg}</div>'
            f'<p class="tagid">{h(gw_id)}</p><p>{h(site)}</p>'
            f'<p class="small">QR: <code>{h(payload)}</code></p></div>'
            '<p class="noprint"><button type="button" id="print">Print</button></p>')
    return layout("Asset tag", body, active="/tag", **kw)
