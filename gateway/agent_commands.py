"""The commands' side of the agent: :class:`AgentCommands` implements
:class:`~gateway.commands.target.CommandTarget` over the parts it needs (the buses, the lighting
controller, the alert monitor, the clock, the status), so the dispatcher depends on that small
typed interface, never on the agent itself.

Failures are raised as the typed errors the dispatcher maps to codes (``NotFound``,
``Unsupported``, ``BadValue``, ``RulesRejected``, ``WriteRejected``, ``DeviceError``); anything
else is a bug and is answered ``internal``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import ModbusBus
from drivers.modbus.registers import Value
from drivers.sample import Sample
from gateway.clock import ClockTrust
from gateway.commands.target import CommandTarget, RulesRejected
from gateway.errors import NotFound, Unsupported
from gateway.latest import LatestValues
from policies.common import levels_as_numbers, rules_version

if TYPE_CHECKING:                 # the lighting and alert loops load only when configured
    from gateway.alerting import AlertMonitor
    from gateway.lighting import LightingController
    from gateway.remote_config import ConfigChanger
    from gateway.sitecheck import SiteChecks

__all__ = ["AgentCommands"]


class AgentCommands(CommandTarget):
    """One method per command (see :class:`CommandTarget` for each one's contract)."""

    def __init__(self, *, buses: Mapping[str, ModbusBus], latest: LatestValues,
                 lighting: LightingController | None, alerts: AlertMonitor | None,
                 clock: ClockTrust, status: Callable[[], dict[str, Any]],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._device_bus = {d: bus for bus in buses.values() for d in bus.devices}
        self._latest = latest
        self.lighting = lighting
        self.alerts = alerts
        self._clock = clock
        self._status = status
        self._wall = wall_clock
        self.site_checks: SiteChecks | None = None    # the page's check (when it is on)
        self.config: ConfigChanger | None = None      # get_config / set_config

    # ------------------------------------------------------------------ reads and writes
    def bus_of(self, device: str) -> ModbusBus:
        try:
            return self._device_bus[device]
        except KeyError:
            known = ", ".join(sorted(self._device_bus)) or "none"
            raise NotFound(f"no device {device!r} (devices: {known})") from None

    async def read_point(self, device: str, point: str) -> Sample:
        sample = await self.bus_of(device).read_point(device, point)
        self._latest.update([sample])
        return sample

    async def write_point(self, device: str, point: str, value: Value) -> None:
        await self.bus_of(device).write_point(device, point, value)

    # ------------------------------------------------------------------ state
    def state_snapshot(self) -> dict[str, Any]:
        return self._status()

    def clock_trusted(self) -> bool:
        return self._clock.trusted

    # ------------------------------------------------------------------ lighting
    def _lighting(self) -> LightingController:
        if self.lighting is None:
            raise Unsupported("this gateway has no lighting groups")
        return self.lighting

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> dict[str, Any]:
        ov = self._lighting().set_override(group=group, level=level, duration_s=duration_s,
                                           priority=priority, source=source)
        return {"group": ov.group, "level": ov.level, "priority": ov.priority,
                "expires_at": ov.expires_at.isoformat() if ov.expires_at else None}

    def clear_override(self, *, group: str, source: str | None) -> dict[str, Any]:
        lighting = self._lighting()
        if group != "*" and group not in lighting.group_names():
            raise NotFound(f"no lighting group {group!r} "
                           f"(groups: {', '.join(lighting.group_names()) or 'none'})")
        return {"group": group, "cleared": lighting.clear_override(group=group, source=source)}

    # ------------------------------------------------------------------ rules
    def get_rules(self) -> dict[str, Any]:
        """The rules in force as written, levels as numbers (YAML's ``off`` is ``false``)."""
        lighting = self.lighting.rules_raw if self.lighting is not None else None
        alerts = self.alerts.raw if self.alerts is not None else None
        out: dict[str, Any] = {"version": self._rules_version(),
                               "lighting": levels_as_numbers(lighting)}
        if alerts is not None:
            out["alerts"] = levels_as_numbers(alerts)
        return out

    def _rules_version(self) -> str:
        lighting = self.lighting.rules_raw if self.lighting is not None else None
        alerts = self.alerts.raw if self.alerts is not None else None
        return rules_version({"lighting": lighting, "alerts": alerts} if alerts else lighting)

    async def set_rules(self, lighting: dict[str, Any] | None,
                        alerts: dict[str, Any] | None = None) -> dict[str, Any]:
        """New lighting (and alert) rules: all checked before any takes effect."""
        if lighting is not None and self.lighting is None:
            raise RulesRejected([("lighting", "this gateway was started without lighting "
                                              "rules; add a lighting section to its config")])
        if alerts is not None and self.alerts is None:
            raise RulesRejected([("alerts", "this gateway was started without alert rules; "
                                            "add an alerts section to its config")])
        checked = (self.lighting.check_rules(lighting)
                   if lighting is not None and self.lighting is not None else None)
        if alerts is not None and self.alerts is not None:
            self.alerts.check(alerts)
        warnings: list[str] = []
        if lighting is not None and self.lighting is not None:
            self.lighting.set_rules(lighting, checked)
            warnings += self.lighting.warnings
        if alerts is not None and self.alerts is not None:
            self.alerts.set_rules(alerts)
        return {"version": self._rules_version(), "warnings": warnings}

    # ------------------------------------------------------------------ configuration
    def get_config(self) -> dict[str, Any]:
        if self.config is None:
            raise Unsupported("the agent's configuration is not available")
        return self.config.get_config()

    def set_config(self, config: Any, probation_s: float | None) -> dict[str, Any]:
        if self.config is None:
            raise Unsupported("remote configuration")
        return self.config.set_config(
            config, probation_s if probation_s is not None
            else self.config.cfg.commands.config_probation_s)

    # ------------------------------------------------------------------ local only
    async def run_check(self, *, lamp_test: bool, settle: float) -> dict[str, Any]:
        """``check`` (the technician's page): the commissioning checklist inside the agent."""
        if self.site_checks is None:
            raise Unsupported("the check runs from the technician's page")
        job = await self.site_checks.run(lamp_test=lamp_test, settle=settle)
        assert job.report is not None
        return {"check": job.id, "verdict": str(job.report.verdict),
                "counts": job.report.counts()}

    # ------------------------------------------------------------------ time
    def sync_time(self, *, epoch_ms: int, set_clock: bool) -> dict[str, Any]:
        offset_ms = epoch_ms - int(self._wall() * 1000)
        if set_clock:
            try:
                time.clock_settime(time.CLOCK_REALTIME, epoch_ms / 1000)
            except PermissionError as err:
                raise Unsupported(
                    "setting the clock needs CAP_SYS_TIME; the clock is trusted but not set"
                ) from err
        self._clock.mark("sync_time")
        return {"clock_trusted": True, "offset_ms": offset_ms, "clock_set": set_clock}
