"""Command bench: what the dispatcher costs, and a command's round trip through a real broker.

Run: ``.venv/bin/python bench/command_bench.py [--n 2000] [--json]`` (a few seconds). Two parts:

1. in process: :meth:`Dispatcher.handle` latency (p50/p99) per kind of request, with the
   idempotency memory in a real store (``synchronous: full``, as on a gateway): a read, a state
   change (remembered: one row write and its fsync, off the event loop), a duplicate, an Ed25519
   signed change, a malformed payload;
2. through a private Mosquitto on loopback: a platform client publishes ``set_override`` on
   ``cmd/req`` and waits for the response on ``cmd/res``; the gateway side is an MQTT client
   feeding the dispatcher. This is the round trip of ``edgegw platform send`` without its connect.
   Twice: with TCP_NODELAY on the broker (``set_tcp_nodelay true``) and on both clients, and
   with the libraries' defaults, where Nagle's algorithm meets delayed ACKs and every QoS 1
   exchange waits ~40 ms (about 88 ms a round trip on Linux loopback).

The target behind the dispatcher is a stand-in that accepts every command at once, so the
numbers are the command path's own. Override-to-output latency on a simulated driver needs the
agent itself and belongs with the agent's bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt

from drivers.modbus.registers import Value
from drivers.sample import Sample
from gateway.codec import CommandRequest, Encoding, Topics, encode_request
from gateway.commands import CommandsCfg, Dispatcher
from gateway.signing import generate_keypair, load_signing_key, sign_request
from gateway.store import Store
from simulators.broker import MosquittoBroker, find_mosquitto

GW = "gw-bench"
PREFIX = "bench/v1"
OVERRIDE = {"group": "main-street", "level": 100, "duration_s": 3600, "priority": 50}


class Broker(MosquittoBroker):
    """The private Mosquitto with Nagle's algorithm off, as a production broker for commands
    should run (``set_tcp_nodelay true``): with it on, each small MQTT packet can wait for the
    peer's delayed ACK, about 40 ms a hop on Linux loopback."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return conf


class Target:
    """Accepts every command at once: the bench measures the command path, not an agent."""

    def state_snapshot(self) -> dict[str, Any]:
        return {"levels": {"main-street": 40}, "devices": {f"d{i}": "online" for i in range(20)}}

    def clock_trusted(self) -> bool:
        return True

    async def read_point(self, device: str, point: str) -> Sample:
        return Sample(device, point, int(time.time() * 1000), 1.0)

    async def write_point(self, device: str, point: str, value: Value) -> None:
        return None

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> dict[str, Any]:
        return {"group": group, "level": level}

    def clear_override(self, *, group: str, source: str | None) -> dict[str, Any]:
        return {"cleared": 0}

    def get_rules(self) -> dict[str, Any]:
        return {"version": "0", "lighting": {}}

    async def set_rules(self, lighting: dict[str, Any]) -> dict[str, Any]:
        return {"version": "1"}

    def sync_time(self, *, epoch_ms: int, set_clock: bool) -> dict[str, Any]:
        return {"clock_trusted": True}


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(p99 * 1000, 3), "n": len(ordered)}


