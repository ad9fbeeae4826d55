"""The outbox: everything on its way to the platform, on disk or, while the disk fails, in
memory; and the agent's only way to the store.

The event loop never waits on the disk. Producers hand the outbox encoded events and batches
(:meth:`Outbox.put_event`, :meth:`Outbox.put_batch`) and state to keep (:meth:`Outbox.kv_set`);
that returns at once. The outbox's own task (:meth:`Outbox.serve`) commits them to the store
through its owner thread (:class:`~gateway.store_worker.StoreWorker`), many at a time in one
transaction. The publisher reads back what is committed and reports what the broker took.

The store's health is a state (``StoreState``)::

    OPENING --opened--> OK --error or no answer within stall_timeout--> FAULT --a write works--> OK
       └──cannot open / no answer──> FAULT (retried with backoff)

In FAULT, records stay in memory (``store.buffer_points`` points, ``store.buffer_events``
events; the oldest go first and are counted) and the publisher sends them from there, so a
full or frozen card does not stop the uplink. ``store_fault`` says when it began and why;
``store_recovered`` when a write works again, with what was kept, sent and dropped, and the
``seq`` ranges of the batches dropped: those numbers are never given out again, so the platform
sees the gap and this event explains it. What was kept is then committed (and what the broker
already took is deleted in the same transaction).

At start the store is opened in the background: a damaged one is moved aside and replaced
(``store_replaced``), a read-only one is read for its identity (catalogue, next ``seq``) and
kept, untouched, for when it can be written again. Until the store answers, telemetry waits
for an identity (the batches' ``seq`` and catalogue come from the store), events wait in memory
(and go out from there once the store is declared failed). Saved state (lighting overrides
and counters, alert state, remote rules, command ids) is loaded once and handed to whoever
asked (:meth:`Outbox.on_loaded`); components start before it and merge it in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from drivers.backoff import Backoff
from gateway.codec import Catalogue, PointDef
from gateway.config import StoreCfg
from gateway.errors import StoreError, StoreFault
from gateway.events import EventType
from gateway.seqmark import SeqMark
from gateway.store import (
    CATALOGUE_KEY,
    SEQ_GUARD,
    BatchIn,
    Durability,
    Identity,
    Lane,
    Store,
    StoreCounts,
    catalogue_blob,
    classify,
    move_aside,
    open_store,
    parse_catalogue,
    read_identity,
)
from gateway.store_worker import StoreWorker, wait

__all__ = ["Held", "Outbox", "Outgoing", "StoreState"]

# every line carries the journal field EDGEGW_COMPONENT=store (gateway/journal.py)
log = logging.LoggerAdapter(logging.getLogger("edgegw.store"), {"component": "store"})

T = TypeVar("T")
Emit = Callable[..., None]
Loaded = Callable[[Mapping[str, bytes]], None]

_MAX_JOB_RECORDS = 512           # records committed per transaction
_PRESENCE_EVERY = 5.0            # seconds between checks that the store file is still there
_RETRY_CAP = 10.0                # seconds between attempts at most while the store fails
_DROP_REPORT_EVERY = 60.0        # while a fault lasts, losses are announced this often
_LEGACY_RULES = "rules.json"     # remote lighting rules before they moved into the store
LIGHTING_RULES_KEY = "lighting.rules"


class StoreState(StrEnum):
    OPENING = "opening"
    OK = "ok"
    FAULT = "fault"
    CLOSED = "closed"


@dataclass(slots=True, eq=False)
class Held:
    """A record in memory, not (yet) in the store."""

    lane: Lane
    key: int                    # telemetry: its seq; events: a number local to this process
    payload: bytes
    n_points: int
    handed: bool = False        # inside a store job right now (not droppable)
    sending: bool = False       # on its way to the broker from memory
    sent: bool = False          # the broker has it
    store_id: int | None = None  # its row once committed


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record for the publisher: from the store (``held`` None) or from memory."""

    lane: Lane
    key: int
    payload: bytes
    n_points: int
    held: Held | None = None

    @property
    def seq(self) -> int | None:
        return self.key if self.lane is Lane.TELEMETRY else None


