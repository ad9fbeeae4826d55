"""The agent: one asyncio process that owns the buses and the latest-values table.

``Agent`` is an async context manager: entering it opens every bus (each runs its own task),
leaving it closes them (safe twice). ``run(stop)`` serves until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from drivers.modbus.bus import (
    BusEvent,
    BusKind,
    BusSettings,
    DeviceSettings,
    Health,
    ModbusBus,
)
from drivers.modbus.registers import Value
from drivers.sample import Quality, Sample
from gateway.config import Config, ModbusRtuBus, ModbusTcpBus
from gateway.latest import LatestValues

log = logging.getLogger("edgegw.agent")

EventListener = Callable[[BusEvent], None]


def modbus_settings(cfg: Config, bus: ModbusRtuBus | ModbusTcpBus) -> BusSettings:
    if isinstance(bus, ModbusTcpBus):
        return BusSettings(name=bus.name, kind=BusKind.TCP, host=bus.host, port=bus.port,
                           timeout=bus.timeout, retries=bus.retries)
    return BusSettings(name=bus.name, kind=BusKind.RTU, serial_port=bus.port,
                       baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits,
                       bytesize=bus.bytesize, timeout=bus.timeout, retries=bus.retries)


def device_settings(cfg: Config, bus_name: str) -> list[DeviceSettings]:
    return [DeviceSettings(name=d.name, unit=d.unit, poll=d.poll, points=d.specs(),
                           max_gap=d.max_gap)
            for d in cfg.devices if d.bus == bus_name and d.enabled]


class Agent:
    """Polls every configured device and keeps the latest values."""

    def __init__(self, config: Config, *, wall_clock: Callable[[], float] = time.time,
                 log_samples: bool = False) -> None:
        self.config = config
        self.latest = LatestValues()
        self.started_at = wall_clock()
        self._wall = wall_clock
        self._log_samples = log_samples
        self._event_listeners: list[EventListener] = []
        self.buses: dict[str, ModbusBus] = {}
        self._device_bus: dict[str, ModbusBus] = {}
        self._stack = contextlib.AsyncExitStack()
        self._entered = False
        for b in config.buses:
            if isinstance(b, (ModbusRtuBus, ModbusTcpBus)):
                bus = ModbusBus(modbus_settings(config, b), device_settings(config, b.name),
                                on_samples=self._samples, on_event=self._event,
                                wall_clock=wall_clock)
                self.buses[b.name] = bus
                for d in bus.devices:
                    self._device_bus[d] = bus
            else:
                log.warning("bus %s: type %s is not supported by this build yet; skipped",
                            b.name, b.type)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Agent:
        if self._entered:
            return self
        self._entered = True
        try:
            for bus in self.buses.values():
                await self._stack.enter_async_context(bus)
        except BaseException:
            await self._stack.aclose()
            raise
        self._event(BusEvent("agent_start", None, {"devices": len(self._device_bus)}))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._entered:
            return
        self._entered = False
        self._event(BusEvent("agent_stop", None, {}))
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set."""
        await stop.wait()

    async def wait_first_cycle(self) -> None:
        """Until every bus has polled each of its devices once (answering or not)."""
        for bus in self.buses.values():
            await bus.first_cycle_done.wait()

    # ------------------------------------------------------------------ consumers
    def on_event(self, listener: EventListener) -> None:
        self._event_listeners.append(listener)

    def _samples(self, samples: list[Sample]) -> None:
        self.latest.update(samples)
        if self._log_samples:
            for s in samples:
                if s.quality is Quality.GOOD:
                    log.info("%s.%s = %r", s.device, s.point, s.value)
                else:
                    log.info("%s.%s: %s", s.device, s.point, s.quality)

    def _event(self, event: BusEvent) -> None:
        for listener in list(self._event_listeners):
            listener(event)

    # ------------------------------------------------------------------ operations
    def bus_of(self, device: str) -> ModbusBus:
        try:
            return self._device_bus[device]
        except KeyError:
            known = ", ".join(sorted(self._device_bus)) or "none"
            raise KeyError(f"no device {device!r} (devices: {known})") from None

    async def read_point(self, device: str, point: str) -> Sample:
        sample = await self.bus_of(device).read_point(device, point)
        self.latest.update([sample])
        return sample

    async def write_point(self, device: str, point: str, value: Value) -> None:
        await self.bus_of(device).write_point(device, point, value)

    def device_health(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for bus in self.buses.values():
            for name, dev in bus.devices.items():
                out[name] = {
                    "bus": bus.settings.name,
                    "health": dev.health.value,
                    "last_ok": dev.last_ok,
                    "last_error": dev.last_error,
                    "failures": dev.failures,
                    "polls": dev.polls,
                    "errors": dev.errors,
                }
        return out

    def online_count(self) -> tuple[int, int]:
        health = [d.health for b in self.buses.values() for d in b.devices.values()]
        return sum(h is Health.ONLINE for h in health), len(health)
