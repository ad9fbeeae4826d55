"""The on-disk store-and-forward queue: SQLite (WAL), two lanes, a byte budget.

A telemetry batch is committed here, in one transaction, *before* it is offered to the broker, and
deleted only when the broker acknowledged it (``ack`` after PUBACK). Two lanes:

- ``events``: the priority lane (alarms, notices); :meth:`Store.pending` yields it first;
- ``telemetry``: the ordered backlog of encoded batches, keyed by their ``seq``.

``seq`` increases by one per telemetry batch for the life of the store: the next value is kept
in the database and advanced in the same transaction as the insert, so it is never reused, even
after every batch was acknowledged and deleted, or after a crash.

Durability (``Durability``, the ``store.synchronous`` setting):

- ``full`` (default): every commit is fsynced. A committed batch survives kill -9 *and* a power
  cut (street cabinets lose power often). Cost measured on ext4: about 24 KiB written per batch
  appended and acknowledged, so ~400 MB a day at one batch every 5 s, ~150 GB a year: a small
  fraction of even a consumer SD card's endurance (tens of TB written), and two fsyncs per batch.
- ``normal``: commits reach the OS but the WAL is synced only at checkpoints. About a third
  fewer bytes (~16 KiB per batch) and no fsync latency on slow cards. Survives kill -9 (the OS
  still holds the data) and never corrupts, but a power cut may lose the last seconds of
  commits, and their ``seq`` numbers could be handed out again. To make that visible instead of
  silent, a store opened after an unclean shutdown *in an earlier boot* skips ``seq`` ahead by
  :data:`SEQ_GUARD`, so the platform sees a gap (possible loss) and never a false duplicate.

So wear does not decide between them; ``full`` is the default because a batch that was committed
(and possibly already published) must never vanish with the power.

The store is bounded by ``max_mb`` (payload bytes plus :data:`ROW_OVERHEAD` per row): when an
append would exceed it, the oldest telemetry batches are deleted first, then, if only events are
left, the oldest events. Dropped counts are persisted with the deletion and handed out once by
:meth:`Store.take_dropped` / :meth:`Store.take_dropped_events` (for a ``store_dropped`` event).

The API is synchronous and thread-safe (one connection behind a lock): call it from the event
loop for small operations or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from gateway.codec import Catalogue, DecodeError
from gateway.errors import StoreError

__all__ = ["ROW_OVERHEAD", "SEQ_GUARD", "Durability", "Lane", "Record", "Store", "StoreCounts"]

SCHEMA_VERSION = 1
ROW_OVERHEAD = 64          # bytes counted per row on top of its payload (SQLite row, b-tree)
SEQ_GUARD = 1000           # seq skipped after an unclean shutdown in an earlier boot (normal)
_CATALOGUE_KEY = "catalogue"
_BOOT_KEY = "_store.boot_id"      # kv keys starting with "_store." are the store's own
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    seq      INTEGER PRIMARY KEY,
    n_points INTEGER NOT NULL,
    nbytes   INTEGER NOT NULL,
    payload  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    nbytes   INTEGER NOT NULL,
    payload  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""


class Durability(StrEnum):
    """SQLite's ``synchronous`` level for the store (see the module docstring)."""

    FULL = "full"
    NORMAL = "normal"


class Lane(StrEnum):
    EVENTS = "events"
    TELEMETRY = "telemetry"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored message. ``row_id`` is what :meth:`Store.ack` takes; for telemetry it is the
    batch's ``seq``."""

    lane: Lane
    row_id: int
    payload: bytes
    n_points: int                  # 0 for events

    @property
    def seq(self) -> int | None:
        return self.row_id if self.lane is Lane.TELEMETRY else None


@dataclass(frozen=True, slots=True)
class StoreCounts:
    batches: int
    points: int
    telemetry_bytes: int
    events: int
    event_bytes: int

    @property
    def total_bytes(self) -> int:
        """What counts against ``max_mb``."""
        return (self.telemetry_bytes + self.event_bytes
                + ROW_OVERHEAD * (self.batches + self.events))


def _current_boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


