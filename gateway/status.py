"""The agent's status, built in one place: ``get_state``, ``edgegw status`` (the control
socket), the systemd STATUS line and the ``gateway`` device's health telemetry all derive from
one :class:`AgentStatus` (a test checks they agree).

As a dict (:meth:`AgentStatus.as_dict`, ``schema`` 1; keys are added, never renamed)::

    {"schema": 1, "gateway": "gw-1", "site": "...", "version": "0.1.0", "pid": 812,
     "now": 1764032400.0, "started_at": ..., "uptime_s": 3600.0,
     "link": {"state": "connected", "url": "mqtts://...", "reconnects": 2, "refusals": 0,
              "last_error": null},
     "backlog": {"points": 0, "batches": 0, "bytes": 0, "events": 0},
     "store": {"state": "ok", "fault": null, "error": null, "since": null, "path": "...",
               "stalled_s": 0.0, "memory": {"batches": 0, "points": 0, "events": 0, "bytes": 0},
               "dropped": {"points": 0, "batches": 0, "events": 0, "seqs": []}},
     "devices": {"env-1": {"bus": "rs485-1", "health": "online", "last_ok": ...,
                           "last_error": null, "polls": 360, "errors": 0, "failures": 0}},
     "devices_online": 1, "devices_total": 1,
     "buses": [{"name": "rs485-1", "requests": ..., "timeouts": ..., "exceptions": ...,
                "errors": ..., "reconnects": ...}],
     "lighting": {"groups": {"main": {"level": 70.0, "reason": "...", "source": "program",
                                      ...}}, ...},
     "alerts": [...], "commands": {...},
     "components": {"lighting": {"state": "running", "critical": true, "restarts": 0,
                                 "last_error": null, "failed_at": null}, ...},
     "clock": {"trusted": true, "source": "ntp", "since": ...},
     "web": {"urls": ["https://gw-1:8443"], "fingerprint": "AB:CD:...", "listening": true,
             "sessions": 1, ...}}                      # only when the page is configured

``backlog`` is what waits in the store; ``store.memory`` what waits in memory while the store
fails (or on its way into it). Times are Unix seconds.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import Health
from gateway import __version__

if TYPE_CHECKING:
    from gateway.runtime import Agent

__all__ = ["SCHEMA", "AgentStatus", "build_status"]

SCHEMA = 1


@dataclass(frozen=True)
class AgentStatus:
    gateway: str
    site: str | None
    version: str
    pid: int
    now: float
    started_at: float
    uptime_s: float
    link: dict[str, Any]
    backlog: dict[str, int] | None
    store: dict[str, Any] | None
    devices: dict[str, dict[str, Any]]
    devices_online: int
    devices_total: int
    buses: list[dict[str, Any]]
    clock: dict[str, Any]
    components: dict[str, dict[str, Any]]
    lighting: dict[str, Any] | None = None
    alerts: list[Any] | None = None
    commands: dict[str, Any] | None = None
    web: dict[str, Any] | None = None          # the technician's page, when configured
    schema: int = field(default=SCHEMA)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("lighting", "alerts", "commands", "web"):
            if d[key] is None:
                del d[key]
        return d

    def health_counters(self) -> dict[str, int]:
        """The agent's own figures for the ``gateway`` device's telemetry. Every value is an
        int (their types must not change between samples); the totals count since start."""
        backlog = self.backlog or {}
        store = self.store or {}
        memory = store.get("memory") or {}
        serial_errors = sum(int(d.get("errors") or 0) for d in self.devices.values()
                            if d.get("kind") == "serial")
        return {
            "store_backlog_points": int(backlog.get("points", 0)),
            "store_backlog_bytes": int(backlog.get("bytes_payload", 0)),
            "store_memory_points": int(memory.get("points", 0)),
            "store_ok": int(store.get("state", "ok") == "ok"),
            "modbus_errors": sum(int(b["timeouts"] + b["exceptions"] + b["errors"])
                                 for b in self.buses),
            "serial_errors": serial_errors,
            "mqtt_reconnects": int(self.link.get("reconnects", 0)),
            "component_restarts": sum(int(c.get("restarts", 0))
                                      for c in self.components.values()),
        }


def build_status(agent: Agent) -> AgentStatus:
    """The live picture of ``agent`` (see the module docstring)."""
    cfg = agent.config
    now = agent.wall()
    outbox = agent.outbox
    devices: dict[str, dict[str, Any]] = {}
    for bus in agent.buses.values():
        for name, dev in bus.devices.items():
            devices[name] = {
                "bus": bus.settings.name, "kind": "modbus",
                "health": dev.health.value, "last_ok": dev.last_ok,
                "last_error": dev.last_error, "failures": dev.failures,
                "polls": dev.polls, "errors": dev.errors,
            }
    for name, reader in sorted(agent.serial.items()):
        st = reader.stats()
        devices.setdefault(reader.settings.device, {
            "bus": name, "kind": "serial", "health": st.state.value,
            "last_ok": st.last_frame, "last_error": None, "polls": st.frames,
            "errors": st.error_count, "failures": st.losses + st.open_failures})
    online = sum(1 for b in agent.buses.values() for d in b.devices.values()
                 if d.health is Health.ONLINE)
    total = sum(len(b.devices) for b in agent.buses.values())
    link = agent.link
    backlog = None
    store = None
    if outbox is not None:
        c = outbox.backlog
        backlog = {"batches": c.batches, "points": c.points, "bytes": c.total_bytes,
                   "bytes_payload": c.telemetry_bytes + c.event_bytes, "events": c.events}
        store = outbox.snapshot()
    sup = agent.supervisor
    return AgentStatus(
        gateway=cfg.gateway.id, site=cfg.gateway.site, version=__version__, pid=os.getpid(),
        now=now, started_at=agent.started_at, uptime_s=round(now - agent.started_at, 1),
        link={"state": agent.link_state(), "url": link.url if link else None,
              "reconnects": link.reconnects if link else 0,
              "refusals": link.refusals if link else 0,
              "last_error": link.last_error if link else None},
        backlog=backlog, store=store, devices=devices, devices_online=online,
        devices_total=total,
        buses=[{"name": name, "requests": b.stats.requests, "timeouts": b.stats.timeouts,
                "exceptions": b.stats.exceptions, "errors": b.stats.errors,
                "reconnects": b.stats.reconnects} for name, b in sorted(agent.buses.items())],
        clock=agent.clock.snapshot(),
        components=sup.snapshot() if sup is not None else {},
        lighting=agent.lighting.snapshot() if agent.lighting is not None else None,
        alerts=agent.alerts.snapshot() if agent.alerts is not None else None,
        commands=agent.dispatcher.stats.as_dict() if agent.dispatcher is not None else None,
        web=agent.web.snapshot() if agent.web is not None else None,
    )
