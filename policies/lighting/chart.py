"""Previews drawn for an operator: nights as an SVG chart, a date range summed up by month.

Pure functions over :class:`~policies.lighting.preview.Preview` (no I/O). One row per group and
night: the level over the night as a step line (noon to noon), sunset and sunrise marked, each
change labelled with its level and reason, the night's energy and saving on the right. A range of
more than :data:`NIGHTS_DRAWN` nights is drawn as a year view instead: monthly energy against
the same lamps always at 100 %, and burning hours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from policies.lighting.preview import GroupPreview, Preview

__all__ = ["NIGHTS_DRAWN", "MonthSummary", "by_month", "preview_svg"]

NIGHTS_DRAWN = 7               # more nights than this: the year view

_W = 1000                      # canvas width
_PLOT_X, _PLOT_W = 150, 640    # the level plot within a row
_ROW_H, _PLOT_H = 118, 70
_FONT = "font-family='DejaVu Sans, Arial, sans-serif'"


@dataclass(frozen=True, kw_only=True)
class MonthSummary:
    month: str                  # YYYY-MM
    nights: int
    energy_kwh: float
    full_on_kwh: float
    burning_hours: float        # the sum over groups

    @property
    def saving_pct(self) -> float | None:
        return None if self.full_on_kwh <= 0 else 100.0 * (1 - self.energy_kwh / self.full_on_kwh)


def by_month(previews: Sequence[Preview]) -> list[MonthSummary]:
    """Nights summed up by the month they begin in."""
    acc: dict[str, list[float]] = {}
    for p in previews:
        key = f"{p.night:%Y-%m}"
        a = acc.setdefault(key, [0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] += p.energy_kwh
        a[2] += p.full_on_kwh
        a[3] += sum(g.burning_hours for g in p.groups)
    return [MonthSummary(month=k, nights=int(a[0]), energy_kwh=round(a[1], 3),
                         full_on_kwh=round(a[2], 3), burning_hours=round(a[3], 2))
            for k, a in sorted(acc.items())]


def preview_svg(previews: Sequence[Preview], *, title: str = "lighting preview",
                notes: Sequence[str] = ()) -> str:
    """The chart (see the module docstring) as an SVG document."""
    if not previews:
        raise ValueError("nothing to draw: no night")
    if len(previews) > NIGHTS_DRAWN:
        return _year_svg(previews, title=title, notes=notes)
    rows = [(p, g) for p in previews for g in p.groups]
    head = 58 + 16 * len(notes)
    height = head + _ROW_H * len(rows) + 20
    out = [_open(height), _text(20, 28, escape(title), size=18, weight="bold")]
    for i, note in enumerate(notes):
        out.append(_text(20, 50 + 16 * i, escape(note), size=12, fill="#8a4b00"))
    for r, (p, g) in enumerate(rows):
        out.append(_night_row(p, g, top=head + r * _ROW_H))
    out.append("</svg>\n")
    return "".join(out)


def _open(height: int) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{height}' "
            f"viewBox='0 0 {_W} {height}' {_FONT}>\n"
            f"<rect width='{_W}' height='{height}' fill='white'/>\n")


def _text(x: float, y: float, body: str, *, size: int = 11, fill: str = "#222",
          weight: str = "normal", anchor: str = "start") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' fill='{fill}' "
            f"font-weight='{weight}' text-anchor='{anchor}'>{body}</text>\n")


def _night_row(p: Preview, g: GroupPreview, *, top: float) -> str:
    tz = p.start.tzinfo
    span = (p.end - p.start).total_seconds()

    def x_of(t: dt.datetime) -> float:
        return _PLOT_X + _PLOT_W * (t - p.start).total_seconds() / span

    def y_of(level: float) -> float:
        return top + 24 + _PLOT_H * (1 - level / 100)

    out = [_text(20, top + 40, escape(g.name), size=13, weight="bold"),
           _text(20, top + 56, f"{p.night:%a %d %b %Y}", size=11, fill="#555"),
           _text(20, top + 72, f"{g.rated_w:g} W at 100 %", size=11, fill="#555")]
    # the frame: 0 and 100 %, noon to noon, every 3 hours
    out.append(f"<rect x='{_PLOT_X}' y='{top + 24}' width='{_PLOT_W}' height='{_PLOT_H}' "
               "fill='#f6f7fb' stroke='#ccd'/>\n")
    t = p.start
    while t <= p.end:
        x = x_of(t)
        out.append(f"<line x1='{x:.1f}' y1='{top + 24}' x2='{x:.1f}' y2='{top + 24 + _PLOT_H}' "
                   "stroke='#e2e4ee'/>\n")
        out.append(_text(x, top + 24 + _PLOT_H + 13, f"{t.astimezone(tz):%H:%M}", size=9,
                         fill="#777", anchor="middle"))
        t += dt.timedelta(hours=3)
    for at, label in ((p.sunset, "sunset"), (p.sunrise, "sunrise")):
        if at is not None:
            x = x_of(at)
            out.append(f"<line x1='{x:.1f}' y1='{top + 18}' x2='{x:.1f}' "
                       f"y2='{top + 24 + _PLOT_H}' stroke='#e08a00' stroke-dasharray='4 3'/>\n")
            out.append(_text(x, top + 15, f"{label} {at.astimezone(tz):%H:%M}", size=9,
                             fill="#b36b00", anchor="middle"))
    # the level, as a step line
    points: list[tuple[float, float]] = []
    level = 0.0
    for c in g.changes:
        x = x_of(c.at)
        points.append((x, y_of(level)))
        level = c.level
        points.append((x, y_of(level)))
    points.append((x_of(p.end), y_of(level)))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    out.append(f"<polyline points='{path}' fill='none' stroke='#1f5fbf' stroke-width='2'/>\n")
    # what changed and why: a label at each change, alternating heights so that neighbours
    # do not overwrite each other; the reason in a tooltip (and in the table/json outputs)
    last_x = -1e9
    lane = 0
    for c in g.changes:
        x = x_of(c.at)
        lane = lane + 1 if x - last_x < 60 else 0
        last_x = x
        y = y_of(c.level) - 4 - 10 * (lane % 3)
        out.append(f"<g><title>{escape(c.at.astimezone(tz).strftime('%H:%M'))}: "
                   f"{c.level:g} % — {escape(c.reason)}</title>"
                   + _text(x + 2, max(top + 30, y), f"{c.level:g}% {escape(_short(c.reason))}",
                           size=9, fill="#1f3f7f").rstrip("\n") + "</g>\n")
    saving = "-" if g.saving_pct is None else f"{g.saving_pct:.1f} %"
    right = _PLOT_X + _PLOT_W + 20
    out += [_text(right, top + 40, f"{g.energy_kwh:.2f} kWh", size=13, weight="bold"),
            _text(right, top + 56, f"always 100 %: {g.full_on_kwh:.2f} kWh", size=11,
                  fill="#555"),
            _text(right, top + 72, f"saved {saving}", size=11, fill="#2a7a2a"),
            _text(right, top + 88, f"burning {g.burning_hours:.2f} h", size=11, fill="#555")]
    return "".join(out)


def _short(reason: str, limit: int = 28) -> str:
    return reason if len(reason) <= limit else reason[:limit - 1] + "…"


def _year_svg(previews: Sequence[Preview], *, title: str, notes: Sequence[str]) -> str:
    months = by_month(previews)
    head = 58 + 16 * len(notes)
    bar_h = 28
    height = head + 40 + bar_h * len(months) + 40
    top_full = max((m.full_on_kwh for m in months), default=1.0) or 1.0
    scale = 560 / top_full
    first, last = previews[0].night, previews[-1].night
    out = [_open(height), _text(20, 28, escape(f"{title}, {first} to {last}, by month"),
                                size=16, weight="bold")]
    for i, note in enumerate(notes):
        out.append(_text(20, 50 + 16 * i, escape(note), size=12, fill="#8a4b00"))
    y0 = head + 20
    out.append(_text(120, y0, "energy (blue) against the same lamps always at 100 % (grey)",
                     size=11, fill="#555"))
    for i, m in enumerate(months):
        y = y0 + 14 + i * bar_h
        out.append(_text(20, y + 15, m.month, size=12, weight="bold"))
        out.append(f"<rect x='120' y='{y + 3}' width='{m.full_on_kwh * scale:.1f}' height='18' "
                   "fill='#d9dbe3'/>\n")
        out.append(f"<rect x='120' y='{y + 3}' width='{m.energy_kwh * scale:.1f}' height='18' "
                   "fill='#1f5fbf'/>\n")
        saving = "-" if m.saving_pct is None else f"{m.saving_pct:.1f} %"
        out.append(_text(700, y + 15, f"{m.energy_kwh:.1f} kWh · saved {saving} · "
                         f"{m.burning_hours:.0f} burning h · {m.nights} nights", size=11))
    total_e = sum(m.energy_kwh for m in months)
    total_f = sum(m.full_on_kwh for m in months)
    saved = "-" if total_f <= 0 else f"{100 * (1 - total_e / total_f):.1f} %"
    out.append(_text(20, y0 + 34 + bar_h * len(months),
                     f"total {total_e:.1f} kWh (always 100 %: {total_f:.1f} kWh), saved {saved}",
                     size=13, weight="bold"))
    out.append("</svg>\n")
    return "".join(out)
