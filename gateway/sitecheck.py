"""The commissioning check inside the running agent (the technician's page runs it: the agent
that serves the page holds the serial ports and cannot be stopped for ``edgegw check``).

:class:`SiteChecks` is the agent's side of :class:`provisioning.check.LiveSite`: the checklist
of ``edgegw check`` (the same code, :func:`provisioning.check.run_checks`) reads the devices
through the agent's own buses, the serial sensors through its readers, and runs the lamp test
through the agent's command path: each group under test is held by the lighting loop (it
neither drives nor judges those lamps meanwhile) under the commands' ``lighting`` lock (an
override or a rules change waits for the group's test to end), the writes queue on the bus with
the polls, and the previous levels are restored before the lighting takes the group back.

One check runs at a time; its progress (the phase, each line as it is decided) goes to the
listeners (the page's live stream), and the last report stays for download.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import ModbusBus
from drivers.modbus.registers import PointSpec, Value
from drivers.sample import Quality
from drivers.serial.reader import ReaderStats
from gateway.config import Config
from gateway.errors import NotFound

if TYPE_CHECKING:
    from gateway.runtime import Agent
    from provisioning.check import CheckReport, CheckResult

__all__ = ["CheckJob", "SiteChecks"]

Listener = Callable[["CheckJob"], None]


@dataclass
class CheckJob:
    """One run of the check: what it is doing, the lines so far, the report at the end."""

    id: str
    lamp_test: bool
    started_at: float
    phase: str = "starting"
    rows: list[CheckResult] = field(default_factory=list)
    report: CheckReport | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.report is not None or self.error is not None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "lamp_test": self.lamp_test, "started_at": self.started_at,
            "phase": self.phase, "done": self.done, "error": self.error,
            "rows": [r.to_json() for r in self.rows]}
        if self.report is not None:
            out["verdict"] = str(self.report.verdict)
            out["counts"] = self.report.counts()
        return out


class SiteChecks:
    """The check inside the agent (see the module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.current: CheckJob | None = None
        self.last: CheckJob | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _tell(self, job: CheckJob) -> None:
        for listener in list(self._listeners):
            listener(job)

    async def run(self, *, lamp_test: bool, settle: float) -> CheckJob:
        """Run the checklist now (the caller serialises: the ``check`` command's lock)."""
        from provisioning.check import CheckOptions, run_checks

        job = CheckJob(id=secrets.token_hex(6), lamp_test=lamp_test, started_at=time.time())
        self.current = job

        def on_result(r: CheckResult) -> None:
            job.rows.append(r)
            self._tell(job)

        def on_phase(text: str) -> None:
            job.phase = text
            self._tell(job)

        options = CheckOptions(lamp_test=lamp_test, settle=settle, on_result=on_result,
                               on_phase=on_phase, timeout=3.0)
        self._tell(job)
        try:
            job.report = await run_checks(self._agent.config.source, options,
                                          live=_Live(self._agent))
            job.phase = "done"
        except Exception as err:      # a bug in a check: the page says so, the agent goes on
            job.error = f"{type(err).__name__}: {err}"
            job.phase = "failed"
            raise
        finally:
            self.last, self.current = job, None
            self._tell(job)
        return job


class _Live:
    """:class:`provisioning.check.LiveSite` over the agent."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    @property
    def config(self) -> Config:
        return self._agent.config

    def agent_detail(self) -> str:
        a = self._agent
        return (f"the check runs inside the agent (pid {os.getpid()}, up "
                f"{a.wall() - a.started_at:.0f} s), with its own buses and sensors")

    def modbus_bus(self, name: str) -> ModbusBus | None:
        return self._agent.buses.get(name)

    def serial_status(self, bus: str) -> tuple[ReaderStats, dict[str, Value]] | None:
        reader = self._agent.serial.get(bus)
        if reader is None:
            return None
        device = reader.settings.device
        values: dict[str, Value] = {}
        for (dev, point), latest in self._agent.latest.items():
            if dev == device and latest.quality is Quality.GOOD and latest.value is not None:
                values[point] = latest.value
        return reader.stats(), values

    def clock(self) -> tuple[bool, str | None]:
        snap = self._agent.clock.snapshot()
        return bool(snap.get("trusted")), snap.get("source")

    def point_spec(self, device: str, point: str) -> PointSpec | None:
        for bus in self._agent.buses.values():
            if device in bus.devices:
                try:
                    return bus.point(device, point)
                except NotFound:
                    return None
        return None

    async def read_point(self, device: str, point: str) -> Value | None:
        return (await self._agent.commands.read_point(device, point)).value

    async def write_point(self, device: str, point: str, value: Value) -> None:
        await self._agent.commands.write_point(device, point, value)

    @contextlib.asynccontextmanager
    async def hold_lamps(self, groups: list[str]) -> AsyncIterator[None]:
        dispatcher = self._agent.dispatcher
        lock = dispatcher.lock("lighting") if dispatcher is not None else asyncio.Lock()
        lighting = self._agent.lighting
        async with lock:
            if lighting is not None:
                lighting.hold(groups)
            try:
                yield
            finally:
                if lighting is not None:
                    lighting.release(groups)
