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
  fraction of even a consumer SD card's endurance (tens of TB written), and two fsyncs per batch
  (the outbox halves both by deleting acknowledged batches in the next batch's commit:
  ``store.ack_delay``, docs/operations.md section 8).
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

The API is synchronous, and a store belongs to the thread that opened it (SQLite's own check
is on): the agent gives it one owner thread (:mod:`gateway.store_worker`) and never calls it
from the event loop, so a slow fsync or a frozen filesystem holds up that thread only.

Faults are classified (:class:`~gateway.errors.StoreFault`): every ``StoreError`` raised here
says whether the disk is full, failing, read-only, corrupt or gone. :func:`open_store` opens a
store for the agent: a damaged one (failing SQLite's quick check after an unclean shutdown,
not a database, or emptied to 0 bytes) is renamed aside with a timestamp, evidence kept, and a
fresh one created; a read-only one is reported as read-only, never as corrupt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol

from gateway.codec import Catalogue, DecodeError
from gateway.errors import StoreError, StoreFault

__all__ = [
    "ROW_OVERHEAD",
    "SEQ_GUARD",
    "Appended",
    "BatchIn",
    "Durability",
    "Identity",
    "KeyValue",
    "Lane",
    "Opened",
    "Record",
    "Store",
    "StoreCounts",
    "classify",
    "move_aside",
    "open_store",
    "read_identity",
]

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


@dataclass(frozen=True, slots=True)
class BatchIn:
    """An encoded telemetry batch to commit (its ``seq`` was given by the pipeline)."""

    seq: int
    payload: bytes
    n_points: int


@dataclass(frozen=True, slots=True)
class Appended:
    """What one :meth:`Store.append` committed: the row ids of the events (in order), the
    telemetry seqs it already held (written by an earlier attempt), and what the byte budget
    evicted to make room (``dropped_*``, handed out here once)."""

    event_ids: tuple[int, ...]
    already: tuple[int, ...]
    dropped_points: int
    dropped_events: int
    counts: StoreCounts


# SQLite's primary result codes (the low byte of sqlite_errorcode)
_SQLITE_FAULTS = {
    13: StoreFault.FULL,          # SQLITE_FULL
    10: StoreFault.IO_ERROR,      # SQLITE_IOERR
    8: StoreFault.READ_ONLY,      # SQLITE_READONLY
    11: StoreFault.CORRUPT,       # SQLITE_CORRUPT
    26: StoreFault.CORRUPT,       # SQLITE_NOTADB
    14: StoreFault.UNAVAILABLE,   # SQLITE_CANTOPEN
    23: StoreFault.UNAVAILABLE,   # SQLITE_AUTH
    3: StoreFault.UNAVAILABLE,    # SQLITE_PERM
}
_ERRNO_FAULTS = {
    errno.ENOSPC: StoreFault.FULL,
    errno.EDQUOT: StoreFault.FULL,
    errno.EROFS: StoreFault.READ_ONLY,
    errno.EACCES: StoreFault.UNAVAILABLE,
    errno.EPERM: StoreFault.UNAVAILABLE,
    errno.ENOENT: StoreFault.UNAVAILABLE,
    errno.EIO: StoreFault.IO_ERROR,
}


def classify(err: BaseException) -> StoreFault:
    """The fault behind an error from SQLite or the filesystem."""
    if isinstance(err, StoreError):
        return err.fault
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _SQLITE_FAULTS:
            return _SQLITE_FAULTS[code & 0xFF]
        text = str(err).lower()
        for needle, fault in (("disk is full", StoreFault.FULL),
                              ("readonly", StoreFault.READ_ONLY),
                              ("malformed", StoreFault.CORRUPT),
                              ("not a database", StoreFault.CORRUPT),
                              ("disk i/o", StoreFault.IO_ERROR),
                              ("unable to open", StoreFault.UNAVAILABLE)):
            if needle in text:
                return fault
        return StoreFault.OTHER
    if isinstance(err, OSError):
        return _ERRNO_FAULTS.get(err.errno or 0, StoreFault.IO_ERROR)
    return StoreFault.OTHER


