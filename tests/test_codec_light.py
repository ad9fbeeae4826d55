"""The decoder as a light import: a platform decodes our messages with the gateway's code and
only msgpack and zstandard installed (docs/protocol.md, "Decoding without the gateway").

The check runs a Python with no site-packages at all (``-S``), given only the checkout and
those two packages: if the codec or the platform decoder imported anything else (pydantic,
pymodbus, aiomqtt, ...), the import would fail."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import zstandard

from drivers.sample import Quality, Sample
from gateway.codec import Catalogue, Event, encode_batch, encode_event, encode_state
from gateway.platform import Decoder

ROOT = Path(__file__).resolve().parent.parent

DECODE = """
import base64, json, sys
from gateway.platform import Decoder
dec = Decoder(prefix="city/v1")
for line in sys.stdin:
    m = json.loads(line)
    out = dec.decode(m["topic"], base64.b64decode(m["payload_b64"]))
    print(json.dumps(out, sort_keys=True))
print(json.dumps(sorted(k for k in sys.modules if k.split(".")[0] not in
                        sys.stdlib_module_names)))
"""


def _messages() -> list[tuple[str, bytes]]:
    ts = 1_764_032_400_000
    samples = [Sample("env-1", "temperature", ts + i * 1000, 23.4 + i / 10) for i in range(5)]
    samples += [Sample("meter-1", "energy", ts, 2**60 + 3),
                Sample("lamp-1", "serial", ts, "LD-1"),
                Sample("lamp-2", "dim_level", ts, None, Quality.TIMEOUT)]
    cat = Catalogue.new(epoch=5).with_samples(samples)
    return [
        ("city/v1/gw1/state", encode_state(online=True, detail={"site": "s"}, catalogue=cat)),
        ("city/v1/gw1/telemetry", encode_batch(1, samples, cat, compression="zstd")),
        ("city/v1/gw1/telemetry", encode_batch(2, samples[:2], cat, compression="zlib")),
        ("city/v1/gw1/events", encode_event(Event(ts=ts, type="device_offline",
                                                  device="lamp-2", detail={"reason": "x"}))),
    ]


def test_decoding_needs_only_msgpack_and_zstandard(tmp_path: Path) -> None:
    libs = tmp_path / "site"
    libs.mkdir()
    for module in (msgpack, zstandard):
        (libs / module.__name__).symlink_to(Path(module.__file__ or "").parent)
    messages = _messages()
    stdin = "".join(json.dumps({"topic": t, "payload_b64": base64.b64encode(p).decode()}) + "\n"
                    for t, p in messages)
    done = subprocess.run([sys.executable, "-S", "-c", DECODE], input=stdin, text=True,
                          capture_output=True, timeout=60, cwd=tmp_path,
                          env={"PYTHONPATH": f"{ROOT}:{libs}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    *lines, modules = done.stdout.splitlines()
    third_party = {m.split(".")[0] for m in json.loads(modules)} - {"__main__", "cython_runtime"}
    third_party = {m for m in third_party if not m.startswith("_cython_")}   # msgpack's C part
    assert third_party <= {"msgpack", "zstandard", "gateway", "drivers"}, third_party
    # and it decodes exactly as the full install does
    dec = Decoder(prefix="city/v1")
    expected = [json.loads(json.dumps(dec.decode(t, p), sort_keys=True)) for t, p in messages]
    assert [json.loads(x) for x in lines] == expected
    assert expected[1]["kind"] == "telemetry" and len(expected[1]["points"]) == 8
    assert any(p["value"] == 2**60 + 3 for p in expected[1]["points"])
