"""The telemetry pipeline and the publisher: samples -> deadband -> batch -> encode -> store ->
MQTT, and events through the same store.

Nothing is offered to the broker before it is committed to the store, and nothing is deleted
from the store before the broker acknowledged it (PUBACK). The publisher sends the events lane
first, then the telemetry backlog strictly in `seq` order, with a bounded number of messages in
flight and a paced replay rate, so a long backlog neither floods the broker nor starves the
command handler. Its pace after a reconnect starts with a random delay (see MqttLink) so that a
district coming back from a power cut does not replay in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.sample import Quality, Sample
from gateway.codec import (
    Catalogue,
    EncodeError,
    Event,
    Severity,
    Topics,
    encode_batch,
    encode_event,
    encode_state,
    point_def_from_spec,
)
from gateway.config import Config
from gateway.errors import LinkError, StoreError
from gateway.link import MqttLink
from gateway.store import Lane, Record, Store

log = logging.getLogger("edgegw.uplink")

SEVERITY = {
    "device_offline": Severity.WARNING,
    "device_online": Severity.INFO,
    "modbus_exception": Severity.WARNING,
    "store_dropped": Severity.WARNING,
    "agent_start": Severity.INFO,
    "agent_stop": Severity.INFO,
    "bus_down": Severity.WARNING,
    "failsafe_entered": Severity.WARNING,
    "failsafe_left": Severity.INFO,
    "override_started": Severity.INFO,
    "override_ended": Severity.INFO,
    "darkness_detected": Severity.INFO,
    "darkness_cleared": Severity.INFO,
    "lamp_failure": Severity.ALARM,
    "lamp_unexpected_on": Severity.WARNING,
    "lamp_recovered": Severity.INFO,
    "command": Severity.INFO,
    "command_rate_limited": Severity.WARNING,
}


@dataclass(slots=True)
class _Last:
    value: Any
    quality: Quality
    reported_at: float


class DeadbandFilter:
    """Pass a sample when it changed by more than its point's deadband (or its quality changed,
    or `max_silence` seconds went by since the point was last reported)."""

    def __init__(self, deadbands: Mapping[tuple[str, str], float | None], *,
                 max_silence: float) -> None:
        self._deadbands = dict(deadbands)
        self._max_silence = max_silence
        self._last: dict[tuple[str, str], _Last] = {}
        self.dropped = 0

    def accept(self, s: Sample, now: float) -> bool:
        key = (s.device, s.point)
        band = self._deadbands.get(key)
        last = self._last.get(key)
        ok = (
            band is None or last is None or last.quality is not s.quality
            or now - last.reported_at >= self._max_silence
            or not _within(s.value, last.value, band)
        )
        if ok:
            self._last[key] = _Last(s.value, s.quality, now)
        else:
            self.dropped += 1
        return ok


def _within(a: Any, b: Any, band: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or (
            not isinstance(b, (int, float))):
        return bool(a == b)
    return abs(a - b) <= band


@dataclass(slots=True)
class UplinkStats:
    samples_in: int = 0
    points_stored: int = 0
    batches_stored: int = 0
    bytes_stored: int = 0
    published: int = 0
    points_published: int = 0
    bytes_published: int = 0
    events: int = 0


class Uplink:
    """Owns the batcher and the publisher tasks; an async context manager."""

    def __init__(self, cfg: Config, store: Store, link: MqttLink, *,
                 birth_detail: Callable[[], dict[str, Any]] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.link = link
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.id)
        self._wall = wall_clock
        self._birth_detail = birth_detail or (lambda: {})
        deadbands = {(d.name, p.name): p.deadband for d in cfg.devices for p in d.points}
        self.filter = DeadbandFilter(deadbands, max_silence=cfg.telemetry.max_silence)
        cat = store.load_catalogue() or Catalogue.new()
        cat = cat.with_points(point_def_from_spec(d.name, p.spec())
                              for d in cfg.devices for p in d.points)
        store.save_catalogue(cat)
        self.catalogue = cat
        self._published_catalogue: int | None = None
        self._session_ready = asyncio.Event()   # the birth of this connection went out
        self._pending: list[Sample] = []
        self._write_lock = threading.Lock()    # one batch writer at a time (seq order)
        self._flush_now = asyncio.Event()
        self._event_queue: deque[bytes] = deque()
        self._event_lock = threading.Lock()
        self._events_queued = asyncio.Event()
        self._wake = asyncio.Event()
        self._events_waiting = True
        self.stats = UplinkStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.idle = asyncio.Event()      # set whenever the store is drained while connected

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Uplink:
        self._tasks = [
            asyncio.create_task(self._batcher(), name="uplink-batcher"),
            asyncio.create_task(self._publisher(), name="uplink-publisher"),
            asyncio.create_task(self._event_writer(), name="uplink-events"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, *, drain_for: float = 0.0) -> None:
        """Store what is still batched; with `drain_for`, try to send the backlog that long."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._commit_events()
        if drain_for > 0 and self.link.connected.is_set():
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_for):
                    await self._until_idle()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._commit_events()        # whatever came in while draining

    async def _until_idle(self) -> None:
        while self.store.counts().batches or self.store.counts().events:
            self.idle.clear()
            await self.idle.wait()

    # ------------------------------------------------------------------ inputs
    def offer(self, samples: Iterable[Sample]) -> None:
        """Samples from the buses (synchronous: called from the bus tasks' callbacks)."""
        now = self._wall()
        for s in samples:
            self.stats.samples_in += 1
            if self.filter.accept(s, now):
                self._pending.append(s)
        if len(self._pending) >= self.cfg.telemetry.max_batch_points:
            self._flush_now.set()

    def emit(self, type_: str, device: str | None = None,
             detail: Mapping[str, Any] | None = None, *,
             severity: Severity | None = None) -> None:
        """An event for the store's priority lane. Committed within milliseconds by the event
        writer (in a worker thread: an fsync on a slow SD card must not hold up commands or
        the lamps); before the uplink runs, and when it closes, committed on the spot."""
        ev = Event(ts=int(self._wall() * 1000), type=type_, device=device,
                   detail=dict(detail or {}), severity=severity or SEVERITY.get(type_))
        try:
            payload = encode_event(ev)
        except EncodeError as err:
            log.error("event %s could not be encoded: %s", type_, err)
            return
        self._event_queue.append(payload)
        self.stats.events += 1
        if self._tasks and not self._closed:
            self._events_queued.set()
        else:
            self._commit_events()

    def _write_events(self) -> int:
        """Commit every queued event, oldest first (any thread; one writer at a time, so an
        event is written once even when shutdown and the writer task overlap)."""
        written = 0
        with self._event_lock:
            while self._event_queue:
                payload = self._event_queue.popleft()
                try:
                    self.store.append_event(payload)
                    written += 1
                except StoreError as err:
                    log.error("event not stored: %s", err)
        return written

    def _commit_events(self) -> None:
        if self._write_events():
            self._events_waiting = True
            self._wake.set()

    async def _event_writer(self) -> None:
        while True:
            await self._events_queued.wait()
            self._events_queued.clear()
            if await asyncio.to_thread(self._write_events):
                self._events_waiting = True
                self._wake.set()

    # ------------------------------------------------------------------ batcher
    def _take_chunks(self) -> list[list[Sample]]:
        cap = self.cfg.telemetry.max_batch_points
        chunks = []
        while self._pending:
            chunk, self._pending = self._pending[:cap], self._pending[cap:]
            chunks.append(chunk)
        return chunks

    def flush(self) -> int:
        """Encode and commit what is pending now, on the calling thread (shutdown)."""
        stored = 0
        for chunk in self._take_chunks():
            points, dropped = self._store_batch(chunk)
            self._after_store(dropped)
            stored += points
        return stored

    async def flush_async(self) -> int:
        """Encode and commit what is pending in a worker thread: the fsync of a slow SD card
        must not hold up the event loop (polls, commands, the lamps)."""
        stored = 0
        for chunk in self._take_chunks():
            points, dropped = await asyncio.to_thread(self._store_batch, chunk)
            self._after_store(dropped)
            stored += points
        return stored

    def _store_batch(self, samples: list[Sample]) -> tuple[int, int]:
        """One batch into the store: (points stored, points the store dropped to make room).
        Thread-safe against itself; touches no asyncio object."""
        with self._write_lock:
            cat = self.catalogue.with_samples(samples)
            if cat is not self.catalogue:
                self.store.save_catalogue(cat)
                self.catalogue = cat
            seq = self.store.next_seq()
            try:
                payload = encode_batch(seq, samples, cat,
                                       compression=self.cfg.telemetry.compression)
            except EncodeError as err:   # a bug or a wild value: keep the agent alive
                log.error("telemetry batch of %d samples dropped: %s", len(samples), err)
                return 0, 0
            try:
                self.store.append_batch(seq, payload, len(samples))
            except StoreError as err:
                log.error("telemetry batch %d not stored: %s", seq, err)
                return 0, 0
            self.stats.points_stored += len(samples)
            self.stats.batches_stored += 1
            self.stats.bytes_stored += len(payload)
            return len(samples), self.store.take_dropped()

    def _after_store(self, dropped: int) -> None:
        if dropped:
            log.warning("store full (%s MB): dropped the %d oldest points",
                        self.cfg.store.max_mb, dropped)
            self.emit("store_dropped", None, {"points": dropped,
                                              "max_mb": self.cfg.store.max_mb})
        self._wake.set()

    async def _batcher(self) -> None:
        interval = self.cfg.telemetry.batch_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - loop.time())):
                    await self._flush_now.wait()
            self._flush_now.clear()
            if loop.time() >= next_at:
                next_at += interval
                if next_at < loop.time():
                    next_at = loop.time() + interval
            if self._pending:
                await self.flush_async()

    # ------------------------------------------------------------------ publisher
    def birth_payload(self) -> bytes:
        detail = {"gateway": self.cfg.gateway.id, "site": self.cfg.gateway.site,
                  "groups": list(self.cfg.gateway.groups), "config_hash": self.cfg.digest(),
                  **self._birth_detail()}
        return encode_state(online=True, detail=detail, catalogue=self.catalogue)

    async def publish_birth(self) -> None:
        """The retained state message, with the catalogue the telemetry after it needs."""
        version = self.catalogue.version
        await self.link.publish(self.topics.state, self.birth_payload(), retain=True)
        self._published_catalogue = version

    async def on_connect(self, link: MqttLink) -> None:
        """Called by the link on each (re)connection, before anything else is sent."""
        self._session_ready.clear()
        self._published_catalogue = None
        await self.publish_birth()
        self._session_ready.set()
        self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._session_ready.wait()
            if not self.link.connected.is_set():
                self._session_ready.clear()
                continue
            try:
                await self._drain()
            except LinkError as err:
                log.debug("publisher: %s", err)
                self._session_ready.clear()
                continue
            self.idle.set()
            self._wake.clear()
            # look again now and then: a store filled by another writer, a missed wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._wake.wait()

    async def _drain(self) -> None:
        """Send everything stored: events first, telemetry in seq order, a bounded window."""
        window = max(1, self.cfg.mqtt.max_inflight)
        rate = self.cfg.mqtt.replay_rate
        inflight: set[asyncio.Task[Record]] = set()
        acked: dict[Lane, list[int]] = {Lane.EVENTS: [], Lane.TELEMETRY: []}
        last_sent: dict[Lane, int | None] = {Lane.EVENTS: None, Lane.TELEMETRY: None}
        loop = asyncio.get_running_loop()
        budget_start = loop.time()
        points_sent = 0
        failure: BaseException | None = None

        def next_record() -> Record | None:
            if self._events_waiting:
                recs = self.store.peek(Lane.EVENTS, 1, after=last_sent[Lane.EVENTS])
                if recs:
                    return recs[0]
                self._events_waiting = False
            recs = self.store.peek(Lane.TELEMETRY, 1, after=last_sent[Lane.TELEMETRY])
            return recs[0] if recs else None

        def flush_acks() -> None:
            for lane, ids in acked.items():
                if ids:
                    self.store.ack_many(lane, ids)
                    ids.clear()

        try:
            self._events_waiting = True
            while True:
                if self._published_catalogue != self.catalogue.version:
                    await self.publish_birth()
                while len(inflight) < window:
                    rec = next_record()
                    if rec is None:
                        break
                    last_sent[rec.lane] = rec.row_id
                    inflight.add(asyncio.create_task(self._send(rec),
                                                     name=f"publish-{rec.lane}-{rec.row_id}"))
                    points_sent += rec.n_points
                    # pace the replay: never faster than `replay_rate` points per second
                    ahead = points_sent / rate - (loop.time() - budget_start)
                    if ahead > 0.05:
                        break
                if not inflight:
                    break
                done, inflight = await asyncio.wait(inflight,
                                                    return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None:
                        failure = failure or t.exception()
                        continue
                    rec = t.result()
                    acked[rec.lane].append(rec.row_id)
                    self.stats.published += 1
                    self.stats.points_published += rec.n_points
                    self.stats.bytes_published += len(rec.payload)
                if failure is not None:
                    break
                if sum(len(v) for v in acked.values()) >= window:
                    flush_acks()
                ahead = points_sent / rate - (loop.time() - budget_start)
                if ahead > 0.05:
                    await asyncio.sleep(ahead)
        finally:
            for t in inflight:
                t.cancel()
            for t in inflight:
                with contextlib.suppress(asyncio.CancelledError, LinkError):
                    rec = await t
                    acked[rec.lane].append(rec.row_id)
            flush_acks()
        if failure is not None:
            if isinstance(failure, LinkError):
                raise failure
            raise LinkError(f"publish failed: {failure}") from failure

    async def _send(self, rec: Record) -> Record:
        topic = self.topics.events if rec.lane is Lane.EVENTS else self.topics.telemetry
        await self.link.publish(topic, rec.payload, qos=1)
        return rec
