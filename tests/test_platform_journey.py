"""The platform engineer's journey, as docs/protocol.md tells it: capture the raw messages with
`edgegw platform listen --raw`, decode them offline with `edgegw platform decode`, and decode
them again with a decoder written from the document alone (tests/independent_decoder.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.runtime import Agent
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec
from tests import independent_decoder
from tests.helpers import gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
CLI = [sys.executable, "-m", "gateway.cli", "platform"]


async def test_capture_raw_then_decode_with_the_tool_and_from_the_document(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    capture = tmp_path / "capture.ndjson"
    async with open_spec(SPEC, ephemeral=True) as sim:
        with capture.open("w") as out:
            listener = await asyncio.create_subprocess_exec(
                *CLI, "listen", "--raw", "--url", broker.url, "--duration", "6",
                stdout=out, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT)
            await asyncio.sleep(1.5)                # subscribed before the gateway's birth
            cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db",
                                 poll=0.2, batch_interval=0.5)
            async with Agent(cfg):
                await asyncio.wait_for(listener.wait(), 20)
    lines = [json.loads(x) for x in capture.read_text().splitlines() if x.strip()]
    assert any(x["topic"].endswith("/telemetry") for x in lines)
    decoded = await asyncio.to_thread(
        subprocess.run, [*CLI, "decode", "--input", str(capture)], capture_output=True,
        text=True, check=True, cwd=ROOT, timeout=60)
    tool = [json.loads(x) for x in decoded.stdout.splitlines()]
    assert len(tool) == len(lines) and not [m for m in tool if m["kind"] == "error"]

    catalogue: dict[str, Any] | None = None
    compared = refs_seen = 0
    for raw, by_tool in zip(lines, tool, strict=True):
        payload = base64.b64decode(raw["payload_b64"])
        if raw["topic"].endswith("/state"):
            state = json.loads(payload)
            catalogue = state.get("detail", {}).get("catalogue") or catalogue
            continue
        if not raw["topic"].endswith("/telemetry"):
            continue
        assert catalogue is not None, "the birth comes before the telemetry"
        mine = independent_decoder.decode(payload, catalogue)
        assert mine["seq"] == by_tool["seq"]
        key = lambda p: (p["ts"], p["device"], p["point"])  # noqa: E731
        assert sorted(mine["points"], key=key) == sorted(by_tool["points"], key=key)
        compared += len(mine["points"])
        refs_seen += _uses_refs(payload)
    assert compared > 100
    assert refs_seen, "the capture should exercise column references (a street of alike devices)"


def _uses_refs(payload: bytes) -> int:
    import zlib

    import msgpack
    import zstandard

    body = payload[2:]
    if payload[1] & 3 == 2:
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 24)
    elif payload[1] & 3 == 1:
        body = zlib.decompress(body)
    return sum(1 for r in msgpack.unpackb(body)[8] if r)
