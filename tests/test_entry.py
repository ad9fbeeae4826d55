"""The `edgegw` command's entry: `run` goes to the agent without the CLI around it (typer and
the other commands' modules: ~2 MB the service would hold all day); the rest to gateway.cli."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.entry import _run_options

ROOT = Path(__file__).resolve().parent.parent
# run gateway.entry as the installed `edgegw` script does, then say whether typer was loaded
PROBE = ("import atexit, sys\n"
         "atexit.register(lambda: print('typer loaded:', 'typer' in sys.modules, "
         "file=sys.stderr))\n"
         "sys.argv = ['edgegw', *sys.argv[1:]]\n"
         "from gateway.entry import main\n"
         "main()\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "--config", "a.yaml"], (Path("a.yaml"), 0, False)),
    (["run", "-c", "a.yaml", "-vv", "--log-samples"], (Path("a.yaml"), 2, True)),
    (["run", "--config=a.yaml", "-v", "--verbose", "--no-log-samples"],
     (Path("a.yaml"), 2, False)),
    (["run", "--log-samples", "--no-log-samples", "-c", "a.yaml"], (Path("a.yaml"), 0, False)),
])
def test_run_lines_the_fast_path_takes(argv: list[str],
                                       expected: tuple[Path, int, bool]) -> None:
    assert _run_options(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["version"], ["run"], ["run", "--help"], ["run", "--config"], ["run", "-c", "--help"],
    ["run", "--config", "a.yaml", "--colour"], ["run", "-x", "-c", "a.yaml"],
    ["config", "validate", "--config", "a.yaml"],
])
def test_everything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert _run_options(argv) is None


def edgegw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_run_refuses_a_bad_config_like_the_cli_without_loading_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: gw-1}\nstore: {max_mb: -1}\n")
    proc = edgegw("run", "--config", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}: line 2: store.max_mb" in proc.stderr
    assert "invalid config (1 problem(s)); see docs/configuration.md" in proc.stderr
    assert "typer loaded: False" in proc.stderr
    typer_cli = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config",
                                str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert typer_cli.returncode == 2
    assert typer_cli.stderr == proc.stderr.replace("typer loaded: False\n", "")


def test_other_lines_get_the_full_cli() -> None:
    helped = edgegw("run", "--help")
    assert helped.returncode == 0 and "Run the agent in the foreground" in helped.stdout
    assert "typer loaded: True" in helped.stderr
    typo = edgegw("run", "--config", "x.yaml", "--colour")
    assert typo.returncode == 2 and "No such option: --colour" in typo.stderr
