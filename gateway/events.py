"""The one event path: every event the gateway sends, its severity, and the one ``emit``.

Producers (buses, serial readers, lighting, alerts, the store, the command audit, the
supervisor) call :meth:`Events.emit` with an :class:`EventType`; alert rules, whose names the
operator chooses, call it with their own name and severity. ``emit`` stamps the time, encodes
the event (docs/protocol.md, section 5), hands it to the outbox's priority lane (stored, or kept
in memory while the store fails) and tells the local listeners (the log). It never raises and
never waits: a producer may be the lighting loop.

docs/protocol.md's event catalogue lists exactly these types (a test checks it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.codec import EncodeError, Event, Severity, encode_event

__all__ = ["EventType", "Events", "Listener"]

log = logging.getLogger("edgegw.events")


class EventType(StrEnum):
    """Every event type the gateway itself sends (alert rules add their own names)."""

    AGENT_START = "agent_start"
    AGENT_STOP = "agent_stop"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ONLINE = "device_online"
    MODBUS_EXCEPTION = "modbus_exception"
    BUS_DOWN = "bus_down"
    STORE_DROPPED = "store_dropped"
    STORE_FAULT = "store_fault"
    STORE_RECOVERED = "store_recovered"
    STORE_REPLACED = "store_replaced"
    STORE_CREATED = "store_created"
    COMPONENT_FAILED = "component_failed"
    LINK_REFUSED = "link_refused"
    FAILSAFE_ENTERED = "failsafe_entered"
    FAILSAFE_LEFT = "failsafe_left"
    OVERRIDE_STARTED = "override_started"
    OVERRIDE_ENDED = "override_ended"
    DARKNESS_DETECTED = "darkness_detected"
    DARKNESS_CLEARED = "darkness_cleared"
    LAMP_FAILURE = "lamp_failure"
    LAMP_UNEXPECTED_ON = "lamp_unexpected_on"
    LAMP_RECOVERED = "lamp_recovered"
    CONFIG_RECEIVED = "config_received"
    CONFIG_APPLIED = "config_applied"
    CONFIG_ROLLED_BACK = "config_rolled_back"
    COMMAND = "command"
    COMMAND_RATE_LIMITED = "command_rate_limited"
    WEB_LOGIN = "web_login"
    WEB_LOGIN_FAILED = "web_login_failed"

    @property
    def severity(self) -> Severity:
        return SEVERITY[self]


SEVERITY: dict[EventType, Severity] = {
    EventType.AGENT_START: Severity.INFO,
    EventType.AGENT_STOP: Severity.INFO,
    EventType.DEVICE_OFFLINE: Severity.WARNING,
    EventType.DEVICE_ONLINE: Severity.INFO,
    EventType.MODBUS_EXCEPTION: Severity.WARNING,
    EventType.BUS_DOWN: Severity.WARNING,
    EventType.STORE_DROPPED: Severity.WARNING,
    EventType.STORE_FAULT: Severity.ALARM,
    EventType.STORE_RECOVERED: Severity.INFO,
    EventType.STORE_REPLACED: Severity.WARNING,
    EventType.STORE_CREATED: Severity.INFO,
    EventType.COMPONENT_FAILED: Severity.ALARM,
    EventType.LINK_REFUSED: Severity.ALARM,
    EventType.FAILSAFE_ENTERED: Severity.WARNING,
    EventType.FAILSAFE_LEFT: Severity.INFO,
    EventType.OVERRIDE_STARTED: Severity.INFO,
    EventType.OVERRIDE_ENDED: Severity.INFO,
    EventType.DARKNESS_DETECTED: Severity.INFO,
    EventType.DARKNESS_CLEARED: Severity.INFO,
    EventType.LAMP_FAILURE: Severity.ALARM,
    EventType.LAMP_UNEXPECTED_ON: Severity.WARNING,
    EventType.LAMP_RECOVERED: Severity.INFO,
    EventType.CONFIG_RECEIVED: Severity.INFO,
    EventType.CONFIG_APPLIED: Severity.INFO,
    EventType.CONFIG_ROLLED_BACK: Severity.ALARM,
    EventType.COMMAND: Severity.INFO,
    EventType.COMMAND_RATE_LIMITED: Severity.WARNING,
    EventType.WEB_LOGIN: Severity.INFO,
    EventType.WEB_LOGIN_FAILED: Severity.WARNING,
}


@dataclass(frozen=True, slots=True)
class Emitted:
    """What local listeners receive."""

    type: str
    device: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None


Listener = Callable[[Emitted], None]
Sink = Callable[[bytes], None]


class Events:
    """The one ``emit`` (see the module docstring). ``sink`` takes each encoded event (the
    outbox); it may be set after construction."""

    def __init__(self, *, sink: Sink | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self._wall = wall_clock
        self._listeners: list[Listener] = []
        self.emitted = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, type_: EventType | str, device: str | None = None,
             detail: Mapping[str, Any] | None = None, *,
             severity: Severity | None = None) -> None:
        """Send an event. A gateway type takes its severity from :class:`EventType`; any
        other name (an alert rule's) must bring its own."""
        try:
            known: EventType | None = EventType(type_)
        except ValueError:
            known = None
        if severity is None and known is not None:
            severity = known.severity
        if known is None and severity is None:
            log.error("event %r has no severity: an unknown type (a bug); sent without one",
                      type_)
        name = str(type_)
        ev = Event(ts=int(self._wall() * 1000), type=name, device=device,
                   detail=dict(detail or {}), severity=severity)
        try:
            payload = encode_event(ev)
        except EncodeError as err:
            log.error("event %s could not be encoded: %s", name, err)
            return
        self.emitted += 1
        if self.sink is not None:
            try:
                self.sink(payload)
            except Exception:            # the event path must never take a producer down
                log.exception("event %s could not be queued", name)
        out = Emitted(name, device, ev.detail, severity)
        for listener in list(self._listeners):
            try:
                listener(out)
            except Exception:
                log.exception("event listener failed on %s", name)
