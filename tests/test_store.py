"""The SQLite store: order, seq for life, the priority lane, the byte budget, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.codec import Catalogue, PointDef
from gateway.errors import StoreError
from gateway.store import ROW_OVERHEAD, SEQ_GUARD, BatchIn, Durability, Lane, Store

ROOT = Path(__file__).resolve().parent.parent


def fill(store: Store, n: int, *, size: int = 100, points: int = 10) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = store.next_seq()
        store.append_batch(seq, seq.to_bytes(8, "big") + bytes(size - 8), points)
        seqs.append(seq)
    return seqs


def test_batches_come_back_in_order_and_ack_deletes(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        assert store.next_seq() == 1
        assert fill(store, 5) == [1, 2, 3, 4, 5]
        recs = store.peek(Lane.TELEMETRY, 10)
        assert [r.row_id for r in recs] == [1, 2, 3, 4, 5]
        assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
        assert recs[2].payload[:8] == (3).to_bytes(8, "big") and recs[2].n_points == 10
        assert [r.row_id for r in store.peek("telemetry", 2, after=2)] == [3, 4]
        assert store.counts().points == 50 and store.counts().batches == 5
        assert store.ack(Lane.TELEMETRY, 1) is True
        assert store.ack(Lane.TELEMETRY, 1) is False            # a duplicate PUBACK
        assert store.ack_many(Lane.TELEMETRY, [2, 3, 99]) == 2
        assert [r.row_id for r in store.pending()] == [4, 5]
        c = store.counts()
        assert (c.batches, c.points, c.telemetry_bytes) == (2, 20, 200)


def test_seq_is_never_reused_across_deletes_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        fill(store, 3)
        store.ack_many(Lane.TELEMETRY, [1, 2, 3])
        assert store.counts().batches == 0
        assert store.next_seq() == 4
    with Store(path) as store:
        assert store.next_seq() == 4
        with pytest.raises(StoreError, match=r"seq 3 is not the next one \(4\): seq 3 was "
                                             "already used"):
            store.append_batch(3, b"x", 1)
        assert fill(store, 2) == [4, 5]
        # a jump is allowed: 6 and 7 were lost before they reached the store (a fault)
        store.append_batch(8, b"y" * 100, 10)
        assert store.next_seq() == 9
        with pytest.raises(StoreError, match="seq 7 was already used"):
            store.append_batch(7, b"x", 1)
    with Store(path) as store:
        assert store.next_seq() == 9
        assert [r.seq for r in store.pending()] == [4, 5, 8]
        assert store.counts().points == 30


def test_a_commit_that_already_landed_is_not_written_twice(tmp_path: Path) -> None:
    """A commit that outlived its deadline (a stalled card) is retried by nobody, but one that
    is sent again finds its batches already there and skips them."""
    with Store(tmp_path / "s.db") as store:
        first = store.append([b"ev"], [BatchIn(1, b"a" * 10, 2), BatchIn(2, b"b" * 10, 3)],
                             kv=[("k", b"v")])
        assert first.event_ids and first.already == ()
        again = store.append([], [BatchIn(2, b"b" * 10, 3), BatchIn(3, b"c" * 10, 4)],
                             acks={Lane.TELEMETRY: [1]})
        assert again.already == (2,)
        assert [r.seq for r in store.pending()][-2:] == [2, 3]
        assert store.kv_get("k") == b"v"
        c = again.counts
        assert (c.batches, c.points, c.events) == (2, 7, 1)      # batch 1 acked


def test_events_are_a_priority_lane(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        fill(store, 2)
        e1 = store.append_event(b'{"type":"flood_alarm"}')
        fill(store, 1)
        e2 = store.append_event(b'{"type":"flood_alarm_cleared"}')
        out = [(r.lane, r.row_id) for r in store.pending(chunk=1)]
        assert out == [(Lane.EVENTS, e1), (Lane.EVENTS, e2), (Lane.TELEMETRY, 1),
                       (Lane.TELEMETRY, 2), (Lane.TELEMETRY, 3)]
        ev = store.peek(Lane.EVENTS, 5)
        assert [r.payload for r in ev] == [b'{"type":"flood_alarm"}',
                                          b'{"type":"flood_alarm_cleared"}']
        assert ev[0].seq is None and ev[0].n_points == 0
        assert store.ack(Lane.EVENTS, e1)
        assert store.counts().events == 1
        # acks interleaved with iteration neither skip nor repeat anything
        seen = []
        for rec in store.pending(chunk=2):
            seen.append(rec.row_id)
            store.ack(rec.lane, rec.row_id)
        assert seen == [e2, 1, 2, 3]
        assert store.counts() == store.counts().__class__(0, 0, 0, 0, 0)
        e3 = store.append_event(b"{}")
        assert e3 > e2                                  # event ids are never reused either


def test_full_store_drops_the_oldest_batches_and_counts_the_points(tmp_path: Path) -> None:
    row = 1000 + ROW_OVERHEAD
    max_mb = 10.5 * row / (1024 * 1024)                # room for 10 rows of 1000 bytes
    path = tmp_path / "s.db"
    with Store(path, max_mb=max_mb) as store:
        ev = store.append_event(b"e" * 1000)
        fill(store, 9, size=1000, points=200)
        assert store.take_dropped() == 0
        fill(store, 5, size=1000, points=200)            # 5 more: the 5 oldest batches go
        assert [r.seq for r in store.peek(Lane.TELEMETRY, 100)] == list(range(6, 15))
        assert [r.row_id for r in store.peek(Lane.EVENTS, 10)] == [ev]   # the event stays
        assert store.counts().total_bytes <= store.max_bytes
        assert store.take_dropped() == 5 * 200
        assert store.take_dropped() == 0                 # handed out once
        fill(store, 1, size=1000, points=7)
        assert store.next_seq() == 16                    # eviction never bends seq
    with Store(path, max_mb=max_mb) as store:            # a count not yet taken is persisted
        assert store.take_dropped() == 200
        assert store.take_dropped_events() == 0
        c = store.counts()
        assert (c.batches, c.events) == (9, 1)


def test_a_store_of_only_events_drops_the_oldest_events(tmp_path: Path) -> None:
    max_mb = 5.5 * (100 + ROW_OVERHEAD) / (1024 * 1024)
    with Store(tmp_path / "s.db", max_mb=max_mb) as store:
        ids = [store.append_event(bytes([i]) * 100) for i in range(8)]
        assert [r.row_id for r in store.peek(Lane.EVENTS, 10)] == ids[3:]
        assert store.take_dropped_events() == 3
        assert store.take_dropped() == 0
        with pytest.raises(StoreError, match="larger than the whole store"):
            store.append_event(b"x" * 1000)
        with pytest.raises(StoreError, match="larger than the whole store"):
            store.append_batch(store.next_seq(), b"x" * 1000, 1)


def test_catalogue_and_kv_persist(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    cat = Catalogue.new(epoch=42).with_points([PointDef("env-1", "temperature", decimals=1)])
    with Store(path) as store:
        assert store.load_catalogue() is None
        store.save_catalogue(cat)
        store.kv_set("cmd:c-1", b"done")
        assert store.kv_get("missing") is None
    with Store(path) as store:
        assert store.load_catalogue() == cat
        assert store.kv_get("cmd:c-1") == b"done"
        store.kv_delete("cmd:c-1")
        assert store.kv_get("cmd:c-1") is None
        store.kv_set("catalogue", b"{not json")
        with pytest.raises(StoreError, match="saved catalogue is unreadable"):
            store.load_catalogue()


def test_close_twice_and_use_after_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(StoreError, match="used after close"):
        store.next_seq()
    with pytest.raises(StoreError, match="used after close"):
        store.peek(Lane.EVENTS, 1)


def test_wal_mode_and_durability_setting(tmp_path: Path) -> None:
    for durability, level in ((Durability.FULL, 2), (Durability.NORMAL, 1)):
        with Store(tmp_path / f"{durability}.db", durability=durability) as store:
            db = store._conn()
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == level


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"s\.db: not a usable SQLite database"):
        Store(path)
    with pytest.raises(ValueError, match="max_mb"):
        Store(tmp_path / "t.db", max_mb=0)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 was written by a newer edgegw"):
        Store(path)


def test_a_store_belongs_to_the_thread_that_opened_it(tmp_path: Path) -> None:
    """The agent gives the store one owner thread; another thread's call is refused, not
    silently serialised behind a lock the event loop could wait on."""
    with Store(tmp_path / "s.db") as store:
        fill(store, 1)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                store.peek(Lane.TELEMETRY, 1)
            except StoreError as err:
                errors.append(err)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert errors and "thread" in str(errors[0])


# ------------------------------------------------------------------------- crashes and speed
_WRITER = """
import sys
from gateway.store import Store
store = Store(sys.argv[1], durability=sys.argv[2])
while True:
    seq = store.next_seq()
    store.append_batch(seq, seq.to_bytes(8, "big") * 50, 200)
    print("B", seq, flush=True)
    if seq % 7 == 0:
        store.append_event(b"event %d" % seq)
    if seq % 5 == 0:
        store.ack("telemetry", seq - 3)
        print("A", seq - 3, flush=True)
