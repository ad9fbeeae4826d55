"""Uplink bench: bytes per point on the wire, CPU per point through encode + store, replay rate.

Run: ``.venv/bin/python bench/uplink_bench.py`` (about half a minute). Three parts:

1. bytes per data point of realistic street telemetry, ours against ThingsBoard-style JSON (raw
   and compressed), for several batch shapes;
2. CPU seconds per 1000 points through ``encode_batch`` + ``Store.append_batch``;
3. the replay rate of a one-million-point backlog (5000 batches of 200 points) read from the
   store, with and without acknowledging (deleting) what was read.

The street generator (:func:`street`) is also what ``tests/test_codec.py`` measures the size
targets on: poles with an environmental sensor, an energy meter and an LED driver folded into ten
points each, all read once a second at their own phase, values rounded as the Modbus decoder
rounds them (a register scaled by 0.1 has one decimal).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.sample import Sample
from gateway.codec import (
    Catalogue,
    Compression,
    PointDef,
    PointKind,
    encode_batch,
)
from gateway.store import Durability, Store

T0 = 1764068400000          # 2025-11-25 11:00 UTC = 18:00 in Ho Chi Minh City: dusk, lamps on


@dataclass(frozen=True, slots=True)
class _Pt:
    name: str
    kind: PointKind
    unit: str | None
    decimals: int | None


POLE_POINTS = (
    _Pt("temperature", PointKind.FLOAT, "degC", 1),
    _Pt("humidity", PointKind.FLOAT, "%RH", 1),
    _Pt("illuminance", PointKind.INT, "lx", None),
    _Pt("noise", PointKind.FLOAT, "dB", 1),
    _Pt("pm25", PointKind.INT, "ug/m3", None),
    _Pt("voltage", PointKind.FLOAT, "V", 1),
    _Pt("current", PointKind.FLOAT, "A", 2),
    _Pt("lamp_power", PointKind.FLOAT, "W", 1),
    _Pt("energy", PointKind.FLOAT, "kWh", 3),
    _Pt("dim_level", PointKind.INT, "%", None),
)


def pole_name(i: int) -> str:
    return f"pole-{i:02d}"


def street_catalogue(poles: int, *, epoch: int = 0x5EED) -> Catalogue:
    """The catalogue a gateway serving ``poles`` poles would build (ids pole by pole)."""
    return Catalogue.new(epoch=epoch).with_points(
        PointDef(device=pole_name(i), point=p.name, kind=p.kind, unit=p.unit,
                 decimals=p.decimals)
        for i in range(poles) for p in POLE_POINTS)


def street(poles: int, polls: int, *, start_poll: int = 0, poll_ms: int = 1000,
           seed: int = 1) -> list[Sample]:
    """Samples of ``poles`` poles x 10 points x ``polls`` polls, in arrival order.

    One street at dusk: a shared weather (temperature, humidity, falling daylight, PM2.5) with
    per-pole sensor offsets and noise; traffic noise per pole; the feeder voltage dropping
    along the street; two lighting groups at 100 % and 70 %; lamp power and current following
    the dim level; energy counters (installed years apart) growing with the power.
    ``start_poll`` continues the same street later on (for long backlogs).
    """
    rng = random.Random(seed)
    poles_state = []
    for i in range(poles):
        poles_state.append({
            "phase": rng.randint(0, poll_ms - 1),
            "t_off": rng.gauss(0, 0.3), "h_off": rng.gauss(0, 1.5),
            "shade": rng.uniform(0.85, 1.15), "pm_off": rng.gauss(0, 2),
            "rated": rng.choice((100.0, 150.0)), "dim": 100 if i % 2 == 0 else 70,
            "energy": rng.uniform(1_000, 20_000),
        })
    out: list[Sample] = []
    temp, hum, pm = 27.4, 71.0, 18.0
    for k in range(start_poll, start_poll + polls):
        temp += rng.gauss(-0.0005, 0.01)
        hum += rng.gauss(0.001, 0.03)
        pm += rng.gauss(0, 0.05)
        daylight = 320.0 * math.exp(-k * poll_ms / 1_800_000)    # dusk: halves in ~20 min
        for i, ps in enumerate(poles_state):
            ts = T0 + k * poll_ms + int(ps["phase"]) + rng.randint(0, 20)
            voltage = 231.0 - 0.08 * i + rng.gauss(0, 0.3)
            power = ps["rated"] * ps["dim"] / 100 * (1 + rng.gauss(0, 0.004))
            current = power / (voltage * 0.95)
            ps["energy"] += power * poll_ms / 3_600_000_000
            values = (
                round(temp + ps["t_off"] + rng.gauss(0, 0.05), 1),
                round(hum + ps["h_off"] + rng.gauss(0, 0.2), 1),
                int(daylight * ps["shade"] * (1 + rng.gauss(0, 0.02))),
                round(55 + rng.gauss(0, 4), 1),
                max(0, int(pm + ps["pm_off"] + rng.gauss(0, 1))),
                round(voltage, 1),
                round(current, 2),
                round(power, 1),
                round(ps["energy"], 3),
                int(ps["dim"]),
            )
            dev = pole_name(i)
            out.extend(Sample(device=dev, point=p.name, ts=ts, value=v)
                       for p, v in zip(POLE_POINTS, values, strict=True))
    return out


def thingsboard_json(samples: Sequence[Sample]) -> bytes:
    """The ThingsBoard gateway API form, grouped per device and timestamp (its compact form):
    ``{"pole-00": [{"ts": 1764068400123, "values": {"temperature": 27.4, ...}}, ...], ...}``."""
    by_dev: dict[str, dict[int, dict[str, object]]] = {}
    for s in samples:
        by_dev.setdefault(s.device, {}).setdefault(s.ts, {})[s.point] = s.value
    doc = {dev: [{"ts": ts, "values": vals} for ts, vals in rows.items()]
           for dev, rows in by_dev.items()}
    return json.dumps(doc, separators=(",", ":")).encode()


def thingsboard_json_flat(samples: Sequence[Sample]) -> bytes:
    """One object per sample: ``[{"ts": ..., "values": {"pole-00.temperature": 27.4}}, ...]``."""
    doc = [{"ts": s.ts, "values": {f"{s.device}.{s.point}": s.value}} for s in samples]
    return json.dumps(doc, separators=(",", ":")).encode()


SHAPES = ((20, 1, "20 poles x 10 points x 1 poll (1 s batch)"),
          (10, 2, "10 poles x 10 points x 2 polls"),
          (4, 5, "4 poles x 10 points x 5 polls (5 s batch)"),
          (20, 5, "20 poles x 10 points x 5 polls (5 s batch)"))


def bytes_table() -> None:
    print("1. bytes per data point (realistic street telemetry; ratio = JSON raw / ours zstd)")
    print(f"   {'batch':44} {'pts':>5} {'ours':>6} {'zlib':>6} {'zstd':>6} {'JSON':>6} "
          f"{'JSON+zstd':>9} {'flat JSON':>9} {'ratio':>6}")
    import zstandard
    zc = zstandard.ZstdCompressor(level=3)
    for poles, polls, label in SHAPES:
        cat = street_catalogue(poles)
        samples = street(poles, polls)
        n = len(samples)
        sizes = {c: len(encode_batch(1, samples, cat, compression=c)) / n for c in Compression}
        js = thingsboard_json(samples)
        flat = thingsboard_json_flat(samples)
        print(f"   {label:44} {n:5d} {sizes[Compression.NONE]:6.2f} "
              f"{sizes[Compression.ZLIB]:6.2f} {sizes[Compression.ZSTD]:6.2f} "
              f"{len(js) / n:6.2f} {len(zc.compress(js)) / n:9.2f} {len(flat) / n:9.2f} "
              f"{len(js) / n / sizes[Compression.ZSTD]:5.1f}x")
    js = thingsboard_json(street(20, 1))
    print(f"   (JSON zlib-6 of the 1 s batch: {len(zlib.compress(js, 6)) / 200:.2f} B/point)")


def cpu_table(tmp: Path) -> None:
    print("\n2. CPU seconds per 1000 points, encode_batch + Store.append_batch "
          "(200-point batches, zstd)")
    poles, polls = 4, 5
    cat = street_catalogue(poles)
    batches = [street(poles, polls, start_poll=k * polls) for k in range(250)]   # 50 000 points
    n_points = sum(len(b) for b in batches)
    for durability in Durability:
        path = tmp / f"cpu-{durability}.db"
        with Store(path, max_mb=256, durability=durability) as store:
            c0, w0 = time.process_time(), time.perf_counter()
            enc = 0.0
            for b in batches:
                e0 = time.process_time()
                seq = store.next_seq()
                payload = encode_batch(seq, b, cat, compression=Compression.ZSTD)
                enc += time.process_time() - e0
                store.append_batch(seq, payload, len(b))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        print(f"   synchronous={durability:6}  {cpu / n_points * 1000:.4f} CPU-s/1000 points "
              f"(encode alone {enc / n_points * 1000:.4f}); wall {wall / n_points * 1000:.4f} "
              f"s/1000 points")
    print("   the peer gateway measured 0.14-0.16 CPU-s/1000 points for its whole pipeline")


def replay_table(tmp: Path, batches: int) -> None:
    print(f"\n3. replay of a {batches * 200:,}-point backlog "
          f"({batches} batches x 200 points, default synchronous=full)")
    poles, polls = 4, 5
    cat = street_catalogue(poles)
    # 100 distinct 5-second windows of street history, each encoded under its own seq
    templates = [street(poles, polls, start_poll=k * polls) for k in range(100)]
    path = tmp / "replay.db"
    w0 = time.perf_counter()
    with Store(path, max_mb=1024) as store:
        for k in range(batches):
            seq = store.next_seq()
            store.append_batch(seq, encode_batch(seq, templates[k % 100], cat), 200)
        counts = store.counts()
    fill = time.perf_counter() - w0
    print(f"   filled in {fill:.1f} s: {counts.points:,} points, "
          f"{counts.telemetry_bytes / 1e6:.2f} MB of payload")
    with Store(path, max_mb=1024) as store:
        w0 = time.perf_counter()
        points = sum(r.n_points for r in store.pending())
        read = time.perf_counter() - w0
        print(f"   read only:               {points / read:>12,.0f} points/s ({read:.2f} s)")
        w0 = time.perf_counter()
        points = 0
        window: list[int] = []
        for r in store.pending():
            points += r.n_points
            window.append(r.row_id)
            if len(window) == 20:                 # acks arrive in windows of in-flight PUBACKs
                store.ack_many("telemetry", window)
                window = []
        store.ack_many("telemetry", window)
        both = time.perf_counter() - w0
        print(f"   read + ack (windows of 20): {points / both:>10,.0f} points/s ({both:.2f} s)")
        assert store.counts().points == 0
    print("   target: 20 000 points/s")


def mqtt_replay_table(tmp: Path, batches: int) -> None:
    """The same backlog replayed through the real publisher to a private Mosquitto."""
    import asyncio

    import yaml

    from gateway.config import parse_config
    from gateway.link import MqttLink
    from gateway.outbox import Outbox
    from gateway.publisher import Publisher
    from simulators.broker import MosquittoBroker, find_mosquitto

    if find_mosquitto() is None:
        print("\n4. end-to-end replay: skipped (mosquitto is not installed)")
        return
    print(f"\n4. end-to-end replay of {batches * 200:,} points: store -> publisher -> "
          "Mosquitto (QoS 1, PUBACK before delete)")
    poles, polls = 4, 5
    cat = street_catalogue(poles)
    templates = [street(poles, polls, start_poll=k * polls) for k in range(100)]

    async def run(rate: float, inflight: int) -> tuple[float, int]:
        path = tmp / f"mqtt-replay-{rate:g}-{inflight}.db"
        with Store(path, max_mb=1024) as store:
            store.save_catalogue(cat)
            for k in range(batches):
                seq = store.next_seq()
                store.append_batch(seq, encode_batch(seq, templates[k % 100], cat), 200)
        async with MosquittoBroker(tmp / f"broker-{rate:g}-{inflight}") as broker:
            cfg = parse_config(yaml.safe_dump({
                "gateway": {"id": "gw-bench"},
                "mqtt": {"url": broker.url, "replay_rate": rate, "max_inflight": inflight},
                "store": {"path": str(path), "max_mb": 1024}}))
            outbox = Outbox(cfg.store)        # the agent's store path: its own thread
            link = MqttLink(cfg.mqtt, client_id="gw-bench")
            publisher = Publisher(cfg, outbox, link)
            link._on_connect = publisher.on_connect       # as the agent wires it
            tasks = [asyncio.create_task(t) for t in (outbox.serve(), link.serve())]
            try:
                await asyncio.wait_for(link.connected.wait(), 10)
                await asyncio.wait_for(outbox.ready.wait(), 10)
                w0 = time.perf_counter()       # the publisher starts with the clock
                tasks.append(asyncio.create_task(publisher.serve()))
                await asyncio.wait_for(publisher.drained(), 300)
                took = time.perf_counter() - w0
            finally:
                await link.close()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await outbox.close()
            return took, publisher.stats.points_published

    for rate, inflight in ((50_000, 20), (1e9, 20), (1e9, 100)):
        took, points = asyncio.run(run(rate, inflight))
        label = "default pacing" if rate == 50_000 else "unpaced"
        print(f"   {label:<15} max_inflight {inflight:>3}: {points / took:>9,.0f} points/s "
              f"({points:,} points in {took:.1f} s)")
    print("   target: 20 000 points/s (the default `mqtt.replay_rate` paces at 50 000)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=5000, help="backlog size in 200-pt batches")
    args = ap.parse_args(argv)
    bytes_table()
    with tempfile.TemporaryDirectory(prefix="uplink-bench-") as d:
        cpu_table(Path(d))
        replay_table(Path(d), args.batches)
        mqtt_replay_table(Path(d), args.batches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
