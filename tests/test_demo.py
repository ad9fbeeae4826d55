"""`edgegw demo` runs the whole product with no set-up and exits 0 after --duration."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_a_street_and_stops_cleanly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--poles", "3", "--duration", "8",
         "--storm", "1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"demo stopped: (\d+) messages received, (\d+) points, ([\d.]+) bytes per "
                  r"point, (\d+) seq gaps", proc.stdout)
    assert m, proc.stdout[-2000:]
    messages, points, _bpp, gaps = int(m[1]), int(m[2]), float(m[3]), int(m[4])
    assert messages > 5 and points > 50 and gaps == 0
    assert "link connected" in proc.stdout
    assert "main-street" in proc.stdout


def test_demo_refuses_bad_arguments() -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--poles", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--poles 0" in proc.stderr


def test_the_demo_view_shows_units_from_the_birth() -> None:
    from gateway.demo import View, _fmt

    view = View()
    view.add({"kind": "state", "online": True, "detail": {"catalogue": {
        "epoch": 1, "version": 1, "points": [["env-1", "temperature", "float", "degC", 1],
                                             ["lamp-1", "dim_level", "int", "%", 0]]}}},
             100, 0.0)
    assert view.units == {("env-1", "temperature"): "degC", ("lamp-1", "dim_level"): "%"}
    assert _fmt(23.44, view.units[("env-1", "temperature")]) == "23.4 degC"
    assert _fmt(60, "%") == "60%" and _fmt(True, "W") == "True" and _fmt(None, "W") == "None"
