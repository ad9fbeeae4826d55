"""The telemetry pipeline: samples -> deadband -> batch -> encode -> the outbox.

Samples arrive from the buses, serial readers, GPIO inputs, lighting and health (``offer``,
synchronous and cheap: it runs inside their callbacks). Every ``telemetry.batch_interval``
seconds, or as soon as ``telemetry.max_batch_points`` are waiting, the batcher numbers a batch
(``seq`` from the outbox), extends the point catalogue with any new point, encodes it and hands
it to the outbox, which makes it durable (or holds it in memory while the store fails) before
the publisher may send it. Nothing here touches the disk or the network.

Until the store has given its identity (catalogue and next ``seq``), samples wait here, at most
``store.buffer_points`` of them (the oldest dropped first, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.sample import Quality, Sample
from gateway.codec import EncodeError, UnknownPoint, encode_batch
from gateway.config import Config
from gateway.outbox import Outbox

__all__ = ["DeadbandFilter", "Pipeline", "PipelineStats"]

log = logging.getLogger("edgegw.uplink")


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
        # no point has a deadband: every sample passes, none is looked at
        self.passes_all = all(band is None for band in self._deadbands.values())
        self._max_silence = max_silence
        self._last: dict[tuple[str, str], _Last] = {}
        self.dropped = 0

    def accept(self, s: Sample, now: float) -> bool:
        key = (s.device, s.point)
        band = self._deadbands.get(key)
        if band is None:                  # no deadband: every sample goes, nothing to remember
            return True
        last = self._last.get(key)
        ok = (
            last is None or last.quality is not s.quality
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
class PipelineStats:
    samples_in: int = 0
    points_batched: int = 0
    batches: int = 0
    bytes_encoded: int = 0
    points_dropped: int = 0        # waited for the store's identity too long, or unencodable


class Pipeline:
    """Deadband and batching into the outbox (see the module docstring)."""

    def __init__(self, cfg: Config, outbox: Outbox, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self._wall = wall_clock
        deadbands = {(d.name, p.name): p.deadband for d in cfg.devices for p in d.points}
        self.filter = DeadbandFilter(deadbands, max_silence=cfg.telemetry.max_silence)
        self._pending: list[Sample] = []
        self._flush_now = asyncio.Event()
        self.stats = PipelineStats()
        self._progress: Callable[[], None] = lambda: None

    def set_progress(self, beat: Callable[[], None]) -> None:
        self._progress = beat

    # ------------------------------------------------------------------ input
    def offer(self, samples: Iterable[Sample]) -> None:
        """Samples from any producer (synchronous, called from their callbacks)."""
        pending = self._pending
        if self.filter.passes_all:
            n = len(pending)
            pending.extend(samples)
            n = len(pending) - n
        else:
            now = self._wall()
            accept = self.filter.accept
            n = 0
            for s in samples:
                n += 1
                if accept(s, now):
                    pending.append(s)
        self.stats.samples_in += n
        if len(pending) >= self.cfg.telemetry.max_batch_points:
            if self.outbox.ready.is_set():
                self._flush_now.set()
            else:
                self._bound_waiting()

    def _bound_waiting(self) -> None:
        excess = len(self._pending) - self.cfg.store.buffer_points
        if excess > 0:
            del self._pending[:excess]
            self.stats.points_dropped += excess
            self.outbox.count_dropped_points(excess)

    # ------------------------------------------------------------------ batching
    def flush(self) -> int:
        """Batch, encode and hand over everything waiting now; returns the points handed."""
        if not self.outbox.ready.is_set() or not self._pending:
            return 0
        cap = self.cfg.telemetry.max_batch_points
        pending, self._pending = self._pending, []
        handed = 0
        for i in range(0, len(pending), cap):
            handed += self._batch(pending[i:i + cap])
        return handed

    def _batch(self, samples: list[Sample]) -> int:
        outbox = self.outbox
        cat = outbox.catalogue
        assert cat is not None
        compression = self.cfg.telemetry.compression
        try:
            seq = outbox.take_seq()
            try:
                payload = encode_batch(seq, samples, cat, compression=compression)
            except UnknownPoint:      # a point seen for the first time: into the catalogue
                cat = cat.with_samples(samples)
                outbox.set_catalogue(cat)
                payload = encode_batch(seq, samples, cat, compression=compression)
        except EncodeError as err:   # a bug or a wild value: keep the agent alive, say so
            log.error("telemetry batch of %d samples dropped: %s", len(samples), err)
            self.stats.points_dropped += len(samples)
            outbox.count_dropped_points(len(samples))
            return 0
        outbox.put_batch(seq, payload, len(samples))
        self.stats.points_batched += len(samples)
        self.stats.batches += 1
        self.stats.bytes_encoded += len(payload)
        return len(samples)

    async def serve(self) -> None:
        """The batcher: a batch every ``batch_interval`` (sooner when one is full)."""
        await self.outbox.ready.wait()
        interval = self.cfg.telemetry.batch_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            self._progress()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - loop.time())):
                    await self._flush_now.wait()
            self._flush_now.clear()
            if loop.time() >= next_at:
                next_at += interval
                if next_at < loop.time():
                    next_at = loop.time() + interval
            self.flush()