class KeyValue(Protocol):
    """Small values kept across restarts. The store answers at once; the agent's outbox
    answers from memory and commits in the background."""

    def kv_get(self, key: str) -> bytes | None: ...

    def kv_set(self, key: str, value: bytes) -> None: ...

    def kv_delete(self, key: str) -> None: ...


def _read_only(path: Path) -> bool:
    """Whether the store's file or directory cannot be written (a read-only mount, even for
    root; or permissions)."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
        return not os.access(path if path.exists() else path.parent, os.W_OK)
    except OSError:
        return False


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
                 boot_id: str | None = None, check: bool = False) -> None:
        if max_mb <= 0:
            raise ValueError(f"store: max_mb must be positive, got {max_mb}")
        self.path = Path(path)
        self.durability = Durability(durability)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._db: sqlite3.Connection | None = None
        self.created = False            # no store was there: this one is new
        self.unclean = False            # the last run did not close the store cleanly
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            st = self.path.stat() if self.path.exists() else None
        except OSError as err:
            raise StoreError(f"store {self.path}: cannot open: {err.strerror or err}",
                             fault=classify(err)) from err
        if st is not None and st.st_size == 0:
            # SQLite would take an empty file for a new database: that is a store that was
            # truncated (a power cut mid-write, a tool), and its backlog is gone
            raise StoreError(f"store {self.path}: the file is empty (0 bytes): it was truncated",
                             fault=StoreFault.CORRUPT)
        self.created = st is None
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as err:
            raise StoreError(f"store {self.path}: cannot open: {err}", fault=classify(err)) \
                from err
        try:
            self._setup(db, boot_id if boot_id is not None else _current_boot_id(),
                        check=check)
            self._ino = self.path.stat().st_ino
        except sqlite3.Error as err:
            db.close()
            fault = classify(err)
            if fault in (StoreFault.UNAVAILABLE, StoreFault.OTHER) and _read_only(self.path):
                # SQLite says "unable to open" for a WAL store it cannot write beside
                fault = StoreFault.READ_ONLY
            if fault is StoreFault.CORRUPT:
                raise StoreError(f"store {self.path}: not a usable SQLite database ({err})",
                                 fault=fault) from err
            raise StoreError(f"store {self.path}: cannot open: {err}", fault=fault) from err
        except OSError as err:
            db.close()
            raise StoreError(f"store {self.path}: cannot open: {err.strerror or err}",
                             fault=classify(err)) from err
        except BaseException:
            db.close()
            raise
        self._db = db

    # ---------------------------------------------------------------------------- life cycle
    def _setup(self, db: sqlite3.Connection, boot_id: str | None, *, check: bool) -> None:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {self.path}: cannot switch to WAL mode (got {mode})",
                             fault=StoreFault.READ_ONLY)
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
            self.unclean = not clean
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
        if check and self.unclean:
            # a power cut is when a card corrupts pages; a clean store skips the page walk
            rows = db.execute("PRAGMA quick_check(1)").fetchall()
            if [r[0] for r in rows] != ["ok"]:
                raise StoreError(f"store {self.path}: damaged: {rows[0][0]}",
                                 fault=StoreFault.CORRUPT)
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(n_points), 0), COALESCE(SUM(nbytes), 0)"
                         " FROM telemetry").fetchone()
        self._batches, self._points, self._tbytes = int(row[0]), int(row[1]), int(row[2])
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM events").fetchone()
        self._events, self._ebytes = int(row[0]), int(row[1])
        self._next_seq = self._counter(db, "next_seq")

    def close(self) -> None:
        """Mark the shutdown clean, checkpoint and close. Safe to call twice."""
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

    def abandon(self) -> None:
        """Close without marking the shutdown clean (the store failed under us)."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
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

    def _error(self, what: str, err: BaseException) -> StoreError:
        return StoreError(f"store {self.path}: {what}: {err}", fault=classify(err))

    def check_present(self) -> None:
        """StoreError(MISSING) when the file at ``path`` is no longer the one open (deleted,
        or replaced): what is written then goes nowhere that survives."""
        try:
            ino = self.path.stat().st_ino
        except FileNotFoundError as err:
            raise StoreError(f"store {self.path}: the file was deleted under the agent",
                             fault=StoreFault.MISSING) from err
        except OSError as err:
            raise self._error("stat", err) from err
        if ino != self._ino:
            raise StoreError(f"store {self.path}: the file was replaced under the agent",
                             fault=StoreFault.MISSING)

    @staticmethod
    def _counter(db: sqlite3.Connection, name: str) -> int:
        return int(db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection, what: str) -> Iterator[None]:
        """One write transaction: committed on success, rolled back on any error; SQLite's
        errors become StoreError naming the store, the operation and the fault."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):   # a failed COMMIT already rolled back
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise self._error(what, err) from err

    # ------------------------------------------------------------------------------- appends
    def next_seq(self) -> int:
        """The lowest ``seq`` the next batch may carry."""
        self._conn()
        return self._next_seq

    def append_batch(self, seq: int, payload: bytes, n_points: int) -> int:
        """Commit one encoded batch (one transaction); returns its ``seq``. May evict the
        oldest batches to stay within ``max_mb`` (see :meth:`take_dropped`)."""
        self._append((), (BatchIn(seq, payload, n_points),), take=False)
        return seq

    def append_event(self, payload: bytes) -> int:
        """Commit one encoded event to the priority lane; returns its row id."""
        return self._append((payload,), (), take=False).event_ids[0]

    def append(self, events: Sequence[bytes], batches: Sequence[BatchIn], *,
               kv: Sequence[tuple[str, bytes | None]] = (),
               acks: Mapping[Lane, Sequence[int]] | None = None) -> Appended:
        """Commit events, batches, state (``kv``: set, or delete with None) and acks (rows
        the broker acknowledged, deleted) in ONE transaction (one fsync), and hand out what
        the byte budget evicted. A batch's ``seq`` must not be below :meth:`next_seq` unless
        this store already holds it (an earlier attempt committed it: skipped, reported in
        ``already``); a ``seq`` above it is allowed: the seqs in between are batches lost
        before they reached the store, and are never given out again."""
        return self._append(events, batches, take=True, kv=kv, acks=acks)

    def _append(self, events: Sequence[bytes], batches: Sequence[BatchIn], *,
                take: bool, kv: Sequence[tuple[str, bytes | None]] = (),
                acks: Mapping[Lane, Sequence[int]] | None = None) -> Appended:
        for payload in events:
            if len(payload) + ROW_OVERHEAD > self.max_bytes:
                raise StoreError(f"store {self.path}: an event of {len(payload)} bytes is "
                                 f"larger than the whole store ({self.max_bytes} bytes)")
        for b in batches:
            if len(b.payload) + ROW_OVERHEAD > self.max_bytes:
                raise StoreError(f"store {self.path}: a batch of {len(b.payload)} bytes is "
                                 f"larger than the whole store ({self.max_bytes} bytes)")
        db = self._conn()
        next_seq = self._next_seq
        already: list[int] = []
        fresh: list[BatchIn] = []
        for b in batches:
            if b.seq < next_seq:
                if db.execute("SELECT 1 FROM telemetry WHERE seq=?", (b.seq,)).fetchone():
                    already.append(b.seq)
                    continue
                raise StoreError(f"store {self.path}: batch seq {b.seq} is not the next one "
                                 f"({next_seq}): seq {b.seq} was already used")
            fresh.append(b)
            next_seq = b.seq + 1
        ids: list[int] = []
        counts = [self._batches, self._points, self._tbytes, self._events, self._ebytes]
        dropped = (0, 0)
        what = (f"append {len(events)} event(s) and {len(fresh)} batch(es)"
                if events and fresh else f"append batch {fresh[0].seq}" if len(fresh) == 1
                else f"append {len(fresh)} batches" if fresh
                else "append event" if events else "write state")
        with self._transaction(db, what):
            for payload in events:
                cur = db.execute("INSERT INTO events (nbytes, payload) VALUES (?, ?)",
                                 (len(payload), payload))
                ids.append(int(cur.lastrowid or 0))
                self._add(counts, events=1, ebytes=len(payload))
                self._evict(db, counts, keep_event=ids[-1])
            for b in fresh:
                db.execute("INSERT INTO telemetry VALUES (?, ?, ?, ?)",
                           (b.seq, b.n_points, len(b.payload), b.payload))
                self._add(counts, batches=1, points=b.n_points, tbytes=len(b.payload))
                self._evict(db, counts, keep_seq=b.seq)
            if fresh:
                db.execute("UPDATE counters SET value=? WHERE name='next_seq'", (next_seq,))
            for key, value in kv:
                if value is None:
                    db.execute("DELETE FROM kv WHERE key=?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, bytes(value)))
            for lane, row_ids in (acks or {}).items():
                self._delete(db, counts, Lane(lane), row_ids)
            if take:
                dropped = (self._counter(db, "dropped_points"),
                           self._counter(db, "dropped_events"))
                if any(dropped):
                    db.execute("UPDATE counters SET value=0 WHERE name IN "
                               "('dropped_points', 'dropped_events')")
        (self._batches, self._points, self._tbytes, self._events, self._ebytes) = counts
        self._next_seq = next_seq
        return Appended(event_ids=tuple(ids), already=tuple(already),
                        dropped_points=dropped[0], dropped_events=dropped[1],
                        counts=self.counts())

    @staticmethod
    def _add(counts: list[int], *, batches: int = 0, points: int = 0, tbytes: int = 0,
             events: int = 0, ebytes: int = 0) -> None:
        counts[0] += batches
        counts[1] += points
        counts[2] += tbytes
        counts[3] += events
        counts[4] += ebytes

    def _evict(self, db: sqlite3.Connection, counts: list[int], *, keep_seq: int | None = None,
               keep_event: int | None = None) -> None:
        """Inside the caller's transaction: delete the oldest rows until the store fits its
        budget, the row just added (``keep_*``) kept. Updates ``counts`` (batches, points,
        telemetry bytes, events, event bytes) and the persisted dropped counters."""
        batches, _, tbytes, events, ebytes = counts
        excess = tbytes + ebytes + ROW_OVERHEAD * (batches + events) - self.max_bytes
        if excess <= 0:
            return
        b = p = tb = 0
        last: int | None = None
        keep = -1 if keep_seq is None else keep_seq
        cur = db.execute("SELECT seq, n_points, nbytes FROM telemetry WHERE seq != ? "
                         "ORDER BY seq", (keep,))
        for seq, n_points, nbytes in cur:
            if excess <= 0:
                break
            excess -= nbytes + ROW_OVERHEAD
            b, p, tb, last = b + 1, p + n_points, tb + nbytes, seq
        cur.close()
        if last is not None:
            db.execute("DELETE FROM telemetry WHERE seq <= ? AND seq != ?", (last, keep))
            db.execute("UPDATE counters SET value = value + ? WHERE name='dropped_points'", (p,))
            self._add(counts, batches=-b, points=-p, tbytes=-tb)
        if excess <= 0:
            return
        e = eb = 0
        last = None
        keep = -1 if keep_event is None else keep_event
        cur = db.execute("SELECT id, nbytes FROM events WHERE id != ? ORDER BY id", (keep,))
        for row_id, nbytes in cur:
            if excess <= 0:
                break
            excess -= nbytes + ROW_OVERHEAD
            e, eb, last = e + 1, eb + nbytes, row_id
        cur.close()
        if last is not None:
            db.execute("DELETE FROM events WHERE id <= ? AND id != ?", (last, keep))
            db.execute("UPDATE counters SET value = value + ? WHERE name='dropped_events'",
                       (e,))
            self._add(counts, events=-e, ebytes=-eb)

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
        db = self._conn()
        try:
            rows = db.execute(sql, (-1 if after is None else after, limit)).fetchall()
        except sqlite3.Error as err:
            raise self._error(f"read {lane}", err) from err
        return [Record(lane=lane, row_id=r[0], payload=r[1], n_points=r[2]) for r in rows]

    def pending(self, *, chunk: int = 256) -> Iterator[Record]:
        """Every stored record, the events lane first, then the telemetry backlog, each in
        order. Reads ``chunk`` rows at a time, so acks may interleave with the iteration."""
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
        db = self._conn()
        counts = [self._batches, self._points, self._tbytes, self._events, self._ebytes]
        with self._transaction(db, f"ack {lane}"):
            gone = self._delete(db, counts, lane, [i for (i,) in ids])
        (self._batches, self._points, self._tbytes, self._events, self._ebytes) = counts
        return gone

    def _delete(self, db: sqlite3.Connection, counts: list[int], lane: Lane,
                row_ids: Iterable[int]) -> int:
        sql = ("DELETE FROM telemetry WHERE seq = ? RETURNING n_points, nbytes"
               if lane is Lane.TELEMETRY else
               "DELETE FROM events WHERE id = ? RETURNING 0, nbytes")
        gone = [row for i in row_ids for row in db.execute(sql, (int(i),)).fetchall()]
        if lane is Lane.TELEMETRY:
            self._add(counts, batches=-len(gone), points=-sum(r[0] for r in gone),
                      tbytes=-sum(r[1] for r in gone))
        else:
            self._add(counts, events=-len(gone), ebytes=-sum(r[1] for r in gone))
        return len(gone)

    # ------------------------------------------------------------------------------- figures
    def counts(self) -> StoreCounts:
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
        db = self._conn()
        with self._transaction(db, f"read {name}"):
            n = self._counter(db, name)
            if n:
                db.execute("UPDATE counters SET value=0 WHERE name=?", (name,))
        return n

    def integrity_check(self) -> None:
        """Run SQLite's integrity check; raises StoreError naming the first problem."""
        db = self._conn()
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as err:
            raise self._error("integrity check failed", err) from err
        if [r[0] for r in rows] != ["ok"]:
            raise StoreError(f"store {self.path}: integrity check: {rows[0][0]}",
                             fault=StoreFault.CORRUPT)

    # ------------------------------------------------------------------------------------ kv
    def kv_get(self, key: str) -> bytes | None:
        db = self._conn()
        try:
            row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise self._error(f"read {key!r}", err) from err
        return None if row is None else bytes(row[0])

    def kv_items(self) -> dict[str, bytes]:
        """Every key and value (the store's own ``_store.`` keys left out)."""
        db = self._conn()
        try:
            rows = db.execute("SELECT key, value FROM kv WHERE key NOT LIKE '\\_store.%' "
                              "ESCAPE '\\'").fetchall()
        except sqlite3.Error as err:
            raise self._error("read the saved state", err) from err
        return {str(k): bytes(v) for k, v in rows}

    def kv_set(self, key: str, value: bytes) -> None:
        """Store a small value durably (one transaction)."""
        self.kv_write([(key, value)])

    def kv_delete(self, key: str) -> None:
        self.kv_write([(key, None)])

    def kv_write(self, writes: Iterable[tuple[str, bytes | None]]) -> None:
        """Set (or, with None, delete) several keys in one transaction."""
        db = self._conn()
        items = list(writes)
        if not items:
            return
        with self._transaction(db, f"write {items[0][0]!r}" if len(items) == 1
                               else f"write {len(items)} keys"):
            for key, value in items:
                if value is None:
                    db.execute("DELETE FROM kv WHERE key=?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, bytes(value)))

    def load_catalogue(self) -> Catalogue | None:
        """The persisted point catalogue (ids stay stable across restarts), if any."""
        return parse_catalogue(self.kv_get(_CATALOGUE_KEY), self.path)

    def save_catalogue(self, catalogue: Catalogue) -> None:
        self.kv_set(_CATALOGUE_KEY, catalogue_blob(catalogue))


CATALOGUE_KEY = _CATALOGUE_KEY


def catalogue_blob(catalogue: Catalogue) -> bytes:
    return json.dumps(catalogue.to_dict(), separators=(",", ":")).encode()


def parse_catalogue(raw: bytes | None, path: Path | str) -> Catalogue | None:
    if raw is None:
        return None
    try:
        return Catalogue.from_dict(json.loads(raw))
    except (ValueError, DecodeError) as err:
        raise StoreError(f"store {path}: the saved catalogue is unreadable: {err}",
                         fault=StoreFault.CORRUPT) from err


# =================================================================================== opening
@dataclass(frozen=True, slots=True)
class Opened:
    """What :func:`open_store` found: the store, and where a damaged one was moved."""

    store: Store
    moved_aside: Path | None = None
    reason: str | None = None               # why it was moved aside
    notes: list[str] = field(default_factory=list)


def move_aside(path: Path, tag: str, *, now: dt.datetime | None = None) -> Path:
    """Rename the store (and its -wal/-shm files) to ``<name>.<tag>-<UTC stamp>``: kept as
    evidence (and for a backlog recovered by hand), out of the way of a fresh store."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{tag}-{stamp}.{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    os.replace(path, target)
    return target


def open_store(path: str | Path, *, max_mb: float = 256,
               durability: Durability | str = Durability.FULL,
               boot_id: str | None = None) -> Opened:
    """Open the agent's store. A damaged store (see the module docstring) is moved aside and
    a fresh one created; any other failure (read-only, full, no permission, I/O) raises
    StoreError with its fault, and leaves the file as it is."""
    p = Path(path)
    store: Store | None = None
    try:
        store = Store(p, max_mb=max_mb, durability=durability, boot_id=boot_id, check=True)
        parse_catalogue(store.kv_get(_CATALOGUE_KEY), p)
        return Opened(store)
    except StoreError as err:
        if store is not None:
            store.abandon()
        if err.fault is not StoreFault.CORRUPT:
            raise
        reason = str(err)
    try:
        aside = move_aside(p, "corrupt")
    except OSError as err:
        raise StoreError(f"store {p}: damaged ({reason}) and cannot be moved aside: "
                         f"{err.strerror or err}", fault=classify(err)) from err
    store = Store(p, max_mb=max_mb, durability=durability, boot_id=boot_id)
    return Opened(store, moved_aside=aside, reason=reason)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a store that cannot be written still tells: its catalogue and next ``seq``."""

    catalogue: Catalogue | None
    next_seq: int
    points: int
    kv: dict[str, bytes] = field(default_factory=dict)      # the saved state


def read_identity(path: str | Path) -> Identity:
    """Read a store without writing anything (a read-only card): its catalogue, the next
    ``seq`` and the backlog's size. What sits only in its WAL is not seen, so the caller
    leaves a margin on ``next_seq``."""
    p = Path(path)
    uri = f"file:{p.resolve()}?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        raise StoreError(f"store {p}: cannot read: {err}", fault=classify(err)) from err
    try:
        row = db.execute("SELECT value FROM counters WHERE name='next_seq'").fetchone()
        cat = db.execute("SELECT value FROM kv WHERE key=?", (_CATALOGUE_KEY,)).fetchone()
        points = db.execute("SELECT COALESCE(SUM(n_points), 0) FROM telemetry").fetchone()
        kv = {str(k): bytes(v) for k, v in db.execute(
            "SELECT key, value FROM kv WHERE key NOT LIKE '\\_store.%' ESCAPE '\\'")}
    except sqlite3.Error as err:
        raise StoreError(f"store {p}: cannot read: {err}", fault=classify(err)) from err
    finally:
        db.close()
    return Identity(catalogue=parse_catalogue(bytes(cat[0]) if cat else None, p),
                    next_seq=int(row[0]) if row else 1, points=int(points[0]), kv=kv)
