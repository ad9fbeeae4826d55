"""What the dispatcher needs from the agent: :class:`CommandTarget`.

The agent (``gateway.runtime.Agent``) implements it. Each method does one command's work and
reports failure by raising; the dispatcher turns the exception into the error code:

=============================================  ===============================================
raised                                         code
=============================================  ===============================================
``NotFound`` (unknown device, point, group)    ``not_found``
``RulesRejected``                              ``invalid_rules`` (its problems in the message)
``WriteRejected`` (not writable, out of range) ``rejected``
``BadValue`` (a value the target refuses)      ``bad_args``
``DeviceError`` (timeout, exception, bus down) ``device_error``
``Unsupported`` (feature not set up)           ``unsupported``
anything else (a built-in ``KeyError``...)     ``internal`` (logged with its traceback): a bug
=============================================  ===============================================

Results are plain JSON-able mappings (the dispatcher converts datetimes, enums, tuples, sets
and non-finite floats, but a target should not rely on it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from drivers.modbus.registers import Value
from drivers.sample import Sample
from gateway.errors import GatewayError

__all__ = ["CommandTarget", "RulesRejected"]


class RulesRejected(GatewayError, ValueError):
    """New lighting rules were refused; the old ones stay in force (and on disk).
    ``problems`` lists each as ``(field_path, message)``, paths relative to ``lighting``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems)
                         or "rules rejected")


@runtime_checkable
class CommandTarget(Protocol):
    """The agent as the command dispatcher sees it (one method per command, plus clock trust)."""

    def state_snapshot(self) -> dict[str, Any]:
        """``get_state``: the live picture (levels with reasons, overrides, clock trust, device
        health, store backlog...)."""
        ...

    def clock_trusted(self) -> bool:
        """Whether the wall clock is trusted (RTC, GPS fix or sync_time). Signed commands are
        checked against it, or against the newest accepted signing time when it is not."""
        ...

    async def read_point(self, device: str, point: str) -> Sample:
        """``read_point``: read now, on the wire. KeyError if unknown; DeviceError on failure."""
        ...

    async def write_point(self, device: str, point: str, value: Value) -> None:
        """``write_point``. KeyError if unknown; WriteRejected if the point is not writable or
        the value does not fit; DeviceError on failure."""
        ...

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> dict[str, Any]:
        """``set_override``: force ``group`` (``"*"``: every group) to ``level`` percent for
        ``duration_s`` seconds (None: until cleared). An override from the same ``source`` on
        the same group replaces the previous one. Returns what is now in force. KeyError for
        an unknown group, ValueError for values the lighting rules refuse."""
        ...

    def clear_override(self, *, group: str, source: str | None) -> dict[str, Any]:
        """``clear_override``: remove the command overrides of ``group`` (only ``source``'s
        when given). KeyError for an unknown group. Clearing nothing is not an error."""
        ...

    def get_rules(self) -> dict[str, Any]:
        """``get_rules``: ``{"version": "<content hash>", "lighting": {...}}`` in force."""
        ...

    async def set_rules(self, lighting: dict[str, Any] | None,
                        alerts: dict[str, Any] | None = None) -> dict[str, Any]:
        """``set_rules``: validate lighting and/or alert rules (both before either takes
        effect), keep them, apply; returns ``{"version": ..., "warnings": [...]}``. Raises
        RulesRejected with the problems (paths from the root: ``lighting.groups[0]...``) and
        keeps the old rules on any error."""
        ...

    def sync_time(self, *, epoch_ms: int, set_clock: bool) -> dict[str, Any]:
        """``sync_time``: mark the clock trusted; with ``set_clock`` (``commands.allow_set_time``)
        also set the system clock. Returns e.g. ``{"clock_trusted": true, "offset_ms": ...,
        "clock_set": false}``."""
        ...

    def get_config(self) -> dict[str, Any]:
        """``get_config``: the config in force without secrets, its digest, and a config on
        probation if any."""
        ...

    def set_config(self, config: Any, probation_s: float | None) -> dict[str, Any]:
        """``set_config``: validate a whole new config (YAML text or an object), keep the old
        one, write the new one and restart on it, rolling back if it does not come up healthy
        within ``probation_s``. Unsupported when remote configuration is off; BadValue for a
        config that does not validate (the old one stays)."""
        ...
