"""The JavaScript package (clients/js) against the Python codec: node's test runner decodes the
corpus of tests/js_corpus.py (payloads the Python encoder made across the whole value space) and
must agree with the Python decoder point for point; the commands the JavaScript encoder makes
must read, in Python, as what was meant; the hand-written TypeScript types must check.

Needs node and clients/js/node_modules (``make test`` installs both: ``make js-deps``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.codec import Encoding, decode_request
from tests.codec_strategies import canon_tree
from tests.js_corpus import commands_from_js, write_corpus

JS = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (make js-deps installs "
                       "Debian's nodejs and npm)"),
    pytest.mark.timeout(300),
]


def _node_modules() -> None:
    if not (JS / "node_modules" / "@msgpack" / "msgpack").is_dir():
        pytest.fail(f"{JS}/node_modules is missing: run `make js-deps` (npm ci --prefix "
                    "clients/js)")


def _summary(output: str, name: str) -> int:
    found = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert found, f"no '# {name}' line in node's output:\n{output[-3000:]}"
    return int(found.group(1))


def test_the_js_decoder_agrees_with_python_and_python_reads_its_commands(
        tmp_path: Path) -> None:
    _node_modules()
    corpus = tmp_path / "corpus"
    out = tmp_path / "js-out"
    out.mkdir()
    path = write_corpus(corpus)
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines > 1000
    assert NODE is not None
    tests = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.js"))
    env = {**os.environ, "EDGEGW_CORPUS": str(corpus), "EDGEGW_JS_OUT": str(out),
           "NODE_OPTIONS": ""}
    proc = subprocess.run([NODE, "--test", "--test-reporter=tap", *tests], cwd=JS, env=env,
                          capture_output=True, text=True, timeout=280, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node --test failed (rc {proc.returncode}):\n{output}"
    # every test ran: none skipped for want of the corpus, none left out
    assert _summary(output, "fail") == 0, output
    assert _summary(output, "skipped") == 0, output
    assert _summary(output, "pass") >= 20, output

    commands = list(commands_from_js(out / "commands.jsonl"))
    assert {fmt for fmt, _, _ in commands} == {"json", "msgpack"}
    assert len(commands) >= 20
    for fmt, payload, meant in commands:
        got, encoding = decode_request(payload)
        assert encoding is Encoding(fmt), (fmt, payload[:20])
        assert (got.id, got.cmd) == (meant.id, meant.cmd), (fmt, got)
        assert canon_tree(got.args) == canon_tree(meant.args), (fmt, got.args, meant.args)


def test_the_hand_written_types_check() -> None:
    _node_modules()
    tsc = JS / "node_modules" / "typescript" / "bin" / "tsc"
    assert tsc.is_file(), "typescript (a devDependency) is missing: run `make js-deps`"
    assert NODE is not None
    proc = subprocess.run([NODE, str(tsc), "-p", "tsconfig.json"], cwd=JS, capture_output=True,
                          text=True, timeout=280, check=False)
    assert proc.returncode == 0, f"tsc found type errors:\n{proc.stdout}{proc.stderr}"
