"""The publisher: the outbox to the broker, and the births.

On every (re)connection the births (in our format the retained state message, with the point
catalogue the telemetry after it needs; see :mod:`gateway.northbound` for the others) go out
first. Then the events lane, then the telemetry backlog in
``seq`` order, with a bounded number of messages in flight and a paced replay rate, so a long
backlog neither floods the broker nor starves the commands. A record leaves the outbox only
when the broker acknowledged it (PUBACK).

Records come from the store; while the store fails, from the outbox's memory (after what the
store could still give). So during a store fault live batches may overtake a stored backlog,
which follows once the store works again; the platform orders by ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.errors import LinkError
from gateway.link import MqttLink
from gateway.northbound import Context, Northbound, make_northbound
from gateway.outbox import Outbox, Outgoing
from gateway.store import Lane

__all__ = ["Publisher", "PublisherStats"]

log = logging.getLogger("edgegw.uplink")

_READ_AHEAD = 64
_LOOK_AGAIN = 5.0          # seconds: the publisher looks at the outbox at least this often


@dataclass(slots=True)
class PublisherStats:
    published: int = 0
    points_published: int = 0
    bytes_published: int = 0
    from_memory: int = 0


class Publisher:
    """Sends the outbox over the link (see the module docstring)."""

    def __init__(self, cfg: Config, outbox: Outbox, link: MqttLink, *,
                 birth_detail: Callable[[], dict[str, Any]] | None = None,
                 fmt: Northbound | None = None) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.link = link
        self.format = fmt if fmt is not None else make_northbound(
            Context(cfg, outbox, birth_detail=birth_detail or (lambda: {})))
        self._session_ready = asyncio.Event()
        self.idle = asyncio.Event()      # set whenever the outbox is drained while connected
        self.stats = PublisherStats()
        self._progress: Callable[[], None] = lambda: None

    def set_progress(self, beat: Callable[[], None]) -> None:
        self._progress = beat

    # ------------------------------------------------------------------ birth
    async def publish_birth(self) -> None:
        """The births (our format: the retained state message with the catalogue)."""
        await self.format.on_connect(self.link)

    async def on_connect(self, link: MqttLink) -> None:
        """Called by the link on each (re)connection, before anything else is sent."""
        self._session_ready.clear()
        await self.publish_birth()
        self._session_ready.set()
        self.outbox.changed.set()

    # ------------------------------------------------------------------ the task
    async def serve(self) -> None:
        while True:
            self._progress()
            if not self._session_ready.is_set() or not self.link.connected.is_set():
                self._session_ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_LOOK_AGAIN):
                        await self._session_ready.wait()
                continue
            if not self.format.may_send():
                # held (Sparkplug: the primary host is away); the format wakes us
                self.outbox.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_LOOK_AGAIN):
                        await self.outbox.changed.wait()
                continue
            self.outbox.changed.clear()
            try:
                await self._drain()
            except LinkError as err:
                log.debug("publisher: %s", err)
                self._session_ready.clear()
                continue
            self.idle.set()
            # look again now and then: a missed wake-up costs at most this long
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LOOK_AGAIN):
                    await self.outbox.changed.wait()

    async def drained(self) -> None:
        """Until nothing is left to send (while connected)."""
        while self._outstanding():
            self.idle.clear()
            self.outbox.changed.set()
            await self.idle.wait()

    def _outstanding(self) -> bool:
        held = self.outbox.held_counts
        backlog = self.outbox.backlog
        return bool(backlog.batches or backlog.events
                    or held["batches"] or held["events"])

    async def _drain(self) -> None:
        """Send everything there is: events first, telemetry in seq order, a bounded window."""
        window = max(1, self.cfg.mqtt.max_inflight)
        rate = self.cfg.mqtt.replay_rate
        outbox = self.outbox
        inflight: dict[asyncio.Task[None], Outgoing] = {}
        cursor: dict[Lane, int | None] = {Lane.EVENTS: None, Lane.TELEMETRY: None}
        ahead: dict[Lane, deque[Outgoing]] = {Lane.EVENTS: deque(), Lane.TELEMETRY: deque()}
        store_done: dict[Lane, bool] = {Lane.EVENTS: False, Lane.TELEMETRY: False}
        loop = asyncio.get_running_loop()
        budget_start = loop.time()
        points_sent = 0
        failure: BaseException | None = None

        async def next_in(lane: Lane) -> Outgoing | None:
            if not ahead[lane] and not store_done[lane]:
                got = await outbox.stored(lane, _READ_AHEAD, after=cursor[lane])
                ahead[lane].extend(got)
                if len(got) < _READ_AHEAD:
                    store_done[lane] = True
            if ahead[lane]:
                rec = ahead[lane].popleft()
                cursor[lane] = rec.key
                return rec
            if outbox.from_memory:
                held = outbox.held(lane)
                if held:
                    return held[0]
            return None

        async def next_record() -> Outgoing | None:
            # new events jump the queue: look at that lane again whenever something changed
            if outbox.changed.is_set():
                outbox.changed.clear()
                store_done[Lane.EVENTS] = store_done[Lane.TELEMETRY] = False
            return await next_in(Lane.EVENTS) or await next_in(Lane.TELEMETRY)

        try:
            while True:
                self._progress()
                if self.format.needs_rebirth():
                    await self.publish_birth()
                while len(inflight) < window and self.format.may_send():
                    rec = await next_record()
                    if rec is None:
                        break
                    outbox.sending(rec)
                    task = asyncio.create_task(self._send(rec),
                                               name=f"publish-{rec.lane}-{rec.key}")
                    inflight[task] = rec
                    points_sent += rec.n_points
                    # pace the replay: never faster than `replay_rate` points per second
                    ahead_s = points_sent / rate - (loop.time() - budget_start)
                    if ahead_s > 0.05:
                        break
                if not inflight:
                    break
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    rec = inflight.pop(t)
                    exc = t.exception()
                    if exc is not None and not isinstance(exc, LinkError):
                        # a record the format cannot send (a bug): sending it again would
                        # stall the uplink for good, so it is dropped, logged and reported
                        log.error("uplink: %s record %d cannot be sent", rec.lane, rec.key,
                                  exc_info=exc)
                        self.format.dropped(rec, f"{type(exc).__name__}: {exc}")
                        outbox.acked(rec)
                        continue
                    if exc is not None:
                        failure = failure or exc
                        outbox.released(rec)
                        continue
                    self._delivered(rec)
                if failure is not None:
                    break
                ahead_s = points_sent / rate - (loop.time() - budget_start)
                if ahead_s > 0.05:
                    await asyncio.sleep(ahead_s)
        finally:
            for t in inflight:
                t.cancel()
            for t, rec in inflight.items():
                try:
                    await t
                except (asyncio.CancelledError, LinkError):
                    outbox.released(rec)
                else:
                    self._delivered(rec)
        if failure is not None:
            if isinstance(failure, LinkError):
                raise failure
            raise LinkError(f"publish failed: {failure}") from failure

    def _delivered(self, rec: Outgoing) -> None:
        self.outbox.acked(rec)
        self.stats.published += 1
        self.stats.points_published += rec.n_points
        self.stats.bytes_published += len(rec.payload)
        if rec.held is not None:
            self.stats.from_memory += 1

    async def _send(self, rec: Outgoing) -> None:
        await self.format.send(self.link, rec)