async def timed(n: int, make: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await make(i)
        out.append(time.perf_counter() - t0)
    return percentiles(out)


async def in_process(n: int, workdir: Path) -> dict[str, dict[str, float]]:
    generate_keypair(workdir / "platform.key", workdir / "platform.pub")
    key = load_signing_key(workdir / "platform.key")
    cfg = CommandsCfg.model_validate({
        "signing": {"scheme": "ed25519", "public_key_file": str(workdir / "platform.pub")},
        "rate_limit": {"per_source_per_minute": 60_000, "burst": 10_000},
        "remember_ids": 5000})
    topic = Topics(PREFIX, GW).cmd_req
    with Store(workdir / "store.db") as store:
        d = Dispatcher(Target(), cfg=cfg, store=store, emit=None, gateway_id=GW,
                       topic_prefix=PREFIX)

        def req(rid: str, cmd: str, args: dict[str, Any] | None = None) -> bytes:
            return encode_request(CommandRequest(id=rid, cmd=cmd, args=args or {}))

        results = {
            "get_state": await timed(n, lambda i: d.handle(topic, req(f"s{i}", "get_state"))),
            "set_override": await timed(n, lambda i: d.handle(
                topic, req(f"o{i}", "set_override", OVERRIDE))),
            "duplicate": await timed(n, lambda i: d.handle(
                topic, req(f"o{i}", "set_override", OVERRIDE))),
            "malformed": await timed(n, lambda i: d.handle(topic, b"{not json")),
        }
        signed = [sign_request(CommandRequest(id=f"g{i}", cmd="set_override", args=OVERRIDE),
                               key=key, to=GW) for i in range(n)]
        results["signed_set_override"] = await timed(n, lambda i: d.handle(topic, signed[i]))
    return results


NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


async def round_trip(n: int, workdir: Path, *, nodelay: bool) -> dict[str, float] | None:
    """``set_override`` round trips through Mosquitto; with ``nodelay`` both the broker and the
    clients send small packets at once (TCP_NODELAY), else as the libraries default (Nagle)."""
    if find_mosquitto() is None:
        return None
    topics = Topics(PREFIX, GW)
    cfg = CommandsCfg.model_validate(
        {"rate_limit": {"per_source_per_minute": 60_000, "burst": 10_000}})
    opts = NODELAY if nodelay else ()
    broker_cls = Broker if nodelay else MosquittoBroker
    tag = "nodelay" if nodelay else "nagle"
    async with broker_cls(workdir / f"broker-{tag}") as broker, \
            aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-platform",
                           socket_options=opts) as plat:
        await plat.subscribe(topics.cmd_res, qos=1)
        with Store(workdir / f"rt-{tag}.db") as store:
            d = Dispatcher(Target(), cfg=cfg, store=store, emit=None, gateway_id=GW,
                           topic_prefix=PREFIX)
            gw = aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-gw",
                                socket_options=opts)

            async def serve() -> None:
                async for m in gw.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    await gw.publish(topics.cmd_res, await d.handle(str(m.topic), payload),
                                     qos=1)

            async def one(i: int) -> None:
                rid = f"rt-{i}"
                await plat.publish(topics.cmd_req, encode_request(
                    CommandRequest(id=rid, cmd="set_override", args=OVERRIDE),
                    encoding=Encoding.JSON), qos=1)
                async for m in plat.messages:
                    if isinstance(m.payload, bytes) and json.loads(m.payload)["id"] == rid:
                        return

            async with gw:
                await gw.subscribe(topics.cmd_req, qos=1)
                server = asyncio.create_task(serve(), name="bench-gateway")
                result = await timed(n, one)
            # leaving the client ends its message iteration (aiomqtt does not take a cancel
            # there), so the server task ends with MqttError
            with contextlib.suppress(aiomqtt.MqttError, asyncio.CancelledError):
                await server
            return result


async def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgegw-command-bench-") as tmp:
        work = Path(tmp)
        return {"in_process": await in_process(n, work),
                "round_trip_nodelay": await round_trip(max(1, n // 4), work, nodelay=True),
                "round_trip_nagle": await round_trip(20, work, nodelay=False)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.n))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'in process (Dispatcher.handle)':38} {'p50 ms':>8} {'p99 ms':>8} {'n':>6}")
    for name, r in result["in_process"].items():
        print(f"  {name:36} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['n']:6d}")
    for key, label in (("round_trip_nodelay", "broker round trip, TCP_NODELAY"),
                       ("round_trip_nagle", "broker round trip, Nagle (default)")):
        rt = result[key]
        if rt is None:
            print(f"  {label}: skipped (mosquitto is not installed)")
        else:
            print(f"  {label:36} {rt['p50_ms']:8.3f} {rt['p99_ms']:8.3f} {rt['n']:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
