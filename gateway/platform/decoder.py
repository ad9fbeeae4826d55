"""Decode what gateways publish into DESIGN.md 4.4's JSON objects (one per message).

::

    dec = Decoder(prefix="city/v1")
    dec.decode("city/v1/gw1/state", state_payload)
    # {'kind': 'state', 'gateway': 'gw1', 'online': True, 'detail': {...}}
    dec.decode("city/v1/gw1/telemetry", batch_payload)
    # {'kind': 'telemetry', 'gateway': 'gw1', 'seq': 17, 'points': [{'device': 'env-1', ...}]}

Telemetry needs the sending gateway's point catalogue, which arrives in its (retained) state
message: the decoder keeps one catalogue per gateway from the state messages it sees, and
:meth:`Decoder.set_catalogue` seeds one. Anything it cannot decode becomes
``{"kind": "error", "gateway": ..., "topic": ..., "error": "<reason>"}``; it never raises for a
bad message.

Kinds: ``telemetry``, ``event``, ``state``, ``response`` (``cmd/res``), ``command``
(``cmd/req``, and group commands with ``"gateway": null, "group": G``) and ``error``. A point
whose quality is not good carries ``"quality"``; an event's ``"severity"`` is there when sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import deque
from typing import Any

from drivers.sample import Quality
from gateway.codec import (
    Catalogue,
    CatalogueMismatch,
    DecodeError,
    RequestError,
    TopicKind,
    TopicRef,
    decode_batch,
    decode_event,
    decode_request,
    decode_response,
    decode_state,
    parse_topic,
    read_batch_info,
)

__all__ = ["Decoder", "batch_header", "format_line", "subscriptions"]

Message = dict[str, Any]


def subscriptions(prefix: str, *, share: str | None = None,
                  commands: bool = False) -> list[str]:
    """The topic filters a platform subscribes to. With ``share`` they become shared
    subscriptions (``$share/GROUP/...``) so several consumers split the load (DESIGN.md 5);
    ``commands`` adds the command topics (to watch what others send)."""
    p = prefix.rstrip("/")
    filters = [f"{p}/+/telemetry", f"{p}/+/events", f"{p}/+/cmd/res"]
    if commands:
        filters += [f"{p}/+/cmd/req", f"{p}/groups/+/cmd/req"]
    if share:
        filters = [f"$share/{share}/{f}" for f in filters]
    # the state topic is never shared: brokers do not send retained messages to shared
    # subscriptions, and every consumer needs every gateway's catalogue to decode telemetry
    return [*filters, f"{p}/+/state"]


def format_line(message: Message) -> str:
    """One message as one line of compact JSON. What JSON cannot carry is written as JSON can:
    non-finite floats (NaN, infinity) as null, msgpack binary values as ``{"$bytes": base64}``,
    msgpack extension values as ``{"$ext": code, "$bytes": base64}``, a map key that is not
    text as its text form."""
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(_plain(message), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(obj)).decode()}
    code, data = getattr(obj, "code", None), getattr(obj, "data", None)
    if isinstance(obj, tuple) and isinstance(code, int) and isinstance(data, bytes):
        return {"$ext": code, "$bytes": base64.b64encode(data).decode()}   # msgpack ExtType
    if isinstance(obj, dict):
        return {_key(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (bytes, bytearray)):
        return base64.b64encode(bytes(k)).decode()
    return json.dumps(_plain(k), allow_nan=False) if not isinstance(k, float) or (
        math.isfinite(k)) else str(k)


def _error(topic: str | None, gateway: str | None, reason: str) -> Message:
    return {"kind": "error", "gateway": gateway, "topic": topic, "error": reason}


class Decoder:
    """Stateful decoder of gateway messages (one catalogue per gateway).

    ``prefix`` is the topic prefix (it may contain slashes); without it the gateway id is taken
    as the segment before ``telemetry``/``events``/``state``/``cmd``. ``hold`` is how many
    telemetry batches :meth:`feed` keeps back, across all gateways, while their catalogue is
    unknown (for consumers whose queued messages arrive before the retained state).
    """

    def __init__(self, *, prefix: str | None = None, hold: int = 10_000) -> None:
        self.prefix = prefix.rstrip("/") if prefix else None
        self.hold = hold
        self._catalogues: dict[str, Catalogue] = {}
        self._held: deque[tuple[str, str, bytes]] = deque()

    # ------------------------------------------------------------------------- catalogues
    def set_catalogue(self, gateway: str, catalogue: Catalogue) -> None:
        self._catalogues[gateway] = catalogue

    def catalogue(self, gateway: str) -> Catalogue | None:
        return self._catalogues.get(gateway)

    # ------------------------------------------------------------------------------ decoding
    def decode(self, topic: str, payload: bytes) -> Message:
        """Exactly one 4.4 object for one message; telemetry whose catalogue is not known
        gives an error object naming the catalogue it needs."""
        try:
            ref = parse_topic(topic, prefix=self.prefix)
        except DecodeError as err:
            return _error(topic, None, str(err))
        try:
            return self._decode(ref, payload)
        except DecodeError as err:
            return _error(topic, ref.gateway, f"{ref.kind.value}: {err}")

    def feed(self, topic: str, payload: bytes) -> list[Message]:
        """Like :meth:`decode`, but a batch that needs a catalogue not seen yet is held back
        and returned, decoded, right after the state message that brings it. Returns the
        messages ready now (none, one, or a state followed by the batches it unblocked)."""
        try:
            ref = parse_topic(topic, prefix=self.prefix)
        except DecodeError as err:
            return [_error(topic, None, str(err))]
        gw = ref.gateway
        if ref.kind is TopicKind.TELEMETRY and gw is not None:
            if any(h[0] == gw for h in self._held):       # keep a gateway's batches in order
                return self._hold(gw, topic, payload)
            try:
                return [self._telemetry(gw, payload)]
            except CatalogueMismatch:
                return self._hold(gw, topic, payload)
            except DecodeError as err:
                return [_error(topic, gw, f"telemetry: {err}")]
        out = [self.decode(topic, payload)]
        if (ref.kind is TopicKind.STATE and gw is not None and out[0]["kind"] == "state"
                and "catalogue" in out[0]["detail"]):
            out += self._release(gw)
        return out

    def flush(self) -> list[Message]:
        """Give up on every held batch: one error object each, in arrival order."""
        out = [self.decode(topic, payload) for _, topic, payload in self._held]
        self._held.clear()
        return out

    def decode_capture(self, line: str) -> Message:
        """Decode one captured message, a JSON line ``{"topic": ..., "payload_b64": ...}``
        (the input of ``edgegw platform decode``)."""
        try:
            obj = json.loads(line)
        except ValueError as err:
            return _error(None, None, f"input line is not JSON: {err}")
        if not isinstance(obj, dict) or not isinstance(obj.get("topic"), str) \
                or not isinstance(obj.get("payload_b64"), str):
            topic = obj.get("topic") if isinstance(obj, dict) else None
            return _error(topic if isinstance(topic, str) else None, None,
                          'input line must be {"topic": "...", "payload_b64": "..."}')
        try:
            payload = base64.b64decode(obj["payload_b64"], validate=True)
        except (binascii.Error, ValueError) as err:
            return _error(obj["topic"], None, f"payload_b64 is not valid base64: {err}")
        return self.decode(obj["topic"], payload)

    # ----------------------------------------------------------------------------- internals
    def _hold(self, gateway: str, topic: str, payload: bytes) -> list[Message]:
        self._held.append((gateway, topic, payload))
        out: list[Message] = []
        while len(self._held) > self.hold:
            _, t, p = self._held.popleft()
            out.append(self.decode(t, p))
        return out

    def _release(self, gateway: str) -> list[Message]:
        mine = [h for h in self._held if h[0] == gateway]
        if not mine:
            return []
        self._held = deque(h for h in self._held if h[0] != gateway)
        return [self.decode(topic, payload) for _, topic, payload in mine]

    def _decode(self, ref: TopicRef, payload: bytes) -> Message:
        gw = ref.gateway
        if ref.kind is TopicKind.TELEMETRY and gw is not None:
            return self._telemetry(gw, payload)
        if ref.kind is TopicKind.EVENTS:
            ev = decode_event(payload)
            msg: Message = {"kind": "event", "gateway": gw, "ts": ev.ts, "type": ev.type,
                            "device": ev.device, "detail": dict(ev.detail)}
            if ev.severity is not None:
                msg["severity"] = ev.severity.value
            return msg
        if ref.kind is TopicKind.STATE and gw is not None:
            state = decode_state(payload)
            cat = state.catalogue
            if cat is not None:
                self._catalogues[gw] = cat
            return {"kind": "state", "gateway": gw, "online": state.online,
                    "detail": dict(state.detail)}
        if ref.kind is TopicKind.CMD_RES:
            resp, _ = decode_response(payload)
            msg = {"kind": "response", "gateway": gw, "id": resp.id, "ok": resp.ok}
            if resp.ok:
                msg["result"] = dict(resp.result or {})
            elif resp.error is not None:
                msg["error"] = {"code": resp.error.code, "message": resp.error.message}
            return msg
        return self._command(ref, payload)

    def _telemetry(self, gateway: str, payload: bytes) -> Message:
        batch = decode_batch(payload, self._catalogues.get(gateway))
        points = []
        for p in batch.points:
            d: dict[str, Any] = {"device": p.device, "point": p.point, "ts": p.ts,
                                 "value": p.value}
            if p.quality is not Quality.GOOD:
                d["quality"] = p.quality.value
            points.append(d)
        return {"kind": "telemetry", "gateway": gateway, "seq": batch.seq, "points": points}

    def _command(self, ref: TopicRef, payload: bytes) -> Message:
        base: Message = {"kind": "command", "gateway": ref.gateway}
        if ref.group is not None:
            base["group"] = ref.group
        try:
            req, enc = decode_request(payload)
        except RequestError as err:
            raise DecodeError(f"{err} ({err.encoding.value})") from None
        base.update({"id": req.id, "cmd": req.cmd, "args": dict(req.args),
                     "encoding": enc.value})
        return base


def batch_header(payload: bytes) -> Message:
    """A telemetry batch's header as a dict (seq, the catalogue it needs, point count), for
    tools that look at batches without catalogues."""
    info = read_batch_info(payload)
    return {"seq": info.seq, "base_ts": info.base_ts, "points": info.n_points,
            "catalogue_epoch": info.catalogue_epoch,
            "catalogue_version": info.catalogue_version,
            "compression": info.compression.name.lower()}
