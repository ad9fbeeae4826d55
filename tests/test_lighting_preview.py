"""`rules preview`'s computation, and the energy counters behind it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from policies.lighting import (
    Counters,
    GroupCounters,
    LightingRules,
    Location,
    Override,
    Preview,
    Source,
    SunState,
    accumulate,
    parse_lighting,
    preview,
    preview_to_json,
    preview_to_text,
    sun_times,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lighting-main-street.yaml"
PARIS = Location(lat=48.8566, lon=2.3522, timezone="Europe/Paris")
TROMSO = Location(lat=69.6492, lon=18.9553, timezone="Europe/Oslo")
HCMC = Location(lat=10.7769, lon=106.7009, timezone="Asia/Ho_Chi_Minh")
RATED_KW = 0.360   # three 120 W lamps


def example(location: Location = PARIS) -> LightingRules:
    return parse_lighting(yaml.safe_load(EXAMPLE.read_text())["lighting"], location=location)


def changes(p: Preview, group: str = "main-street") -> list[tuple[dt.datetime, float, str]]:
    g = next(x for x in p.groups if x.name == group)
    return [(c.at, c.level, c.reason) for c in g.changes]


def test_a_weekday_night_lists_every_change_at_its_exact_time_with_energy() -> None:
    day = dt.date(2026, 11, 24)   # a Tuesday
    p = preview(example(), None, day)
    tz = PARIS.tz
    on = sun_times(PARIS, day).sunset
    off = sun_times(PARIS, day + dt.timedelta(days=1)).sunrise
    assert on is not None and off is not None
    on, off = on - dt.timedelta(minutes=10), off + dt.timedelta(minutes=10)
    h23 = dt.datetime(2026, 11, 24, 23, tzinfo=tz)
    h01, h05 = (dt.datetime(2026, 11, 25, h, tzinfo=tz) for h in (1, 5))
    assert changes(p) == [
        (dt.datetime(2026, 11, 24, 12, tzinfo=tz), 0, "astro sunrise+10m"),
        (on, 100, "astro sunset-10m"),
        (h23, 60, "program step 23:00"),
        (h01, 40, "program step 01:00"),
        (h05, 80, "program step 05:00"),
        (off, 0, "astro sunrise+10m"),
    ]
    g = p.groups[0]
    hours = (off - on).total_seconds() / 3600
    kwh = RATED_KW * ((h23 - on).total_seconds() / 3600 * 1.0 + 2 * 0.6 + 4 * 0.4
                      + (off - h05).total_seconds() / 3600 * 0.8)
    assert g.burning_hours == pytest.approx(hours, abs=1e-3)
    assert g.energy_kwh == pytest.approx(kwh, abs=1e-3)
    assert g.full_on_kwh == pytest.approx(RATED_KW * hours, abs=1e-3)
    assert g.saving_pct == pytest.approx(100 * (1 - kwh / (RATED_KW * hours)), abs=0.01)
    assert p.sunset == on + dt.timedelta(minutes=10) and p.polar is SunState.NORMAL
    assert (p.start, p.end) == (dt.datetime(2026, 11, 24, 12, tzinfo=tz),
                                dt.datetime(2026, 11, 25, 12, tzinfo=tz))


def test_christmas_eve_at_the_example_site_follows_the_holiday_steps() -> None:
    p = preview(example(HCMC), None, dt.date(2026, 12, 24))
    assert [(lvl, why) for _, lvl, why in changes(p)] == [
        (0, "astro sunrise+10m"),
        (80, "astro sunset-10m (weekend or holiday)"),
        (40, "program step 01:00 (weekend or holiday)"),
        (80, "program step 05:00 (weekend or holiday)"),
        (0, "astro sunrise+10m (weekend or holiday)"),
    ]
    text = preview_to_text(p)
    assert "group main-street (360 W)" in text and "saving" in text


def test_an_override_shows_with_its_expiry_and_counts_in_the_energy() -> None:
    tz = PARIS.tz
    until = dt.datetime(2026, 11, 25, 2, tzinfo=tz)
    p = preview(example(), None, dt.date(2026, 11, 24),
                overrides=[Override(id="op-17", group="main-street", level=10, priority=5,
                                    expires_at=until)])
    got = changes(p)
    assert got[0] == (dt.datetime(2026, 11, 24, 12, tzinfo=tz), 20,
                      "override op-17 until 02:00; limit: min 20%")
    assert got[1] == (until, 40, "program step 01:00")
    # lit from noon by the override: 14 h at 20 %, then the program
    assert p.groups[0].burning_hours > 14
    assert p.groups[0].changes[0].source is Source.OVERRIDE


def test_dst_nights_are_23_and_25_hours_and_a_step_in_the_gap_happens_at_the_jump() -> None:
    raw = {"groups": [{"name": "g", "outputs": [{"gpio": "relay-1", "watts": 1000}],
                       "program": {"steps": [{"at": "sunset", "level": 100},
                                             {"at": "02:30", "level": 50},
                                             {"at": "sunrise", "level": 0}]}}]}
    rules = parse_lighting(raw, location=PARIS)
    cest, cet = dt.timezone(dt.timedelta(hours=2)), dt.timedelta(hours=1)

    def hours(a: dt.datetime, b: dt.datetime) -> float:
        # through UTC: Python subtracts two times of one zone by their wall clocks
        return (b.astimezone(dt.UTC) - a.astimezone(dt.UTC)).total_seconds() / 3600

    spring = preview(rules, None, dt.date(2026, 3, 28))
    assert hours(spring.start, spring.end) == 23
    gap = [(c.at, c.level) for c in spring.groups[0].changes if c.reason == "program step 02:30"]
    # 02:30 does not exist on 29 March: the step happens when the clock jumps to 03:00 CEST
    assert gap == [(dt.datetime(2026, 3, 29, 3, tzinfo=cest), 50)]
    autumn = preview(rules, None, dt.date(2026, 10, 24))
    assert hours(autumn.start, autumn.end) == 25
    twice = [c.at for c in autumn.groups[0].changes if c.reason == "program step 02:30"]
    # 02:30 happens twice on 25 October: the step happens once, at the first (CEST); an
    # ambiguous local time never equals one of another zone (PEP 495): compare in UTC
    assert [t.astimezone(dt.UTC) for t in twice] == [
        dt.datetime(2026, 10, 25, 2, 30, tzinfo=cest).astimezone(dt.UTC)]
    assert twice[0].utcoffset() == 2 * cet and twice[0].fold == 0
    for p in (spring, autumn):
        g = p.groups[0]
        lit = [c.at for c in g.changes]
        assert g.burning_hours == pytest.approx(hours(lit[1], lit[-1]), abs=1e-3)
        night = hours(spring.start, spring.end) if p is spring else 25
        assert g.burning_hours < night - 8    # a March/October night, not a wall-clock sum


def test_polar_night_burns_around_the_clock_and_polar_day_not_at_all() -> None:
    rules = example(TROMSO)
    winter = preview(rules, None, dt.date(2026, 12, 15))   # a Tuesday
    assert winter.polar is SunState.POLAR_NIGHT and winter.sunset is None
    g = winter.groups[0]
    assert g.burning_hours == pytest.approx(24.0, abs=1e-3)
    assert [(c.level, c.reason) for c in g.changes] == [
        (100, "astro sunset-10m (polar night: no sunset)"),
        (60, "program step 23:00"),
        (40, "program step 01:00"),
        (80, "program step 05:00"),
        (100, "astro sunset-10m (polar night: no sunset)"),   # the next night, at solar noon
    ]
    summer = preview(rules, None, dt.date(2026, 6, 23))      # a Tuesday
    assert summer.polar is SunState.POLAR_DAY
    g = summer.groups[0]
    assert g.burning_hours == 0 and g.energy_kwh == 0 and g.saving_pct is None
    assert [(c.level, c.reason) for c in g.changes] == [
        (0, "astro sunrise+10m (polar day: no sunrise)")]


def test_the_json_form_is_plain_data() -> None:
    p = preview(example(), PARIS, dt.date(2026, 11, 27), step_minutes=5)   # a Friday
    data = preview_to_json(p)
    assert json.loads(json.dumps(data)) == data
    assert data["night"] == "2026-11-27" and data["timezone"] == "Europe/Paris"
    assert data["start"] == "2026-11-27T12:00:00+01:00"
    g = data["groups"][0]
    assert g["name"] == "main-street" and g["rated_w"] == 360
    assert g["changes"][1]["reason"] == "astro sunset-10m (weekend or holiday)"
    assert g["changes"][1]["source"] == "program" and g["changes"][1]["level"] == 80
    assert data["total"]["energy_kwh"] == pytest.approx(g["energy_kwh"])
    assert 0 < data["total"]["saving_pct"] < 100
    assert data["sun"]["polar"] == "normal"


def test_bad_preview_arguments() -> None:
    with pytest.raises(ValueError, match="step_minutes"):
        preview(example(), None, dt.date(2026, 1, 1), step_minutes=0)
    with pytest.raises(ValueError, match="no location"):
        preview(parse_lighting({}), None, dt.date(2026, 1, 1))


# --------------------------------------------------------------------------------- energy
def test_accumulate_counts_burning_time_and_energy() -> None:
    c = accumulate(Counters(), levels={"a": 50, "b": 0, "c": 100},
                   rated_w={"a": 200, "b": 100}, dt_s=3600)
    assert c.groups["a"] == GroupCounters(burning_s=3600, energy_wh=100)
    assert c.groups["b"] == GroupCounters()
    assert c.groups["c"] == GroupCounters(burning_s=3600, energy_wh=0)   # no rating known
    assert c.groups["a"].burning_hours == 1 and c.groups["a"].energy_kwh == 0.1
    assert Counters.from_json(json.loads(json.dumps(c.to_json()))) == c
    with pytest.raises(ValueError, match="negative"):
        accumulate(c, levels={"a": 1}, rated_w={}, dt_s=-1)
    with pytest.raises(ValueError, match="group 'x'"):
        Counters.from_json({"x": {"burning_s": 1}})


@given(level=st.floats(min_value=0, max_value=100), watts=st.floats(min_value=0, max_value=1e4),
       parts=st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=10))
def test_accumulating_in_pieces_equals_accumulating_at_once(level: float, watts: float,
                                                            parts: list[float]) -> None:
    whole = accumulate(Counters(), levels={"g": level}, rated_w={"g": watts}, dt_s=sum(parts))
    pieces = Counters()
    for p in parts:
        pieces = accumulate(pieces, levels={"g": level}, rated_w={"g": watts}, dt_s=p)
    assert pieces.groups["g"].burning_s == pytest.approx(whole.groups["g"].burning_s)
    assert pieces.groups["g"].energy_wh == pytest.approx(whole.groups["g"].energy_wh)


ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the operator's command line
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "rules", "preview", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd or ROOT)


SAIGON = ["--lat", "10.7769", "--lon", "106.7009", "--tz", "Asia/Ho_Chi_Minh"]
EXAMPLE_RULES = ROOT / "examples" / "lighting-main-street.yaml"


def test_a_rules_file_on_its_own_previews_several_nights_with_notes(tmp_path: Path) -> None:
    out = _cli("--rules", str(EXAMPLE_RULES), *SAIGON, "--date", "2026-12-24",
               "--date", "2026-12-22")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # both nights, in order (a repeated --date used to keep the last one only)
    assert text.index("Night of 2026-12-22") < text.index("Night of 2026-12-24")
    assert "motion boost not simulated" in text and "light sensor" in text
    assert "weekend or holiday" in text.split("Night of 2026-12-24")[1]   # Christmas Eve


def test_load_warnings_are_shown(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("programs:\n  p: {steps: [{at: sunset, level: 80}, {at: '06:00', level: "
                     "off}]}\n  unused: {steps: [{at: '18:00', level: 50}]}\n"
                     "groups: [{name: g, program: p, outputs: [{gpio: relay-1}]}]\n")
    out = _cli("--rules", str(rules), *SAIGON, "--date", "2026-06-21")
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stdout and "not used by any group" in out.stdout


def test_a_year_as_a_chart_and_by_month(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    svg = tmp_path / "year.svg"
    out = _cli("--rules", str(EXAMPLE_RULES), *SAIGON, "--from", "2026-01-01", "--to",
               "2026-03-31", "--step", "10", "--format", "svg", "-o", str(svg))
    assert out.returncode == 0, out.stderr
    assert "90 night(s), by month" in out.stdout
    root = ET.fromstring(svg.read_text())
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "2026-01" in texts and "2026-03" in texts and "saved" in texts
    month = _cli("--rules", str(EXAMPLE_RULES), *SAIGON, "--from", "2026-01-01", "--days", "40",
                 "--step", "10", "--format", "json")
    data = json.loads(month.stdout)
    assert [m["month"] for m in data["months"]] == ["2026-01", "2026-02"]
    assert [m["nights"] for m in data["months"]] == [31, 9]
    assert len(data["nights"]) == 40 and data["not_simulated"]


def test_a_night_as_a_chart_marks_the_sun_and_the_changes(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    svg = tmp_path / "night.svg"
    out = _cli("--rules", str(EXAMPLE_RULES), *SAIGON, "--date", "2026-12-24",
               "--format", "svg", "-o", str(svg))
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(svg.read_text())
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("sunset 17:") for t in texts)
    assert any(t.startswith("sunrise 06:") for t in texts)
    assert any(t.startswith("80% astro sunset-10m") for t in texts)
    assert any(t.startswith("saved ") for t in texts)
    assert len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))) == 1   # one group


def test_preview_argument_errors_say_what_to_give() -> None:
    assert "give --config PATH, or --rules FILE" in _cli("--date", "2026-01-01").stderr
    no_loc = _cli("--rules", str(EXAMPLE_RULES), "--date", "2026-01-01")
    assert no_loc.returncode == 2 and "needs a location" in no_loc.stderr
    bad = _cli("--rules", str(EXAMPLE_RULES), *SAIGON, "--from", "2026-02-01", "--to",
               "2026-01-01")
    assert bad.returncode == 2 and "before --from" in bad.stderr