@dataclass
class Losses:
    """What a fault episode (or the whole run) dropped."""

    points: int = 0
    batches: int = 0
    events: int = 0
    seq_ranges: list[list[int]] = field(default_factory=list)

    def add_batch(self, seq: int, points: int) -> None:
        self.points += points
        self.batches += 1
        if self.seq_ranges and self.seq_ranges[-1][1] == seq - 1:
            self.seq_ranges[-1][1] = seq
        else:
            self.seq_ranges.append([seq, seq])
            if len(self.seq_ranges) > 20:       # keep events small: merge the oldest
                first = self.seq_ranges.pop(0)
                self.seq_ranges[0][0] = first[0]

    def as_dict(self) -> dict[str, Any]:
        return {"points": self.points, "batches": self.batches, "events": self.events,
                "seqs": [list(r) for r in self.seq_ranges]}

    def __bool__(self) -> bool:
        return bool(self.points or self.batches or self.events)


@dataclass(frozen=True, slots=True)
class _OpenResult:
    store: bool
    kv: dict[str, bytes]
    next_seq: int
    counts: StoreCounts | None
    created: bool = False
    unclean: bool = False
    moved_aside: str | None = None
    aside_reason: str | None = None
    identity: Identity | None = None          # read from a store that cannot be written
    error: StoreError | None = None


