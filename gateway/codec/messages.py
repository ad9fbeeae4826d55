"""Events and the state message (birth and will): JSON (docs/protocol.md, sections 4 and 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.codec.catalogue import Catalogue, _is_int
from gateway.codec.errors import DecodeError, EncodeError
from gateway.codec.wire import _dumps, _loads


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm or notice (topic ``{prefix}/{gateway}/events``). ``device`` is None for
    gateway-wide events (agent start, store drops)."""

    ts: int
    type: str
    device: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None


@dataclass(frozen=True, slots=True)
class State:
    """The retained state message: birth (``online`` true, with ``detail``) or the will."""

    online: bool
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue a birth message carries (``detail.catalogue``), if any."""
        cat = self.detail.get("catalogue")
        return None if cat is None else Catalogue.from_wire(cat)


def encode_event(event: Event) -> bytes:
    """``{"ts", "type", "device", "detail", "severity"?}`` as UTF-8 JSON."""
    if not _is_int(event.ts):
        raise EncodeError(f"event {event.type!r}: ts must be integer milliseconds")
    if not event.type:
        raise EncodeError("an event needs a type")
    obj: dict[str, Any] = {"ts": event.ts, "type": event.type, "device": event.device,
                           "detail": dict(event.detail)}
    if event.severity is not None:
        obj["severity"] = Severity(event.severity).value
    return _dumps(obj, f"event {event.type!r}")


def decode_event(payload: bytes) -> Event:
    obj = _loads(payload, "event")
    if not isinstance(obj, dict):
        raise DecodeError("event: expected a JSON object")
    ts, typ, device = obj.get("ts"), obj.get("type"), obj.get("device")
    detail, severity = obj.get("detail", {}), obj.get("severity")
    if not _is_int(ts):
        raise DecodeError(f"event: ts must be integer milliseconds, got {ts!r}")
    if not isinstance(typ, str) or not typ:
        raise DecodeError("event: type must be a non-empty string")
    if device is not None and not isinstance(device, str):
        raise DecodeError("event: device must be a string or null")
    if not isinstance(detail, dict):
        raise DecodeError("event: detail must be an object")
    sev = None
    if severity is not None:
        try:
            sev = Severity(severity)
        except ValueError:
            raise DecodeError(
                f"event: severity {severity!r} is not one of {', '.join(Severity)}") from None
    return Event(ts=ts, type=typ, device=device, detail=detail, severity=sev)


def encode_state(*, online: bool, detail: Mapping[str, Any] | None = None,
                 catalogue: Catalogue | None = None) -> bytes:
    """The state message: ``{"online": true, "detail": {..., "catalogue": {...}}}`` for the
    birth, ``{"online": false}`` for the will."""
    d = dict(detail or {})
    if catalogue is not None:
        d["catalogue"] = catalogue.to_wire()
    obj: dict[str, Any] = {"online": bool(online)}
    if d:
        obj["detail"] = d
    return _dumps(obj, "state")


def decode_state(payload: bytes) -> State:
    obj = _loads(payload, "state")
    if not isinstance(obj, dict):
        raise DecodeError("state: expected a JSON object")
    online, detail = obj.get("online"), obj.get("detail", {})
    if not isinstance(online, bool):
        raise DecodeError(f"state: online must be true or false, got {online!r}")
    if not isinstance(detail, dict):
        raise DecodeError("state: detail must be an object")
    state = State(online=online, detail=detail)
    _ = state.catalogue          # validate it now: a bad catalogue is a bad state message
    return state
