"""The agent: one asyncio process that owns the buses, the store, the MQTT link and uplink.

``Agent`` is an async context manager: entering it opens the store, starts the link and the
uplink, then opens every bus (each runs its own task); leaving it closes them in reverse order
(safe twice): the buses stop, what is batched is stored, the backlog gets a short chance to go
out, a clean ``{"online": false}`` is published, and the store is closed. ``run(stop)`` serves
until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
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
from drivers.serial.reader import LinkState as SerialState
from drivers.serial.reader import Parity, SerialProtocol, SerialReader, SerialSettings
from gateway import __version__
from gateway.codec import Severity, Topics, encode_state
from gateway.commands import Dispatcher
from gateway.commands.target import RulesRejected
from gateway.config import Config, GpioCfg, ModbusRtuBus, ModbusTcpBus, SerialBus, known_points
from gateway.errors import LinkError
from gateway.latest import LatestValues
from gateway.lighting import ClockTrust, LightingController, rules_version
from gateway.link import LinkState, MqttLink, Will
from gateway.store import Durability, Store
from gateway.uplink import Uplink

log = logging.getLogger("edgegw.agent")

EventListener = Callable[[BusEvent], None]


def modbus_settings(cfg: Config, bus: ModbusRtuBus | ModbusTcpBus) -> BusSettings:
    if isinstance(bus, ModbusTcpBus):
        return BusSettings(name=bus.name, kind=BusKind.TCP, host=bus.host, port=bus.port,
                           timeout=bus.timeout, retries=bus.retries)
    return BusSettings(name=bus.name, kind=BusKind.RTU, serial_port=bus.port,
                       baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits,
                       bytesize=bus.bytesize, timeout=bus.timeout, retries=bus.retries)


def serial_settings(bus: SerialBus) -> SerialSettings:
    return SerialSettings(
        name=bus.name, port=bus.port, protocol=SerialProtocol(bus.protocol),
        device=bus.device or bus.name,
        baudrate=bus.baudrate, bytesize=bus.bytesize, parity=Parity(bus.parity),
        stopbits=bus.stopbits, pattern=bus.pattern, scales=dict(bus.scales),
        offsets=dict(bus.offsets), period=bus.period, stale_periods=bus.stale_periods)


def device_settings(cfg: Config, bus_name: str) -> list[DeviceSettings]:
    return [DeviceSettings(name=d.name, unit=d.unit, poll=d.poll, points=d.specs(),
                           max_gap=d.max_gap)
            for d in cfg.devices if d.bus == bus_name and d.enabled]


class Agent:
    """Polls every configured device, keeps the latest values, and runs the uplink."""

    def __init__(self, config: Config, *, wall_clock: Callable[[], float] = time.time,
                 log_samples: bool = False, uplink: bool = True,
                 first_connect_jitter: float = 0.0) -> None:
        self.config = config
        self.latest = LatestValues()
        self.started_at = wall_clock()
        self._wall = wall_clock
        self._log_samples = log_samples
        self._event_listeners: list[EventListener] = []
        self.buses: dict[str, ModbusBus] = {}
        self.serial: dict[str, SerialReader] = {}
        self.clock = ClockTrust(has_rtc=config.gateway.has_rtc,
                                check_ntp=config.gateway.trust_ntp)
        self.gpio_outputs: dict[str, Any] = {}
        self.gpio_inputs: dict[str, Any] = {}
        self.lighting: LightingController | None = None
        self.alerts: Any = None             # gateway.alerting.AlertMonitor when configured
        self._device_bus: dict[str, ModbusBus] = {}
        self._stack = contextlib.AsyncExitStack()
        self._entered = False
        self._with_uplink = uplink
        self._first_jitter = first_connect_jitter
        self.topics = Topics(config.mqtt.topic_prefix, config.gateway.id)
        self.store: Store | None = None
        self.link: MqttLink | None = None
        self.uplink: Uplink | None = None
        self.dispatcher: Dispatcher | None = None
        for b in config.buses:
            if isinstance(b, (ModbusRtuBus, ModbusTcpBus)):
                bus = ModbusBus(modbus_settings(config, b), device_settings(config, b.name),
                                on_samples=self._samples, on_event=self._event,
                                wall_clock=wall_clock)
                self.buses[b.name] = bus
                for d in bus.devices:
                    self._device_bus[d] = bus
            else:
                self.serial[b.name] = self._make_serial(b)

    def _make_serial(self, bus: SerialBus) -> SerialReader:
        device = bus.device or bus.name

        def status(state: SerialState, detail: str) -> None:
            if state in (SerialState.STALE, SerialState.UNAVAILABLE):
                self._event(BusEvent("device_offline", device,
                                     {"bus": bus.name, "state": state.value, "reason": detail}))
            elif state is SerialState.ONLINE:
                self._event(BusEvent("device_online", device, {"bus": bus.name}))

        def time_fix(utc: object) -> None:
            self.clock.mark("gps")

        return SerialReader(serial_settings(bus), on_samples=self._samples, on_status=status,
                            on_time_fix=time_fix if bus.protocol == "nmea" else None)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Agent:
        if self._entered:
            return self
        self._entered = True
        try:
            if self._with_uplink:
                await self._start_uplink()
            for bus in self.buses.values():
                await self._stack.enter_async_context(bus)
            for reader in self.serial.values():
                await self._stack.enter_async_context(reader)
            if self.config.gpio is not None:
                self._start_gpio(self.config.gpio)
            if self.config.lighting:
                await self._start_lighting()
            if self.config.alerts:
                await self._start_alerts()
        except BaseException:
            await self._stack.aclose()
            self._entered = False
            raise
        self._event(BusEvent("agent_start", None, {
            "version": __version__, "devices": len(self._device_bus)}))
        return self

    def _start_gpio(self, cfg: GpioCfg) -> None:
        from drivers.gpio import (
            DigitalInput,
            PinFactoryName,
            PwmOutput,
            RelayOutput,
            detect_pin_factory,
            make_pin_factory,
        )

        name = detect_pin_factory() if cfg.factory == "auto" else PinFactoryName(cfg.factory)
        factory = make_pin_factory(name)
        loop = asyncio.get_running_loop()
        for o in cfg.outputs:
            out: Any
            if o.kind == "relay":
                out = RelayOutput(o.name, o.pin, factory, active_high=o.active_high,
                                  min_switch_interval=o.min_switch_interval)
            else:
                out = PwmOutput(o.name, o.pin, factory, frequency=o.frequency)
            self.gpio_outputs[o.name] = out
            self._stack.callback(out.close)
        for i in cfg.inputs:
            def changed(active: bool, name: str = i.name, kind: str = i.kind) -> None:
                # gpiozero calls back from its own thread on real pins
                sample = Sample(name, kind, int(self._wall() * 1000), active)
                loop.call_soon_threadsafe(self._samples, [sample])

            inp = DigitalInput(i.name, i.pin, factory, pull_up=i.pull_up, on_change=changed)
            self.gpio_inputs[i.name] = inp
            self._stack.callback(inp.close)
            self._samples([Sample(i.name, i.kind, int(self._wall() * 1000), inp.active)])

    async def _start_lighting(self) -> None:
        state_dir = Path(self.config.store.path).parent if self.store is not None else None
        controller = LightingController(
            rules_raw=self.config.lighting, location=self.config.gateway.location,
            latest=self.latest, write_point=self.write_point,
            emit=lambda t, d, detail: self._event(BusEvent(t, d, detail)),
            offer=self._samples, clock_trust=self.clock,
            known_points=known_points(self.config), gpio_outputs=self.gpio_outputs,
            state_dir=state_dir,
            kv_get=self.store.kv_get if self.store is not None else None,
            kv_set=self.store.kv_set if self.store is not None else None,
            wall_clock=self._wall)
        self.lighting = controller
        await self._stack.enter_async_context(controller)

    async def _start_alerts(self) -> None:
        from gateway.alerting import AlertMonitor

        cfg = self.config
        periods = {(d.name, p.name): p.poll or d.poll for d in cfg.devices for p in d.points}
        monitor = AlertMonitor(
            cfg.alerts if isinstance(cfg.alerts, dict) else None,
            timezone=cfg.gateway.location.timezone if cfg.gateway.location else None,
            points=known_points(cfg),
            groups=self.lighting.group_names() if self.lighting is not None else [],
            poll_periods=periods, latest=self.latest, emit=self.emit_event,
            lighting=self.lighting,
            kv_get=self.store.kv_get if self.store is not None else None,
            kv_set=self.store.kv_set if self.store is not None else None,
            wall_clock=self._wall)
        self.alerts = monitor
        await self._stack.enter_async_context(monitor)

    async def _start_uplink(self) -> None:
        cfg = self.config
        store = Store(cfg.store.path, max_mb=cfg.store.max_mb,
                      durability=Durability(cfg.store.synchronous))
        self._stack.callback(store.close)
        self.store = store
        link = MqttLink(
            cfg.mqtt, client_id=cfg.mqtt.client_id or cfg.gateway.id,
            will=Will(self.topics.state, encode_state(online=False)),
            subscriptions=[self.topics.cmd_req] + [self.topics.group_cmd_req(g)
                                                   for g in cfg.gateway.groups],
            on_connect=self._on_connect, on_message=self._on_message,
            first_attempt_jitter=self._first_jitter,
        )
        uplink = Uplink(cfg, store, link, birth_detail=self.birth_detail,
                        wall_clock=self._wall)
        self.link, self.uplink = link, uplink
        # before the link starts, so the first command has a handler; a bad key file raises
        # ConfigError here and the agent refuses to start
        self.dispatcher = Dispatcher(self, cfg=cfg.commands, store=store, emit=uplink.emit,
                                     gateway_id=cfg.gateway.id,
                                     topic_prefix=cfg.mqtt.topic_prefix, clock=self._wall)

        async def stop_link() -> None:
            await link.close(goodbye=encode_state(online=False))

        async def stop_uplink() -> None:
            await uplink.close(drain_for=2.0)

        # closed in reverse: the uplink stores and drains first, then the link says goodbye
        await link.__aenter__()
        self._stack.push_async_callback(stop_link)
        await uplink.__aenter__()
        self._stack.push_async_callback(stop_uplink)

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

    # ------------------------------------------------------------------ uplink hooks
    def birth_detail(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(self._wall() - self.started_at, 1),
            "clock_trusted": self.clock.trusted,
            "rules_version": self.lighting.version if self.lighting is not None else None,
        }

    async def _on_connect(self, link: MqttLink) -> None:
        if self.uplink is not None:
            await self.uplink.on_connect(link)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        """A command: answered on cmd/res, whatever it is (the dispatcher never raises)."""
        if self.dispatcher is None or self.link is None:
            return
        response = await self.dispatcher.handle(topic, payload)
        try:
            await self.link.publish(self.topics.cmd_res, response, qos=1)
        except LinkError as err:
            log.warning("command response not sent: %s", err)

    # ------------------------------------------------------------------ consumers
    def on_event(self, listener: EventListener) -> None:
        self._event_listeners.append(listener)

    def _samples(self, samples: list[Sample]) -> None:
        self.latest.update(samples)
        if self.uplink is not None:
            self.uplink.offer(samples)
        if self._log_samples:
            for s in samples:
                if s.quality is Quality.GOOD:
                    log.info("%s.%s = %r", s.device, s.point, s.value)
                else:
                    log.info("%s.%s: %s", s.device, s.point, s.quality)

    def _event(self, event: BusEvent) -> None:
        self.emit_event(event.type, event.device, event.detail, None)

    def emit_event(self, type_: str, device: str | None, detail: dict[str, Any],
                   severity: Severity | None = None) -> None:
        """An event: to the store's priority lane (the platform), and to local listeners."""
        if self.uplink is not None:
            self.uplink.emit(type_, device, detail, severity=severity)
        event = BusEvent(type_, device, detail)
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

    def link_state(self) -> str:
        return self.link.state.value if self.link is not None else LinkState.CLOSED.value

    # ------------------------------------------------------------------ command target
    def state_snapshot(self) -> dict[str, Any]:
        """The whole live picture (get_state, edgegw status)."""
        counts = self.store.counts() if self.store is not None else None
        online, total = self.online_count()
        snap: dict[str, Any] = {
            "gateway": self.config.gateway.id,
            "version": __version__,
            "uptime_s": round(self._wall() - self.started_at, 1),
            "link": {"state": self.link_state(),
                     "url": self.link.url if self.link else None,
                     "reconnects": self.link.reconnects if self.link else 0},
            "backlog": {"batches": counts.batches, "points": counts.points,
                        "bytes": counts.total_bytes, "events": counts.events}
            if counts else None,
            "devices": self.device_health(),
            "devices_online": online, "devices_total": total,
            "clock": self.clock.snapshot(),
        }
        if self.lighting is not None:
            snap["lighting"] = self.lighting.snapshot()
        if self.alerts is not None:
            snap["alerts"] = self.alerts.snapshot()
        if self.dispatcher is not None:
            snap["commands"] = self.dispatcher.stats.as_dict()
        return snap

    def clock_trusted(self) -> bool:
        return self.clock.trusted

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> dict[str, Any]:
        if self.lighting is None:
            raise NotImplementedError("this gateway has no lighting groups")
        ov = self.lighting.set_override(group=group, level=level, duration_s=duration_s,
                                        priority=priority, source=source)
        return {"group": ov.group, "level": ov.level, "priority": ov.priority,
                "expires_at": ov.expires_at.isoformat() if ov.expires_at else None}

    def clear_override(self, *, group: str, source: str | None) -> dict[str, Any]:
        if self.lighting is None:
            raise NotImplementedError("this gateway has no lighting groups")
        if group != "*" and group not in self.lighting.group_names():
            raise KeyError(f"no lighting group {group!r}")
        return {"group": group, "cleared": self.lighting.clear_override(group=group,
                                                                        source=source)}

    def get_rules(self) -> dict[str, Any]:
        lighting = self.lighting.rules_raw if self.lighting is not None else None
        alerts = self.alerts.raw if self.alerts is not None else None
        out: dict[str, Any] = {"version": self._rules_version(), "lighting": lighting}
        if alerts is not None:
            out["alerts"] = alerts
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
        # both checked before either takes effect
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

    def sync_time(self, *, epoch_ms: int, set_clock: bool) -> dict[str, Any]:
        offset_ms = epoch_ms - int(self._wall() * 1000)
        if set_clock:
            try:
                time.clock_settime(time.CLOCK_REALTIME, epoch_ms / 1000)
            except PermissionError as err:
                raise NotImplementedError(
                    "setting the clock needs CAP_SYS_TIME; the clock is trusted but not set"
                ) from err
        self.clock.mark("sync_time")
        return {"clock_trusted": True, "offset_ms": offset_ms, "clock_set": set_clock}
