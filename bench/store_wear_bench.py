"""SD-card wear bench: bytes the store makes the kernel write per hour, full vs normal.

Run: ``.venv/bin/python bench/store_wear_bench.py`` (about 20 s; ``--hours 0.25`` for a quick
look). Each scenario simulates an hour of a realistic cabinet as fast as the disk allows:
40 devices x 10 points polled every 10 s (the street of ``bench/uplink_bench.py``), batched every
``batch`` seconds, encoded and compressed by ``gateway.codec.encode_batch`` and driven through
``gateway.store.Store`` exactly as the uplink drives it: one transaction appends a batch, and
when the broker is reachable a second one deletes it after the PUBACK (``online``); during an
outage only the appends happen (``offline``). The per-sample row is what batching avoids: one
transaction per sample (two simulated minutes, extrapolated).

What is measured, in a child process per scenario:

- ``write_bytes`` of ``/proc/self/io``: bytes the process caused to be written to the block
  device (the WAL, the checkpoints into the database file, the page cache write-back), the
  figure the health telemetry reports as ``sd_write_kb``;
- fsync/fdatasync calls, counted with ``strace -c`` when strace is installed (each is a cache
  flush the card must complete: on a slow card, latency; on every card, more erase work);
- the payload bytes, so ``amplification`` = bytes written / telemetry bytes stored.

Inside the card, small writes cost more again (its flash translation layer rewrites whole
erase blocks); that factor depends on the card and is not measured here.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from uplink_bench import T0, street, street_catalogue  # noqa: E402

from drivers.sample import Sample  # noqa: E402
from gateway.codec import encode_batch  # noqa: E402
from gateway.store import BatchIn, Durability, Lane, Store  # noqa: E402

DEVICES = 40
POLL_S = 10
SCENARIOS: list[dict[str, Any]] = [
    {"name": "full, 5 s batches, online", "sync": "full", "batch": 5, "online": True,
     "ride": True},
    {"name": "full, 5 s, delete at once", "sync": "full", "batch": 5, "online": True},
    {"name": "normal, 5 s batches, online", "sync": "normal", "batch": 5, "online": True,
     "ride": True},
    {"name": "full, 15 s batches, online", "sync": "full", "batch": 15, "online": True,
     "ride": True},
    {"name": "normal, 15 s batches, online", "sync": "normal", "batch": 15, "online": True,
     "ride": True},
    {"name": "full, 5 s batches, offline", "sync": "full", "batch": 5, "online": False},
    {"name": "full, one commit per sample", "sync": "full", "batch": 0, "online": True,
     "minutes": 2},
]


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def batches_of(samples: list[Sample], batch_s: int) -> list[list[Sample]]:
    """Samples grouped into the windows the batcher would cut (by sample time)."""
    if batch_s == 0:
        return [[s] for s in samples]
    windows: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        windows[(s.ts - T0) // (batch_s * 1000)].append(s)
    return [windows[k] for k in sorted(windows)]


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario in this process: returns the measured figures."""
    seconds = spec.get("minutes", spec["hours"] * 60) * 60
    samples = street(DEVICES, int(seconds // POLL_S), poll_ms=POLL_S * 1000)
    cat = street_catalogue(DEVICES)
    batches = batches_of(samples, spec["batch"])
    payloads = [(encode_batch(i + 1, b, cat, compression="zstd"), len(b))
                for i, b in enumerate(batches)]
    path = Path(spec["dir"]) / "store.db"
    store = Store(path, max_mb=256, durability=Durability(spec["sync"]))
    store.save_catalogue(cat)
    before = write_bytes()
    t0 = time.perf_counter()
    acked: list[int] = []
    for payload, n in payloads:
        if spec.get("ride"):       # store.ack_delay: the deletion rides with the next append
            store.append([], [BatchIn(store.next_seq(), payload, n)],
                         acks={Lane.TELEMETRY: acked})
            acked = [store.next_seq() - 1]
            continue
        seq = store.append_batch(store.next_seq(), payload, n)
        if spec["online"]:
            store.ack_many(Lane.TELEMETRY, [seq])
    if acked:
        store.ack_many(Lane.TELEMETRY, acked)
    elapsed = time.perf_counter() - t0
    written = write_bytes() - before
    sizes = {p.name: p.stat().st_size for p in path.parent.iterdir()}
    store.close()
    return {"written": written, "elapsed": elapsed, "batches": len(payloads),
            "points": len(samples), "payload": sum(len(p) for p, _ in payloads),
            "seconds": seconds, "files": sizes}


def count_fsyncs(strace_out: Path) -> int | None:
    """Sum the calls column of fsync/fdatasync in an ``strace -c`` summary."""
    if not strace_out.exists():
        return None
    total = 0
    for line in strace_out.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync") and len(fields) >= 5:
            total += int(fields[3]) if re.fullmatch(r"\d+", fields[3]) else 0
    return total


def run(spec: dict[str, Any], base: Path, *, use_strace: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=base))
    spec = {**spec, "dir": str(work)}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    trace = work / "strace.txt"
    if use_strace:
        cmd = ["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o", str(trace),
               *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["fsyncs"] = count_fsyncs(trace) if use_strace else None
    shutil.rmtree(work, ignore_errors=True)
    return result


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours per scenario")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to put the stores (default: a temp dir; use the SD card's "
                         "filesystem to measure it)")
    ap.add_argument("--no-strace", action="store_true", help="do not count fsyncs")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not Path("/proc/self/io").exists():
        sys.exit("this bench needs Linux's /proc/self/io")
    use_strace = not args.no_strace and shutil.which("strace") is not None
    base = Path(tempfile.mkdtemp(prefix="wear-", dir=args.dir))
    fs = subprocess.run(["df", "-T", str(base)], capture_output=True, text=True).stdout
    fs_type = fs.splitlines()[-1].split()[1] if fs else "?"
    results = []
    try:
        for spec in SCENARIOS:
            results.append({**spec, **run({**spec, "hours": args.hours}, base,
                                          use_strace=use_strace)})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    per_batch = (f"{DEVICES * 10 * 5 // POLL_S} points per 5 s batch, "
                 f"{DEVICES * 10 * 15 // POLL_S} per 15 s batch")
    print(f"store wear: {DEVICES} devices x 10 points every {POLL_S} s ({per_batch}), "
          f"zstd batches; store on {fs_type}; "
          f"{args.hours:g} simulated hour(s) per scenario")
    print(f"{'scenario':<30} {'MiB/hour':>8} {'MiB/day':>8} {'GiB/year':>8} "
          f"{'KiB/commit':>10} {'fsync/h':>8} {'ampl.':>6} {'run s':>6}")
    for r in results:
        scale = 3600 / r["seconds"]
        per_hour = r["written"] * scale
        commits = r["batches"] * (2 if r["online"] and not r.get("ride") else 1)
        fsyncs = "-" if r["fsyncs"] is None else f"{r['fsyncs'] * scale:8.0f}"
        amp = r["written"] / max(1, r["payload"])
        print(f"{r['name']:<30} {mib(per_hour)} {mib(per_hour * 24)} "
              f"{per_hour * 24 * 365 / 2**30:8.1f} {r['written'] / commits / 1024:10.1f} "
              f"{fsyncs:>8} {amp:6.0f} {r['elapsed']:6.1f}")
    best = results[0]
    payload_h = best["payload"] * 3600 / best["seconds"]
    print(f"telemetry itself: {payload_h / 2**20:.2f} MiB/hour of compressed payload "
          f"({best['payload'] / best['points']:.2f} B/point); everything above that is "
          "SQLite's pages, WAL frames and checkpoints")


if __name__ == "__main__":
    main()