class Outbox:
    """See the module docstring. ``points`` are the configured points (the catalogue holds
    them from the start); ``emit`` is :meth:`gateway.events.Events.emit` (set later if need
    be)."""

    def __init__(self, cfg: StoreCfg, *, points: Iterable[PointDef] = (),
                 emit: Emit | None = None, worker: StoreWorker | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 seq_mark: SeqMark | None = None, ack_delay: float | None = None) -> None:
        self.cfg = cfg
        # how long a deletion may wait for the next commit (see StoreCfg.ack_delay)
        self.ack_delay = (ack_delay if ack_delay is not None
                          else cfg.ack_delay if cfg.ack_delay is not None else 0.0)
        # the last seq handed out from memory by an earlier run of the agent (gateway/seqmark.py)
        self._seq_mark = seq_mark
        self._marked = seq_mark.read() if seq_mark is not None else 0
        self.path = Path(cfg.path)
        self.emit: Emit = emit or (lambda *a, **k: None)
        self._worker = worker or StoreWorker()
        self._wall = wall_clock
        self._mono = monotonic
        self._points = tuple(points)
        self.state = StoreState.OPENING
        self.fault: StoreFault | None = None
        self.error: str | None = None
        self.fault_since: float | None = None        # wall time
        self._fault_announced = False
        self.counts = StoreCounts(0, 0, 0, 0, 0)     # the store's backlog, as last seen
        self.store_open = False
        self._events: deque[Held] = deque()
        self._batches: deque[Held] = deque()
        self._held_points = 0
        self._event_no = 0
        self._kv: dict[str, bytes] = {}
        self._kv_dirty: dict[str, bytes | None] = {}
        self._acks: dict[Lane, set[int]] = {Lane.EVENTS: set(), Lane.TELEMETRY: set()}
        # what each acknowledged, not yet deleted, row holds (points, bytes): not backlog
        self._acked: dict[tuple[Lane, int], tuple[int, int]] = {}
        self._acks_since: float | None = None    # the oldest deletion waiting for a commit
        self.commits = 0                          # store transactions committed (one fsync each)
        self.catalogue: Catalogue | None = None
        self._next_seq = 1
        self.ready = asyncio.Event()          # identity known: batches can be numbered
        self.loaded = asyncio.Event()         # saved state read from the store
        self.settled = asyncio.Event()        # the first attempt to open ended, either way
        self._loaded_cbs: list[Loaded] = []
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()        # something new to send
        self.episode = Losses()               # dropped during the current fault
        self.dropped = Losses()               # dropped since start
        self._episode_reported = Losses()
        self._last_drop_report = 0.0
        self._full = [0, 0]                   # points, events evicted by max_mb, unreported
        self._full_reported_at: float | None = None
        self._kept_in_fault = 0               # points held in memory during this fault
        self._sent_from_memory = 0            # points the broker took from memory
        self._progress: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ inputs (loop, never wait)
    def put_event(self, payload: bytes) -> None:
        self._event_no += 1
        self._events.append(Held(Lane.EVENTS, self._event_no, payload, 0))
        while len(self._events) > self.cfg.buffer_events:
            if not self._drop_oldest(self._events):
                break
        self._poke()

    def put_batch(self, seq: int, payload: bytes, n_points: int) -> None:
        self._batches.append(Held(Lane.TELEMETRY, seq, payload, n_points))
        self._held_points += n_points
        if self.state is StoreState.FAULT:
            self._kept_in_fault += n_points
        while self._held_points > self.cfg.buffer_points:
            if not self._drop_oldest(self._batches):
                break
        self._poke()

    def count_dropped_points(self, points: int) -> None:
        """Samples dropped before they became a batch (no seq was given to them)."""
        self.episode.points += points
        self.dropped.points += points

    def _drop_oldest(self, lane: deque[Held]) -> bool:
        for i, h in enumerate(lane):
            if h.handed or h.sending:
                continue
            del lane[i]
            if h.lane is Lane.TELEMETRY:
                self._held_points -= h.n_points
                self.episode.add_batch(h.key, h.n_points)
                self.dropped.add_batch(h.key, h.n_points)
            else:
                self.episode.events += 1
                self.dropped.events += 1
            return True
        return False

    def _poke(self) -> None:
        self._wake.set()
        if self.state is not StoreState.OK:
            self.changed.set()

    # ------------------------------------------------------------------ identity
    def take_seq(self) -> int:
        """The seq of the next batch (only once :attr:`ready`)."""
        seq = self._next_seq
        self._next_seq += 1
        if self._seq_mark is not None and self.state is not StoreState.OK:
            self._seq_mark.write(seq)          # the store cannot record it: keep it in RAM
        return seq

    def set_catalogue(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.kv_set(CATALOGUE_KEY, catalogue_blob(catalogue))

    def _adopt(self, catalogue: Catalogue | None, next_seq: int) -> None:
        cat = catalogue if catalogue is not None else Catalogue.new()
        cat = cat.with_points(self._points)
        if self._marked >= max(self._next_seq, next_seq):
            log.warning("store %s: an earlier run sent batches up to seq %d from memory (the "
                        "store could not record them); numbering on from %d", self.path,
                        self._marked, self._marked + 1)
        self._next_seq = max(self._next_seq, next_seq, self._marked + 1)
        self.set_catalogue(cat)
        self.ready.set()

    # ------------------------------------------------------------------ saved state
    def kv_get(self, key: str) -> bytes | None:
        return self._kv.get(key)

    def kv_set(self, key: str, value: bytes) -> None:
        """Keep a small value (committed in the background; its loss is reported)."""
        self._kv[key] = bytes(value)
        self._kv_dirty[key] = self._kv[key]
        self._wake.set()

    def kv_delete(self, key: str) -> None:
        self._kv.pop(key, None)
        self._kv_dirty[key] = None
        self._wake.set()

    def on_loaded(self, cb: Loaded) -> None:
        """``cb(saved)`` once the saved state is read (at once if it already was)."""
        if self.loaded.is_set():
            cb(dict(self._kv))
        else:
            self._loaded_cbs.append(cb)

    # ------------------------------------------------------------------ for the publisher
    @property
    def from_memory(self) -> bool:
        """Whether the publisher sends held records (the store cannot take them now)."""
        return self.state is not StoreState.OK

    def held(self, lane: Lane) -> list[Outgoing]:
        """Memory records of ``lane`` not yet on their way, oldest first."""
        src = self._events if lane is Lane.EVENTS else self._batches
        return [Outgoing(h.lane, h.key, h.payload, h.n_points, h) for h in src
                if not (h.sending or h.sent) and h.store_id is None]

    async def stored(self, lane: Lane, limit: int, *, after: int | None) -> list[Outgoing]:
        """Up to ``limit`` committed records of ``lane`` after ``after`` ([] when the store
        cannot be read now)."""
        if self.state is not StoreState.OK or not self.store_open:
            return []
        what = f"read {lane}"
        try:
            # bounded: a reader must never wait out a stall (it sends from memory instead)
            recs = await wait(self._worker.submit_store(
                what, lambda s: s.peek(lane, limit, after=after)), what=what,
                within=self.cfg.stall_timeout)
        except StoreError as err:
            self._set_fault(err)
            return []
        skip = self._acks[lane]
        return [Outgoing(r.lane, r.row_id, r.payload, r.n_points) for r in recs
                if r.row_id not in skip]

    def sending(self, out: Outgoing) -> None:
        if out.held is not None:
            out.held.sending = True

    def acked(self, out: Outgoing) -> None:
        """The broker has ``out``: delete it (from memory now, from the store with the next
        commit)."""
        h = out.held
        if h is None:
            self._ack(out.lane, out.key, out.n_points, len(out.payload))
            return
        h.sending, h.sent = False, True
        self._sent_from_memory += h.n_points
        if h.store_id is not None:              # committed meanwhile
            self._ack(h.lane, h.store_id, h.n_points, len(h.payload))
        if not h.handed:
            self._forget(h)

    def _ack(self, lane: Lane, row: int, n_points: int, nbytes: int) -> None:
        """A committed row the broker has: delete it with the next commit, or after
        ``store.ack_delay`` if no commit comes sooner."""
        self._acks[lane].add(row)
        self._acked[(lane, row)] = (n_points, nbytes)
        if self._acks_since is None:
            self._acks_since = self._mono()
        self._wake.set()

    def _forget_acks(self) -> None:
        for ids in self._acks.values():
            ids.clear()
        self._acked.clear()
        self._acks_since = None

    @property
    def backlog(self) -> StoreCounts:
        """The store's backlog: :attr:`counts` without the rows acknowledged and waiting to
        be deleted (they are delivered)."""
        c = self.counts
        if not self._acked:
            return c
        tb = tp = tbytes = ev = ebytes = 0
        for (lane, _row), (n, nbytes) in self._acked.items():
            if lane is Lane.TELEMETRY:
                tb, tp, tbytes = tb + 1, tp + n, tbytes + nbytes
            else:
                ev, ebytes = ev + 1, ebytes + nbytes
        return StoreCounts(max(0, c.batches - tb), max(0, c.points - tp),
                           max(0, c.telemetry_bytes - tbytes), max(0, c.events - ev),
                           max(0, c.event_bytes - ebytes))

    def released(self, out: Outgoing) -> None:
        """``out`` did not reach the broker: send it again later (from the store if it was
        committed meanwhile)."""
        h = out.held
        if h is not None:
            h.sending = False
            if h.store_id is not None and not h.handed:
                self._forget(h)

    def _forget(self, h: Held) -> None:
        src = self._events if h.lane is Lane.EVENTS else self._batches
        with contextlib.suppress(ValueError):
            src.remove(h)
            if h.lane is Lane.TELEMETRY:
                self._held_points -= h.n_points

    @property
    def held_counts(self) -> dict[str, int]:
        return {"batches": len(self._batches), "points": self._held_points,
                "events": len(self._events),
                "bytes": sum(len(h.payload) for h in (*self._events, *self._batches))}

    # ------------------------------------------------------------------ the task
    def set_progress(self, beat: Callable[[], None]) -> None:
        self._progress = beat

    async def serve(self) -> None:
        """Open the store, then commit what comes, until cancelled; retried with backoff
        while the store fails."""
        self._worker.start()
        backoff = Backoff(first=0.5, cap=_RETRY_CAP)
        next_presence = self._mono() + _PRESENCE_EVERY
        while True:
            self._progress()
            if not self.store_open:
                if not await self._open():
                    await self._pause(backoff.next())
                    continue
                backoff.reset()
            if self._has_work():
                if not await self._persist():
                    await self._pause(backoff.next())
                    continue
                backoff.reset()
                continue
            self._report_drops()
            if self._mono() >= next_presence:
                next_presence = self._mono() + _PRESENCE_EVERY
                await self._check_presence()
                continue
            self._wake.clear()
            until = next_presence
            if self._acks_since is not None:        # deletions waiting: not beyond ack_delay
                until = min(until, self._acks_since + self.ack_delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, until - self._mono())):
                    await self._wake.wait()

    async def _pause(self, delay: float) -> None:
        """Wait before the next attempt (new records do not cut it short)."""
        self._report_drops()
        await asyncio.sleep(delay)

    @staticmethod
    def _unsaved(h: Held) -> bool:
        return not h.handed and not h.sent and h.store_id is None

    def _has_work(self, *, force: bool = False) -> bool:
        """Something to commit: records, state, or deletions that waited ``ack_delay`` (any
        deletions with ``force``; otherwise they ride with the next commit)."""
        if (any(map(self._unsaved, self._events)) or any(map(self._unsaved, self._batches))
                or self._kv_dirty):
            return True
        if self._acks_since is None:
            return False
        return force or self._mono() - self._acks_since >= self.ack_delay

    async def _outcome(self, fut: concurrent.futures.Future[T], what: str) -> T:
        """A job's result; after ``stall_timeout`` the store is declared stalled, and the job
        is still awaited to learn how it really ended."""
        try:
            return await wait(fut, what=what, within=self.cfg.stall_timeout)
        except StoreError as err:
            if err.fault is not StoreFault.STALLED:
                raise
            self._set_fault(err)
        afut = asyncio.wrap_future(fut)
        while True:
            # stalled, not wedged: this task is alive and keeps reporting what it drops
            done, _ = await asyncio.wait({afut}, timeout=_PRESENCE_EVERY)
            if done:
                return afut.result()
            self._progress()
            self._report_drops()

    async def _call(self, what: str, fn: Callable[[Store], T]) -> T:
        return await self._outcome(self._worker.submit_store(what, fn), what)

    # ------------------------------------------------------------------ opening
    async def _open(self) -> bool:
        expected = self.catalogue.epoch if self.ready.is_set() and self.catalogue else None
        try:
            res = await self._outcome(self._worker.submit("open", lambda: self._open_job(
                expected)), "open")
        except StoreError as err:
            self._set_fault(err)
            self.settled.set()
            return False
        self.settled.set()
        if not res.store:
            assert res.error is not None
            if not self.ready.is_set():
                if res.identity is not None:
                    # a store we can read but not write: carry on its numbering, with a margin
                    # for what its WAL may hold, keep it for when it can be written, and take
                    # the state it saved (overrides, rules)
                    self._adopt(res.identity.catalogue, res.identity.next_seq + SEQ_GUARD)
                    self._load_saved(res.identity.kv)
                    log.warning("store %s: cannot be written; kept as it is (%d points of "
                                "backlog), running on memory", self.path, res.identity.points)
                else:
                    self._adopt(None, 1)
            self._set_fault(res.error)
            return False
        self.store_open = True
        self.counts = res.counts or self.counts
        if res.moved_aside:
            log.error("store %s: %s; moved aside to %s, a new store was created", self.path,
                      res.aside_reason, res.moved_aside)
            self.emit(EventType.STORE_REPLACED, None, {
                "path": str(self.path), "moved_to": res.moved_aside,
                "reason": res.aside_reason})
        elif res.created:
            self.emit(EventType.STORE_CREATED, None, {"path": str(self.path)})
        if self.loaded.is_set():                  # a new or reopened store: write back
            for key, value in self._kv.items():
                if res.kv.get(key) != value:
                    self._kv_dirty[key] = value
        if not self.ready.is_set():
            self._adopt(parse_catalogue(res.kv.get(CATALOGUE_KEY), self.path), res.next_seq)
        else:
            self._next_seq = max(self._next_seq, res.next_seq)
            if self.catalogue is not None and CATALOGUE_KEY not in self._kv_dirty:
                self.set_catalogue(self.catalogue)
        self._load_saved(res.kv)
        if self.state is StoreState.FAULT:
            self._recovered()
        elif self.state is StoreState.OPENING:
            self.state = StoreState.OK
        self.changed.set()
        return True

    def _load_saved(self, kv: Mapping[str, bytes]) -> None:
        """The first saved state read: into the cache (what changed since start wins), and
        to whoever asked for it."""
        if self.loaded.is_set():
            return
        for key, value in kv.items():
            if key not in self._kv_dirty:
                self._kv[key] = value
        self.loaded.set()
        saved = dict(self._kv)
        for cb in self._loaded_cbs:
            try:
                cb(saved)
            except Exception:
                log.exception("restoring saved state failed")
        self._loaded_cbs.clear()

    def _open_job(self, expected_epoch: int | None) -> _OpenResult:
        """In the store thread."""
        cfg = self.cfg
        try:
            opened = open_store(self.path, max_mb=cfg.max_mb,
                                durability=Durability(cfg.synchronous))
        except StoreError as err:
            identity = None
            if self.path.exists():
                with contextlib.suppress(StoreError):
                    identity = read_identity(self.path)
            return _OpenResult(store=False, kv={}, next_seq=1, counts=None, identity=identity,
                               error=err)
        store, aside, reason = opened.store, opened.moved_aside, opened.reason
        kv = store.kv_items()
        cat = parse_catalogue(kv.get(CATALOGUE_KEY), self.path)
        if expected_epoch is not None and cat is not None and cat.epoch != expected_epoch:
            # running already, numbered by another identity (the store could not be read at
            # start): this store's backlog cannot share a catalogue with ours; keep it aside
            points = store.counts().points
            store.abandon()
            aside = move_aside(self.path, "superseded")
            reason = (f"it could not be read when the agent started, which began a new "
                      f"numbering; its {points} points of backlog are kept there")
            store = Store(self.path, max_mb=cfg.max_mb, durability=Durability(cfg.synchronous))
            kv = {}
        legacy = self.path.parent / _LEGACY_RULES
        if LIGHTING_RULES_KEY not in kv and legacy.is_file():
            with contextlib.suppress(OSError):
                kv[LIGHTING_RULES_KEY] = legacy.read_bytes()
        self._worker.store = store
        return _OpenResult(store=True, kv=kv, next_seq=store.next_seq(), counts=store.counts(),
                           created=store.created, unclean=store.unclean,
                           moved_aside=str(aside) if aside else None, aside_reason=reason)

    # ------------------------------------------------------------------ committing
    async def _persist(self) -> bool:
        events = [h for h in self._events if self._unsaved(h)][:_MAX_JOB_RECORDS]
        batches = [h for h in self._batches if self._unsaved(h)][:_MAX_JOB_RECORDS]
        kv = list(self._kv_dirty.items())
        acks = {lane: sorted(ids) for lane, ids in self._acks.items() if ids}
        for h in (*events, *batches):
            h.handed = True
        try:
            res = await self._call(
                "commit", lambda s: s.append([h.payload for h in events],
                                             [BatchIn(h.key, h.payload, h.n_points)
                                              for h in batches], kv=kv, acks=acks))
        except StoreError as err:
            for h in (*events, *batches):
                h.handed = False
            self._set_fault(err)
            if err.fault is StoreFault.CORRUPT:
                await self._replace_store(str(err))
            elif err.fault is StoreFault.UNAVAILABLE or err.fault is StoreFault.MISSING:
                await self._close_store()
            return False
        for h, row in zip(events, res.event_ids, strict=True):
            h.handed, h.store_id = False, row
        for h in batches:
            h.handed, h.store_id = False, h.key
        for lane, ids in acks.items():
            self._acks[lane].difference_update(ids)
            for row in ids:
                self._acked.pop((lane, row), None)
        if not any(self._acks.values()):
            self._acks_since = None
        for h in (*events, *batches):
            if h.sent:                       # the broker took it from memory meanwhile
                self._ack(h.lane, h.store_id or 0, h.n_points, len(h.payload))
            if not h.sending:
                self._forget(h)
        for key, value in kv:
            if self._kv_dirty.get(key, ...) is value:
                del self._kv_dirty[key]
        self.commits += 1
        self.counts = res.counts
        self._full[0] += res.dropped_points
        self._full[1] += res.dropped_events
        self._report_full()
        if self.state is not StoreState.OK:
            self._recovered()
        self.changed.set()
        return True

    async def _check_presence(self) -> None:
        try:
            await self._call("check", lambda s: s.check_present())
        except StoreError as err:
            if err.fault is StoreFault.MISSING:
                lost = self.backlog
                self._forget_acks()                  # their rows went with the file
                self.episode.points += lost.points
                self.dropped.points += lost.points
                self.episode.events += lost.events
                self.dropped.events += lost.events
                self.counts = StoreCounts(0, 0, 0, 0, 0)
                self._set_fault(err, detail={"lost_points": lost.points,
                                             "lost_events": lost.events})
                await self._close_store()
            else:
                self._set_fault(err)

    async def _replace_store(self, reason: str) -> None:
        """A store found damaged while running: moved aside (evidence kept), a fresh one
        takes its place at once; its backlog is counted as lost (it stays in the file)."""
        lost = self.backlog
        self._forget_acks()                          # rows of the old file: never delete by id

        def job() -> str:
            store, self._worker.store = self._worker.store, None
            if store is not None:
                store.abandon()
            aside = move_aside(self.path, "corrupt")
            self._worker.store = Store(self.path, max_mb=self.cfg.max_mb,
                                       durability=Durability(self.cfg.synchronous))
            return str(aside)

        try:
            aside = await self._outcome(self._worker.submit("replace", job), "replace")
        except (StoreError, OSError) as err:
            log.error("store %s: damaged and cannot be replaced: %s", self.path, err)
            await self._close_store()
            return
        self.episode.points += lost.points
        self.dropped.points += lost.points
        self.episode.events += lost.events
        self.dropped.events += lost.events
        self.counts = StoreCounts(0, 0, 0, 0, 0)
        for key, value in self._kv.items():    # the new store gets what we hold
            self._kv_dirty.setdefault(key, value)
        log.error("store %s: %s; moved aside to %s, a new store took its place", self.path,
                  reason, aside)
        self.emit(EventType.STORE_REPLACED, None, {
            "path": str(self.path), "moved_to": aside, "reason": reason[:300],
            "lost_points": lost.points, "lost_events": lost.events})

    async def _close_store(self) -> None:
        def job() -> None:
            store, self._worker.store = self._worker.store, None
            if store is not None:
                store.abandon()
        self.store_open = False
        with contextlib.suppress(StoreError):
            await self._outcome(self._worker.submit("abandon", job), "abandon")

    # ------------------------------------------------------------------ fault reporting
    def _set_fault(self, err: StoreError, *, detail: Mapping[str, Any] | None = None) -> None:
        fault = err.fault if isinstance(err, StoreError) else classify(err)
        first = self.state is not StoreState.FAULT
        if not first and fault == self.fault:
            self.error = str(err)
            return
        self.state = StoreState.FAULT
        self.fault, self.error = fault, str(err)
        if first:
            self.fault_since = self._wall()
            self.episode = Losses()
            self._episode_reported = Losses()
            self._kept_in_fault = self._held_points
            self._sent_from_memory = 0
        log.error("%s (%s); keeping up to %d points and %d events in memory", err,
                  fault.value, self.cfg.buffer_points, self.cfg.buffer_events)
        self.emit(EventType.STORE_FAULT, None, {
            "fault": fault.value, "error": str(err)[:500], "path": str(self.path),
            "buffer_points": self.cfg.buffer_points, "buffer_events": self.cfg.buffer_events,
            **(detail or {})})
        self.changed.set()

    def _recovered(self) -> None:
        duration = self._wall() - (self.fault_since or self._wall())
        fault = self.fault
        self.state = StoreState.OK
        log.warning("store %s: working again after %.0f s (%s); dropped %d points, %d events",
                    self.path, duration, fault, self.episode.points, self.episode.events)
        self.emit(EventType.STORE_RECOVERED, None, {
            "fault": fault.value if fault else None, "duration_s": round(duration, 1),
            "kept_points": self._kept_in_fault, "sent_from_memory_points":
                self._sent_from_memory, "dropped": self.episode.as_dict()})
        self.fault = self.error = self.fault_since = None
        self.episode = Losses()
        self._episode_reported = Losses()

    def _report_full(self) -> None:
        """What the byte budget evicted, announced at most once a period (the event itself
        takes room in a full store: one per commit would evict the next one's)."""
        points, events = self._full
        if not (points or events):
            return
        now = self._mono()
        if self._full_reported_at is not None and (
                now - self._full_reported_at < _DROP_REPORT_EVERY):
            return
        self._full_reported_at = now
        self._full = [0, 0]
        log.warning("store full (%s MB): dropped the %d oldest points and %d events",
                    self.cfg.max_mb, points, events)
        self.emit(EventType.STORE_DROPPED, None, {
            "points": points, "events": events, "max_mb": self.cfg.max_mb,
            "reason": "store_full"})

    def _report_drops(self) -> None:
        """While a fault lasts, announce new losses at most once a period."""
        self._report_full()
        if self.state is not StoreState.FAULT:
            return
        ep, rep = self.episode, self._episode_reported
        if (ep.points, ep.events) == (rep.points, rep.events):
            return
        now = self._mono()
        if now - self._last_drop_report < _DROP_REPORT_EVERY and rep:
            return
        self._last_drop_report = now
        new_ranges = [r for r in ep.seq_ranges if r not in rep.seq_ranges]
        self.emit(EventType.STORE_DROPPED, None, {
            "points": ep.points - rep.points, "events": ep.events - rep.events,
            "batches": ep.batches - rep.batches, "seqs": new_ranges,
            "reason": "memory_buffer_full", "fault": self.fault.value if self.fault else None})
        self._episode_reported = Losses(ep.points, ep.batches, ep.events,
                                        [list(r) for r in ep.seq_ranges])

    # ------------------------------------------------------------------ status
    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "fault": self.fault.value if self.fault else None,
            "error": self.error,
            "since": self.fault_since,
            "path": str(self.path),
            "stalled_s": round(self._worker.stalled_for(), 1),
            "memory": self.held_counts,
            "dropped": self.dropped.as_dict(),
        }

    # ------------------------------------------------------------------ shutdown
    async def close(self, *, within: float = 5.0) -> None:
        """Commit what is held (if the store takes it within ``within`` s), then close the
        store cleanly in its thread. Whatever cannot be committed is counted in the log."""
        if self.state is StoreState.CLOSED:
            return
        if self.store_open and self._has_work(force=True):
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(within):
                    await self._persist()
        left = [h for h in (*self._events, *self._batches) if not h.sent]
        if left:
            log.error("store %s: %d events and %d points held in memory are lost with this "
                      "shutdown (the store could not take them)", self.path,
                      sum(1 for h in left if h.lane is Lane.EVENTS),
                      sum(h.n_points for h in left))
        self.state = StoreState.CLOSED
        ended = await asyncio.to_thread(self._worker.stop, within)
        if not ended:
            log.error("store %s: the store thread did not finish within %.0f s (a stalled "
                      "filesystem); leaving it", self.path, within)
