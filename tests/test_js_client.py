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


# --- the same package in a real browser, loaded as its README says (an import map) ----------
_PAGE = """<!doctype html>
<meta charset="utf-8">
<script type="importmap">
{ "imports": {
    "@edgegw/codec": "/node_modules/@edgegw/codec/src/index.js",
    "@msgpack/msgpack": "/node_modules/@msgpack/msgpack/dist.esm/index.mjs",
    "fflate": "/node_modules/fflate/esm/browser.js",
    "fzstd": "/node_modules/fzstd/esm/index.mjs",
    "node:assert/strict": "/assert-shim.js" } }
</script>
<script type="module">
  import { Decoder } from "@edgegw/codec";
  import { assertExact } from "/exact.js";
  const out = { checked: 0, refused: 0, lines: 0, failures: [] };
  try {
    const text = await (await fetch("/corpus.jsonl")).text();
    const decoders = { plain: new Decoder({ prefix: null }),
                       city: new Decoder({ prefix: "city/v1/east" }) };
    for (const raw of text.split("\\n")) {
      if (!raw.trim()) continue;
      const line = JSON.parse(raw);
      out.lines++;
      const bytes = Uint8Array.from(atob(line.payload_b64), (c) => c.charCodeAt(0));
      const dec = decoders[line.decoder];
      const got = line.mode === "feed" ? dec.feed(line.topic, bytes)
        : dec.decode(line.topic, bytes);
      const want = line.expected;
      const pairs = line.mode === "feed" ? want.map((w, k) => [got[k], w]) : [[got, want]];
      if (line.mode === "feed" && got.length !== want.length) {
        out.failures.push(`${line.case}: ${got.length} messages, expected ${want.length}`);
        continue;
      }
      for (const [g, w] of pairs) {
        if (w.kind === "error") {     // refused by Python: refused here too (but the leniency)
          if (line.lenient) continue;
          if (g.kind === "error") out.refused++;
          else out.failures.push(`${line.case}: decoded what Python refused (${w.error})`);
          continue;
        }
        try { assertExact(g, w, line.case); out.checked++; }
        catch (err) { out.failures.push(String(err.message).slice(0, 300)); }
      }
    }
  } catch (err) {
    out.failures.push(`page: ${err && err.stack || err}`);
  }
  window.__result = out;
</script>
"""

_ASSERT_SHIM = """export default { fail(message) { throw new Error(message); } };
"""


def test_the_js_decoder_runs_in_a_browser_with_the_readmes_import_map(tmp_path: Path) -> None:
    """Debian's chromium loads the package's ES modules as clients/js/README.md's "Browser"
    section says (no bundler) and decodes the whole corpus as the Python decoder does."""
    import functools
    import threading
    import time
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tests import browser

    why = browser.available()
    if why:
        pytest.skip(why)
    _node_modules()
    www = tmp_path / "www"
    modules = www / "node_modules"
    (modules / "@edgegw").mkdir(parents=True)
    (modules / "@edgegw" / "codec").symlink_to(JS)
    for name in ("@msgpack", "fflate", "fzstd"):
        (modules / name).symlink_to(JS / "node_modules" / name)
    (www / "exact.js").symlink_to(JS / "test" / "exact.js")
    (www / "assert-shim.js").write_text(_ASSERT_SHIM)
    (www / "index.html").write_text(_PAGE)
    lines = write_corpus(www).read_text(encoding="utf-8").count("\n")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    b = browser.Browser(None)
    try:
        b.driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        deadline = time.monotonic() + 120
        result = None
        while result is None and time.monotonic() < deadline:
            result = b.run("return window.__result || null")
            time.sleep(0.2)
    finally:
        b.close()
        server.shutdown()
        server.server_close()
    assert result is not None, "the page never finished decoding"
    assert result["failures"] == [], result["failures"][:5]
    assert result["lines"] == lines
    assert result["checked"] > 500 and result["refused"] > 300, result
