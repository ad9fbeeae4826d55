"""The commissioning report: JSON, text and a printable HTML page."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.files import PUBLIC_MODE, write_atomic
from provisioning.check.lamps import _fmt_w
from provisioning.check.model import CheckReport, CheckResult, Status, _iso

REPORT_KIND = "edgegw-commissioning-report"


def report_json(report: CheckReport) -> dict[str, Any]:
    """The commissioning report as JSON-ready data (every check, timestamps, versions)."""
    return {
        "kind": REPORT_KIND,
        "format": 1,
        "verdict": str(report.verdict),
        "gateway": dict(report.gateway),
        "config": {"path": report.config_path, "digest": report.config_digest},
        "host": report.host,
        "started_at": _iso(report.started_at),
        "finished_at": _iso(report.finished_at),
        "duration_s": round(report.finished_at - report.started_at, 3),
        "counts": report.counts(),
        "versions": dict(report.versions),
        "checks": [r.to_json() for r in report.results],
    }


_MARK = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def _wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent]


def report_text(report: CheckReport, *, width: int = 78) -> str:
    """The printable commissioning report: header, checklist with hints, sign-off lines."""
    gw = report.gateway
    loc = gw.get("location") or {}
    lines = ["EDGEGW COMMISSIONING REPORT", "=" * width]
    head = [
        ("Gateway", str(gw.get("id", "(config invalid)"))),
        ("Site", str(gw.get("site", ""))),
        ("Groups", ", ".join(gw.get("groups", []) or [])),
        ("Location", f"{loc.get('lat')}, {loc.get('lon')} ({loc.get('timezone')})"
         if loc else "(not set)"),
        ("Config", f"{report.config_path}"
         + (f" (digest {report.config_digest})" if report.config_digest else "")),
        ("Host", f"{report.host}, edgegw {report.versions.get('edgegw')}, python "
                 f"{report.versions.get('python')}, {report.versions.get('os')}"),
        ("Checked", f"{_iso(report.started_at)} .. {_iso(report.finished_at)}"),
    ]
    lines += [f"{k:<10}{v}" for k, v in head]
    c = report.counts()
    verdict = "PASS: all checks passed" if report.passed else (
        f"FAIL: {c['fail']} check(s) failed")
    lines += [f"{'Verdict':<10}{verdict} ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail,"
              f" {c['skip']} skipped)", "=" * width, ""]
    for i, r in enumerate(report.results, 1):
        lines.append(f"{i:>3}. [{_MARK[r.status]}] {r.title}")
        lines += _wrap(r.detail, width, " " * 10)
        if r.hint and r.status in (Status.FAIL, Status.WARN):
            lines += _wrap(f"what to do: {r.hint}", width, " " * 10)
        table = lamp_watts(r)
        if table:
            levels, rows = table
            lines.append(" " * 10 + f"{'lamp':<24}" + "".join(f"{f'{lv:g} %':>10}"
                                                              for lv in levels))
            for name, watts in rows:
                lines.append(" " * 10 + f"{name:<24}" + "".join(
                    f"{_fmt_w(w):>10}" for w in watts))
    lines += ["", "-" * width, "Versions: " + ", ".join(f"{k} {v}" for k, v in
                                                         report.versions.items()), "",
              "Technician: ______________________   Signature: ______________________",
              "",
              "Date: ____________   Cabinet sealed: [ ] yes   Report handed in: [ ] yes", ""]
    return "\n".join(lines)


def lamp_watts(r: CheckResult) -> tuple[list[float], list[tuple[str, list[float | None]]]] \
        | None:
    """A lamp test's power per lamp at each level: (levels, [(lamp, [watts...])]); None for
    any other check (or a test that read no power)."""
    if not r.key.startswith("lamp-test") or not isinstance(r.data, Mapping):
        return None
    steps = r.data.get("steps") or []
    if not steps:
        return None
    levels = [float(s["level"]) for s in steps]
    lamps = sorted({k for s in steps for k in (s.get("power_w") or {})})
    if not lamps:
        return None
    rows = [(lamp.removesuffix("/dim_level"), [(s.get("power_w") or {}).get(lamp)
                                                for s in steps]) for lamp in lamps]
    return levels, rows


def report_html(report: CheckReport) -> str:
    """The same report as a printable HTML page (A4, no network: styles inline)."""
    from html import escape as h

    gw = report.gateway
    loc = gw.get("location") or {}
    c = report.counts()
    verdict = "PASS: all checks passed" if report.passed else f"FAIL: {c['fail']} failed"
    colour = {Status.PASS: "#1c7c1c", Status.WARN: "#a66400", Status.FAIL: "#b01c1c",
              Status.SKIP: "#666"}
    head = [("Gateway", gw.get("id", "(config invalid)")), ("Site", gw.get("site", "")),
            ("Groups", ", ".join(gw.get("groups", []) or [])),
            ("Location", f"{loc.get('lat')}, {loc.get('lon')} ({loc.get('timezone')})"
             if loc else "(not set)"),
            ("Config", report.config_path + (f" (digest {report.config_digest})"
                                             if report.config_digest else "")),
            ("Checked", f"{_iso(report.started_at)} .. {_iso(report.finished_at)}")]
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>Commissioning report {h(str(gw.get('id', '')))}</title><style>",
           "body{font-family:sans-serif;font-size:11pt;margin:2em;max-width:50em}",
           "table{border-collapse:collapse;margin:.4em 0}td,th{padding:.2em .6em;"
           "text-align:left;vertical-align:top}.w td,.w th{border:1px solid #ccc;"
           "text-align:right}.w td:first-child{text-align:left}.hint{color:#555}"
           "@page{size:A4;margin:1.5cm}</style></head><body>",
           "<h1>edgegw commissioning report</h1><table>"]
    out += [f"<tr><th>{h(k)}</th><td>{h(str(v))}</td></tr>" for k, v in head]
    out.append(f"<tr><th>Verdict</th><td><b>{h(verdict)}</b> ({c['pass']} pass, "
               f"{c['warn']} warn, {c['fail']} fail, {c['skip']} skipped)</td></tr></table>")
    out.append("<table>")
    for i, r in enumerate(report.results, 1):
        out.append(f"<tr><td>{i}.</td><td style='color:{colour[r.status]}'><b>"
                   f"{_MARK[r.status]}</b></td><td><b>{h(r.title)}</b><br>{h(r.detail)}")
        if r.hint and r.status in (Status.FAIL, Status.WARN):
            out.append(f"<br><span class='hint'>what to do: {h(r.hint)}</span>")
        table = lamp_watts(r)
        if table:
            levels, rows = table
            out.append("<table class='w'><tr><th>lamp</th>"
                       + "".join(f"<th>{lv:g} %</th>" for lv in levels) + "</tr>")
            out += ["<tr><td>" + h(name) + "</td>" + "".join(
                f"<td>{h(_fmt_w(w))}</td>" for w in watts) + "</tr>" for name, watts in rows]
            out.append("</table>")
        out.append("</td></tr>")
    out.append("</table><p>Versions: " + h(", ".join(f"{k} {v}" for k, v in
                                                      report.versions.items())) + "</p>")
    out.append("<p style='margin-top:3em'>Technician: ______________________ &nbsp; "
               "Signature: ______________________</p><p>Date: ____________ &nbsp; Cabinet "
               "sealed: &#9744; yes &nbsp; Report handed in: &#9744; yes</p></body></html>\n")
    return "\n".join(out)


def report_paths(file: str | Path) -> tuple[Path, Path]:
    """(JSON path, text path) for ``--report FILE``: FILE, and FILE with a .txt suffix (the
    printable HTML page goes beside them, FILE with .html)."""
    p = Path(file)
    txt = p.with_suffix(".txt")
    if txt == p or p.with_suffix(".html") == p:
        raise ValueError(f"{p}: the report's JSON goes to FILE, its text to FILE.txt and its "
                         "page to FILE.html; give a name like report.json")
    return p, txt


def write_report(report: CheckReport, file: str | Path) -> tuple[Path, Path]:
    """Write the report atomically: JSON, text and a printable HTML page; returns the paths
    of the first two (the page is beside them, with .html)."""
    json_path, txt_path = report_paths(file)
    write_atomic(json_path, (json.dumps(report_json(report), indent=2, default=str) + "\n"
                             ).encode(), mode=PUBLIC_MODE)
    write_atomic(txt_path, report_text(report).encode(), mode=PUBLIC_MODE)
    write_atomic(json_path.with_suffix(".html"), report_html(report).encode(),
                 mode=PUBLIC_MODE)
    return json_path, txt_path