class Store:
    """The SQLite store (see the module docstring). Opening creates the file and its schema.

    ``boot_id`` identifies the running boot (read from ``/proc`` when None); it only matters
    with ``Durability.NORMAL``, to tell a power cut from a killed process.
    """

    def __init__(self, path: str | Path, *, max_mb: float = 256,
                 durability: Durability | str = Durability.FULL,
                 boot_id: str | None = None) -> None:
        if max_mb <= 0:
            raise ValueError(f"store: max_mb must be positive, got {max_mb}")
        self.path = Path(path)
        self.durability = Durability(durability)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=10.0)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"store {self.path}: cannot open: {err}") from err
        try:
            self._setup(db, boot_id if boot_id is not None else _current_boot_id())
        except sqlite3.Error as err:
            db.close()
            raise StoreError(
                f"store {self.path}: not a usable SQLite database ({err}); move it aside to "
                "start an empty store") from err
        except BaseException:
            db.close()
            raise
        self._db = db

    # ---------------------------------------------------------------------------- life cycle
    def _setup(self, db: sqlite3.Connection, boot_id: str | None) -> None:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {self.path}: cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={self.durability.value.upper()}")
        db.execute("PRAGMA journal_size_limit=4194304")    # truncate the WAL after checkpoints
        db.execute("PRAGMA busy_timeout=10000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path}: schema version {version} was written by a "
                             f"newer edgegw (this one knows {SCHEMA_VERSION})")
        # executescript() commits any open transaction first: give the schema its own
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA
                         + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO counters VALUES ('next_seq', 1), "
                       "('dropped_points', 0), ('dropped_events', 0), ('clean', 1)")
            clean = self._counter(db, "clean")
            last_boot = db.execute("SELECT value FROM kv WHERE key=?", (_BOOT_KEY,)).fetchone()
            power_cut = not clean and (boot_id is None or last_boot is None
                                       or bytes(last_boot[0]).decode() != boot_id)
            if power_cut and self.durability is Durability.NORMAL:
                db.execute("UPDATE counters SET value = value + ? WHERE name='next_seq'",
                           (SEQ_GUARD,))
            db.execute("UPDATE counters SET value=0 WHERE name='clean'")
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)",
                       (_BOOT_KEY, (boot_id or "").encode()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(n_points), 0), COALESCE(SUM(nbytes), 0)"
                         " FROM telemetry").fetchone()
        self._batches, self._points, self._tbytes = int(row[0]), int(row[1]), int(row[2])
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM events").fetchone()
        self._events, self._ebytes = int(row[0]), int(row[1])
        self._next_seq = self._counter(db, "next_seq")

    def close(self) -> None:
        """Mark the shutdown clean, checkpoint and close. Safe to call twice."""
        with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            try:
                db.execute("UPDATE counters SET value=1 WHERE name='clean'")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass          # closing anyway: the next open treats it as an unclean shutdown
            finally:
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._db is None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path}: used after close()")
        return self._db

    @staticmethod
    def _counter(db: sqlite3.Connection, name: str) -> int:
        return int(db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection, what: str) -> Iterator[None]:
        """One write transaction: committed on success, rolled back on any error; SQLite's
        errors become StoreError naming the store and the operation."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise StoreError(f"store {self.path}: {what}: {err}") from err

    # ------------------------------------------------------------------------------- appends
    def next_seq(self) -> int:
        """The ``seq`` the next :meth:`append_batch` must carry (encode the batch with it)."""
        with self._lock:
            self._conn()
            return self._next_seq

    def append_batch(self, seq: int, payload: bytes, n_points: int) -> int:
        """Commit one encoded batch (one transaction); returns its row id (= ``seq``).
        ``seq`` must be :meth:`next_seq`. May evict the oldest batches to stay within
        ``max_mb``."""
        size = len(payload)
        if size + ROW_OVERHEAD > self.max_bytes:
            raise StoreError(f"store {self.path}: a batch of {size} bytes is larger than the "
                             f"whole store ({self.max_bytes} bytes)")
        with self._lock:
            db = self._conn()
            if seq != self._next_seq:
                raise StoreError(f"store {self.path}: batch seq {seq} is not the next one "
                                 f"({self._next_seq}): take it from next_seq()")
            with self._transaction(db, f"append batch {seq}"):
                db.execute("INSERT INTO telemetry VALUES (?, ?, ?, ?)",
                           (seq, n_points, size, payload))
                db.execute("UPDATE counters SET value=? WHERE name='next_seq'", (seq + 1,))
                evicted = self._evict(db, size + ROW_OVERHEAD, keep_seq=seq)
            self._next_seq = seq + 1
            self._batches += 1
            self._points += n_points
            self._tbytes += size
            self._apply_evicted(evicted)
            return seq

    def append_event(self, payload: bytes) -> int:
        """Commit one encoded event to the priority lane; returns its row id."""
        size = len(payload)
        if size + ROW_OVERHEAD > self.max_bytes:
            raise StoreError(f"store {self.path}: an event of {size} bytes is larger than the "
                             f"whole store ({self.max_bytes} bytes)")
        with self._lock:
            db = self._conn()
            with self._transaction(db, "append event"):
                cur = db.execute("INSERT INTO events (nbytes, payload) VALUES (?, ?)",
                                 (size, payload))
                row_id = int(cur.lastrowid or 0)
                evicted = self._evict(db, size + ROW_OVERHEAD, keep_event=row_id)
            self._events += 1
            self._ebytes += size
            self._apply_evicted(evicted)
            return row_id

    def _evict(self, db: sqlite3.Connection, incoming: int, *, keep_seq: int | None = None,
               keep_event: int | None = None) -> tuple[int, int, int, int, int]:
        """Inside the caller's transaction: delete the oldest rows until the store, with the
        ``incoming`` row, fits. Returns (batches, points, bytes, events, event bytes) removed."""
        total = (self._tbytes + self._ebytes + ROW_OVERHEAD * (self._batches + self._events)
                 + incoming)
        excess = total - self.max_bytes
        if excess <= 0:
            return (0, 0, 0, 0, 0)
        b = p = tb = 0
        last: int | None = None
        cur = db.execute("SELECT seq, n_points, nbytes FROM telemetry WHERE seq != ? "
                         "ORDER BY seq", (-1 if keep_seq is None else keep_seq,))
        for seq, n_points, nbytes in cur:
            if excess <= 0:
                break
            excess -= nbytes + ROW_OVERHEAD
            b, p, tb, last = b + 1, p + n_points, tb + nbytes, seq
        cur.close()
        if last is not None:
            db.execute("DELETE FROM telemetry WHERE seq <= ? AND seq != ?",
                       (last, -1 if keep_seq is None else keep_seq))
            db.execute("UPDATE counters SET value = value + ? WHERE name='dropped_points'", (p,))
        e = eb = 0
        last = None
        if excess > 0:
            cur = db.execute("SELECT id, nbytes FROM events WHERE id != ? ORDER BY id",
                             (-1 if keep_event is None else keep_event,))
            for row_id, nbytes in cur:
                if excess <= 0:
                    break
                excess -= nbytes + ROW_OVERHEAD
                e, eb, last = e + 1, eb + nbytes, row_id
            cur.close()
            if last is not None:
                db.execute("DELETE FROM events WHERE id <= ? AND id != ?",
                           (last, -1 if keep_event is None else keep_event))
                db.execute("UPDATE counters SET value = value + ? WHERE name='dropped_events'",
                           (e,))
        return (b, p, tb, e, eb)

    def _apply_evicted(self, evicted: tuple[int, int, int, int, int]) -> None:
        b, p, tb, e, eb = evicted
        self._batches -= b
        self._points -= p
        self._tbytes -= tb
        self._events -= e
        self._ebytes -= eb

    # -------------------------------------------------------------------------------- reading
    def peek(self, lane: Lane | str, limit: int, *, after: int | None = None) -> list[Record]:
        """Up to ``limit`` records of ``lane`` in order, oldest first, with row ids above
        ``after`` (to skip those already in flight)."""
        lane = Lane(lane)
        if lane is Lane.TELEMETRY:
            sql = ("SELECT seq, payload, n_points FROM telemetry WHERE seq > ? "
                   "ORDER BY seq LIMIT ?")
        else:
            sql = "SELECT id, payload, 0 FROM events WHERE id > ? ORDER BY id LIMIT ?"
        with self._lock:
            db = self._conn()
            try:
                rows = db.execute(sql, (-1 if after is None else after, limit)).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: read {lane}: {err}") from err
        return [Record(lane=lane, row_id=r[0], payload=r[1], n_points=r[2]) for r in rows]

    def pending(self, *, chunk: int = 256) -> Iterator[Record]:
        """Every stored record, the events lane first, then the telemetry backlog, each in
        order. Reads ``chunk`` rows at a time, so acks may interleave with the iteration.

        Events appended while the walk is already in the telemetry lane come only with the next
        walk: a publisher that must put live alarms first peeks the events lane between
        telemetry batches (``peek(Lane.EVENTS, n)``, then ``peek(Lane.TELEMETRY, n, after=...)``).
        """
        for lane in (Lane.EVENTS, Lane.TELEMETRY):
            after: int | None = None
            while True:
                recs = self.peek(lane, chunk, after=after)
                yield from recs
                if len(recs) < chunk:
                    break
                after = recs[-1].row_id

    # ------------------------------------------------------------------------------ deleting
    def ack(self, lane: Lane | str, row_id: int) -> bool:
        """Delete a record the broker acknowledged. False if it was not there (already acked,
        or evicted)."""
        return self.ack_many(lane, (row_id,)) == 1

    def ack_many(self, lane: Lane | str, row_ids: Iterable[int]) -> int:
        """Delete several acknowledged records in one transaction; returns how many went."""
        lane = Lane(lane)
        ids = [(int(i),) for i in row_ids]
        if not ids:
            return 0
        with self._lock:
            db = self._conn()
            with self._transaction(db, f"ack {lane}"):
                sql = ("DELETE FROM telemetry WHERE seq = ? RETURNING n_points, nbytes"
                       if lane is Lane.TELEMETRY else
                       "DELETE FROM events WHERE id = ? RETURNING 0, nbytes")
                gone = [row for i in ids for row in db.execute(sql, i).fetchall()]
            if lane is Lane.TELEMETRY:
                self._batches -= len(gone)
                self._points -= sum(r[0] for r in gone)
                self._tbytes -= sum(r[1] for r in gone)
            else:
                self._events -= len(gone)
                self._ebytes -= sum(r[1] for r in gone)
            return len(gone)

    # ------------------------------------------------------------------------------- figures
    def counts(self) -> StoreCounts:
        with self._lock:
            self._conn()
            return StoreCounts(batches=self._batches, points=self._points,
                               telemetry_bytes=self._tbytes, events=self._events,
                               event_bytes=self._ebytes)

    def take_dropped(self) -> int:
        """Telemetry points evicted since the last call (persisted until taken)."""
        return self._take("dropped_points")

    def take_dropped_events(self) -> int:
        """Events evicted since the last call (only when the store held nothing else)."""
        return self._take("dropped_events")

    def _take(self, name: str) -> int:
        with self._lock:
            db = self._conn()
            with self._transaction(db, f"read {name}"):
                n = self._counter(db, name)
                if n:
                    db.execute("UPDATE counters SET value=0 WHERE name=?", (name,))
            return n

    def integrity_check(self) -> None:
        """Run SQLite's integrity check; raises StoreError naming the first problem."""
        with self._lock:
            db = self._conn()
            try:
                rows = db.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: integrity check failed: {err}") from err
        if [r[0] for r in rows] != ["ok"]:
            raise StoreError(f"store {self.path}: integrity check: {rows[0][0]}")

    # ------------------------------------------------------------------------------------ kv
    def kv_get(self, key: str) -> bytes | None:
        with self._lock:
            db = self._conn()
            try:
                row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: read {key!r}: {err}") from err
        return None if row is None else bytes(row[0])

    def kv_set(self, key: str, value: bytes) -> None:
        """Store a small value durably (one transaction)."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, bytes(value)))
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: write {key!r}: {err}") from err

    def kv_delete(self, key: str) -> None:
        with self._lock:
            db = self._conn()
            try:
                db.execute("DELETE FROM kv WHERE key=?", (key,))
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: delete {key!r}: {err}") from err

    def load_catalogue(self) -> Catalogue | None:
        """The persisted point catalogue (ids stay stable across restarts), if any."""
        raw = self.kv_get(_CATALOGUE_KEY)
        if raw is None:
            return None
        try:
            return Catalogue.from_dict(json.loads(raw))
        except (ValueError, DecodeError) as err:
            raise StoreError(f"store {self.path}: the saved catalogue is unreadable: {err}") \
                from err

    def save_catalogue(self, catalogue: Catalogue) -> None:
        self.kv_set(_CATALOGUE_KEY, json.dumps(catalogue.to_dict(),
                                               separators=(",", ":")).encode())
