"""Every `lighting:` example in docs/lighting-rules.md loads, and the main-street one in the docs
is the one in examples/ (operators copy from both)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from policies.lighting import Location, load_lighting

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "lighting-rules.md").read_text()
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)
          if b.startswith("lighting:")]
TROMSO = Location(lat=69.6492, lon=18.9553, timezone="Europe/Oslo")


def test_the_doc_has_its_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_each_doc_example_loads(block: str) -> None:
    rules, _ = load_lighting(yaml.safe_load(block)["lighting"], location=TROMSO, year=2026)
    assert rules.groups


def test_the_docs_open_with_the_example_file() -> None:
    example = (ROOT / "examples" / "lighting-main-street.yaml").read_text()
    body = example[example.index("lighting:"):]
    assert BLOCKS[0] == body


def test_the_preview_outputs_in_the_doc_are_what_the_command_prints() -> None:
    import re
    import shlex
    import subprocess
    import sys

    blocks = re.findall(r"```console\n\$ (edgegw rules preview [^\n]+)\n(.*?)\n```", DOC,
                        re.DOTALL)
    assert len(blocks) >= 2
    for command, shown in blocks:
        args = shlex.split(command)[1:]
        out = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        printed = "\n".join(line.rstrip() for line in out.stdout.rstrip("\n").split("\n"))
        assert printed == shown, command