"""


def _unclean_exit(path: Path, durability: str, boot_id: str) -> None:
    """A process that opens the store, appends one batch and dies without closing it."""
    code = ("import os, sys; from gateway.store import Store; "
            "s = Store(sys.argv[1], durability=sys.argv[2], boot_id=sys.argv[3]); "
            "s.append_batch(s.next_seq(), b'x', 1); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path), durability, boot_id], cwd=ROOT,
                   check=True, timeout=30)


@pytest.mark.parametrize("durability", list(Durability))
def test_kill_9_loses_nothing_committed(tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), durability.value],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    committed: set[int] = set()
    acked: set[int] = set()
    last = 0
    deadline = time.monotonic() + 30

    def record(line: str) -> None:
        nonlocal last
        kind, num = line.split()
        (committed if kind == "B" else acked).add(int(num))
        last = max(last, int(num)) if kind == "B" else last

    while len(committed) < 300 and time.monotonic() < deadline:
        record(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for line in proc.stdout.read().splitlines():      # what it printed before it died
        if len(line.split()) == 2:
            record(line)
    proc.stdout.close()
    assert len(committed) >= 300
    # killed between committing an ack and printing it: that one batch may be gone too
    unprinted_ack = {last - 3} if last % 5 == 0 else set()

    with Store(path, durability=durability) as store:
        store.integrity_check()
        stored = {r.seq for r in store.pending() if r.seq is not None}
        assert committed - acked - unprinted_ack <= stored     # every committed batch is there
        nxt = store.next_seq()
        assert nxt in (last + 1, last + 2)                     # it may have committed one more
        assert stored <= set(range(1, nxt))
        for rec in store.peek(Lane.TELEMETRY, 1000):
            assert rec.payload == rec.row_id.to_bytes(8, "big") * 50   # never half-written
        assert fill(store, 1) == [nxt]                         # seq continues


def test_normal_durability_skips_seq_after_an_unclean_shutdown_in_another_boot(
        tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    _unclean_exit(path, "normal", "boot-a")                    # seq 1, then died
    with Store(path, durability=Durability.NORMAL, boot_id="boot-a") as store:
        assert store.next_seq() == 2                            # same boot: a killed process
        store.append_batch(2, b"x", 1)
    _unclean_exit(path, "normal", "boot-a")                    # seq 3, then died
    with Store(path, durability=Durability.NORMAL, boot_id="boot-b") as store:
        assert store.next_seq() == 4 + SEQ_GUARD                # a power cut: leave a gap
    with Store(path, durability=Durability.NORMAL, boot_id="boot-c") as store:
        assert store.next_seq() == 4 + SEQ_GUARD                # closed cleanly: no gap
    full = tmp_path / "f.db"
    _unclean_exit(full, "full", "boot-a")
    with Store(full, durability=Durability.FULL, boot_id="boot-b") as store:
        assert store.next_seq() == 2                            # full sync needs no guard


def test_a_million_point_backlog_replays_fast(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    with Store(path, durability=Durability.NORMAL, max_mb=64) as store:
        payload = os.urandom(330)                               # a 200-point batch's size
        for _ in range(5000):
            store.append_batch(store.next_seq(), payload, 200)
    with Store(path) as store:
        t0 = time.perf_counter()
        points = 0
        window: list[int] = []
        for rec in store.pending():
            points += rec.n_points
            window.append(rec.row_id)
            if len(window) == 20:
                store.ack_many(Lane.TELEMETRY, window)
                window = []
        store.ack_many(Lane.TELEMETRY, window)
        elapsed = time.perf_counter() - t0
        assert points == 1_000_000
        assert points / elapsed >= 20_000, f"{points / elapsed:.0f} points/s"
        assert store.counts().batches == 0
