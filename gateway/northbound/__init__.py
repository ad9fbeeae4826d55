"""Northbound formats: how the uplink looks on the wire (``mqtt.format``).

The store, the pipeline and the publisher are the same for every format: batches are encoded
once in our compact format (``gateway.codec``), made durable, and deleted only when the broker
acknowledged what the publisher sent for them. A format decides only what goes on the wire for
a stored record, under which topics, what the births and the will are, and how commands arrive
and are answered:

- ``edgegw`` (the default, :mod:`~gateway.northbound.edgegw`): DESIGN.md 4.3, the compact
  binary batches, the retained state message with the point catalogue;
- ``sparkplug`` (:mod:`~gateway.northbound.sparkplug`): Eclipse Sparkplug B 3.0;
- ``thingsboard`` (:mod:`~gateway.northbound.thingsboard`): the ThingsBoard gateway MQTT API.

Every command, whatever the format, goes through the one :class:`~gateway.commands.Dispatcher`
(rate limits, idempotency, signatures, audit events), translated to our request and back.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.codec import CodecError, DecodedPoint, Event, decode_batch, decode_event
from gateway.config import Config

if TYPE_CHECKING:
    from gateway.commands.dispatcher import Dispatcher
    from gateway.latest import LatestValues
    from gateway.link import MqttLink, Will
    from gateway.outbox import Outbox, Outgoing

__all__ = ["FORMATS", "Context", "Northbound", "make_northbound", "stable_id"]

log = logging.getLogger("edgegw.uplink")

FORMATS = ("edgegw", "sparkplug", "thingsboard")


@dataclass
class Context:
    """What a format may look at: the config, the outbox (its catalogue), the latest values,
    the birth's live detail, the command dispatcher (set once the uplink starts)."""

    cfg: Config
    outbox: Outbox
    latest: LatestValues | None = None
    birth_detail: Callable[[], dict[str, Any]] = field(default=lambda: {})
    dispatcher: Dispatcher | None = None
    wall_clock: Callable[[], float] | None = None
    emit: Callable[[str, str | None, dict[str, Any]], None] | None = None


class Northbound:
    """One wire format (see the module docstring). The publisher calls :meth:`on_connect` on
    each (re)connection before anything else, then :meth:`send` for each record in order,
    and :meth:`needs_rebirth` before each record; the link calls :meth:`on_message`."""

    name = "?"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg

    # the session
    def client_id(self) -> str:
        return self.cfg.mqtt.client_id or self.cfg.gateway.id

    def subscriptions(self) -> list[str]:
        raise NotImplementedError

    def will(self) -> Will | None:
        """The will of the next connection (asked at each attempt)."""
        return None

    def goodbye(self) -> bytes | None:
        """Published on the will's topic at a clean shutdown."""
        return None

    async def on_connect(self, link: MqttLink) -> None:
        """The births: sent first on each (re)connection."""

    def needs_rebirth(self) -> bool:
        """True when the births no longer describe what the next record needs (a point the
        catalogue learnt since, a rebirth asked for)."""
        return False

    def may_send(self) -> bool:
        """False while data must be held (Sparkplug: the primary host is offline)."""
        return True

    async def send(self, link: MqttLink, rec: Outgoing) -> None:
        """Publish one stored record (telemetry batch or event); returns once the broker
        acknowledged all of it (LinkError otherwise)."""
        raise NotImplementedError

    async def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        """A message on a subscribed topic (a command): answered as the format answers."""

    async def farewell(self, link: MqttLink) -> None:
        """Before a clean disconnection (still connected): say goodbye as the format does."""

    # ------------------------------------------------------------------ shared helpers
    def points_of(self, rec: Outgoing) -> tuple[DecodedPoint, ...] | None:
        """A stored telemetry batch, decoded with the outbox's catalogue; None (logged and
        reported) for a record that cannot be decoded: sending it again would not help."""
        try:
            return decode_batch(rec.payload, self.ctx.outbox.catalogue).points
        except CodecError as err:
            self.dropped(rec, f"undecodable: {err}")
            return None

    def event_of(self, rec: Outgoing) -> Event | None:
        try:
            return decode_event(rec.payload)
        except CodecError as err:
            self.dropped(rec, f"undecodable: {err}")
            return None

    def dropped(self, rec: Outgoing, reason: str) -> None:
        """A stored record that cannot be sent in this format: logged and reported (a
        ``store_dropped`` event), never retried for ever."""
        log.error("uplink: stored %s record %d dropped: %s", rec.lane, rec.key, reason)
        if self.ctx.emit is not None:
            self.ctx.emit("store_dropped", None, {
                "reason": f"{rec.lane} record not sendable: {reason[:200]}",
                "points": rec.n_points, "batches": 1 if rec.seq is not None else 0,
                "seq_ranges": [[rec.seq, rec.seq]] if rec.seq is not None else []})

    async def run_command(self, source: str, rid: str, cmd: str,
                          args: Mapping[str, Any] | None, *,
                          request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one command through the dispatcher (rate limits, idempotency, signatures,
        audit) and return our response object: ``{"id", "ok", "result"|"error"}``.
        ``request``: a whole request (a signed envelope) to pass as it is."""
        dispatcher = self.ctx.dispatcher
        if dispatcher is None:
            return {"id": rid, "ok": False,
                    "error": {"code": "unavailable", "message": "commands are not ready"}}
        body = request if request is not None else {"id": rid, "cmd": cmd,
                                                    "args": dict(args or {})}
        try:
            payload = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as err:
            return {"id": rid, "ok": False, "error": {
                "code": "malformed", "message": f"arguments are not plain JSON: {err}"}}
        answer = await dispatcher.handle(source, payload, addressee=self.cfg.gateway.id)
        out: dict[str, Any] = json.loads(answer)
        return out


def stable_id(*parts: object) -> str:
    """A request id from what a platform sends (its own id and the arguments): a retry of the
    same request is recognised, the same id reused for other arguments is not a duplicate."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_northbound(ctx: Context) -> Northbound:
    """The format ``mqtt.format`` names (its module imported only when used)."""
    if ctx.cfg.mqtt.format == "sparkplug":
        from gateway.northbound.sparkplug import Sparkplug
        return Sparkplug(ctx)
    if ctx.cfg.mqtt.format == "thingsboard":
        from gateway.northbound.thingsboard import ThingsBoard
        return ThingsBoard(ctx)
    from gateway.northbound.edgegw import EdgegwFormat
    return EdgegwFormat(ctx)
