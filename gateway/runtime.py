"""The agent: the composition root that wires the parts together and hands every long-running
task to one supervisor (:mod:`gateway.supervisor`).

::

    buses, serial, GPIO ──samples──> latest values ──> lighting, alerts
                 │                         └──> pipeline ──> outbox ──> publisher ──> link
                 └──events──> events ──────────────────────────┘  (store thread)  commands <─┘

Start-up order puts the lamps first and never waits on the disk or the network: the store is
opened by the outbox in the background (the agent gives it a moment, ``store.stall_timeout``
at most, to hand over the saved state); buses and serial readers start; the lighting drives
its outputs at once; then the alert monitor, the pipeline, the publisher and the link (the
first command gets a handler before the link subscribes); then health, the control socket and
the systemd notifier. ``Agent`` is an async context manager; leaving it stops everything in
reverse: the buses first, what is batched is handed over, the backlog gets a short chance to
go out, a clean ``{"online": false}`` is published, and the store is closed.

``run(stop)`` serves until ``stop`` is set, or raises ``ComponentFailed`` when a critical
component keeps failing (the CLI then exits non-zero and systemd starts a fresh agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import BusEvent, ModbusBus
from drivers.sample import Quality, Sample
from gateway import __version__
from gateway.agent_commands import AgentCommands
from gateway.clock import ClockTrust
from gateway.codec import Topics
from gateway.commands import Dispatcher
from gateway.config import Config, SerialBus, known_points
from gateway.errors import LinkError
from gateway.events import Emitted, Events, EventType
from gateway.latest import LatestValues
from gateway.link import LinkState, MqttLink
from gateway.northbound import Context as NorthboundContext
from gateway.northbound import Northbound, make_northbound
from gateway.outbox import Outbox
from gateway.pipeline import Pipeline
from gateway.publisher import Publisher
from gateway.remote_config import ConfigChanger
from gateway.seqmark import SeqMark
from gateway.status import AgentStatus, build_status
from gateway.supervisor import Component, Supervisor
from gateway.wiring import catalogue_points, make_buses, make_serial, start_gpio

if TYPE_CHECKING:        # imported where they start: only what the config uses is loaded
    from drivers.serial.reader import SerialReader
    from gateway.alerting import AlertMonitor
    from gateway.lighting import LightingController
    from gateway.web.server import WebServer

log = logging.getLogger("edgegw.agent")

EventListener = Callable[[Emitted], None]

# watchdog: seconds without progress after which a critical loop counts as wedged
LIGHTING_STALL = 30.0
PUBLISHER_STALL = 60.0
_SETTLE_MAX = 2.0             # seconds the lighting waits at most for the saved state
FAULT_INJECT_ENV = "EDGEGW_FAULT_INJECT"


def ack_delay(config: Config) -> float:
    """``store.ack_delay``, or twice the batch interval (at least 1 s) when unset."""
    if config.store.ack_delay is not None:
        return config.store.ack_delay
    return max(1.0, 2 * config.telemetry.batch_interval)


class Agent:
    """Polls every configured device, drives the lamps, and runs the uplink."""

    def __init__(self, config: Config, *, wall_clock: Callable[[], float] = time.time,
                 log_samples: bool = False, uplink: bool = True,
                 first_connect_jitter: float = 0.0, control: bool = False,
                 notifier: Any = None) -> None:
        self.config = config
        self.wall = wall_clock
        self.started_at = wall_clock()
        self.latest = LatestValues()
        self._log_samples = log_samples
        self._with_uplink = uplink
        self._first_jitter = first_connect_jitter
        self._with_control = control
        self.notifier = notifier               # gateway.service.SystemdNotifier, or None
        self.topics = Topics(config.mqtt.topic_prefix, config.gateway.id)
        self.clock = ClockTrust(has_rtc=config.gateway.has_rtc,
                                check_ntp=config.gateway.trust_ntp)
        self.events = Events(wall_clock=wall_clock)
        self.outbox: Outbox | None = None
        self.pipeline: Pipeline | None = None
        if uplink:
            self.outbox = Outbox(config.store, points=catalogue_points(config),
                                 emit=self.events.emit, seq_mark=SeqMark(
                                     Path(config.service.control_socket).parent,
                                     Path(config.store.path)),
                                 ack_delay=ack_delay(config))
            self.events.sink = self.outbox.put_event
            self.pipeline = Pipeline(config, self.outbox, wall_clock=wall_clock)
        self.buses: dict[str, ModbusBus] = make_buses(
            config, on_samples=self._samples, on_event=self._bus_event, wall_clock=wall_clock)
        self.serial: dict[str, SerialReader] = {
            b.name: make_serial(b, on_samples=self._samples, emit=self.events.emit,
                                on_time_fix=lambda: self.clock.mark("gps"))
            for b in config.buses if isinstance(b, SerialBus)}
        self.gpio_outputs: dict[str, Any] = {}
        self.gpio_inputs: dict[str, Any] = {}
        self.lighting: LightingController | None = None
        self.alerts: AlertMonitor | None = None
        # the commands' side of the agent (lighting and alerts join it once started)
        self.commands = AgentCommands(buses=self.buses, latest=self.latest, lighting=None,
                                      alerts=None, clock=self.clock,
                                      status=self.state_snapshot, wall_clock=wall_clock)
        self.commands.config = ConfigChanger(config, emit=self.events.emit,
                                             restart=self._restart_soon, wall_clock=wall_clock)
        self.dispatcher: Dispatcher | None = None
        self.restart_requested = asyncio.Event()   # set_config: run again on the new file
        self.link: MqttLink | None = None
        self.publisher: Publisher | None = None
        self.northbound: Northbound | None = None
        self.supervisor: Supervisor | None = None
        self.web: WebServer | None = None          # the technician's page, when configured
        self._entered = False
        self._closers: list[Callable[[], Any]] = []

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Agent:
        if self._entered:
            return self
        self._entered = True
        self.events.emit(EventType.AGENT_START, None, {
            "version": __version__,
            "devices": sum(len(b.devices) for b in self.buses.values())})
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def _start(self) -> None:
        cfg = self.config
        sup = self.supervisor = Supervisor(on_failure=self._component_failed,
                                           max_failures=cfg.service.restart_limit,
                                           window=cfg.service.restart_window,
                                           wall_clock=self.wall)
        outbox = self.outbox
        if outbox is not None:
            self._progress(sup.start("store", outbox.serve, critical=True), outbox)
            # the saved state (remote rules, overrides, counters) before the first decision,
            # but never more than a moment: the lamps do not wait on a failing card
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(cfg.store.stall_timeout, _SETTLE_MAX)):
                    await outbox.settled.wait()
        for name, bus in self.buses.items():
            s = bus.settings
            comp = sup.start(f"bus:{name}", bus.serve,
                             stall_after=max(60.0, 4 * s.timeout * (s.retries + 1) + 10))
            bus.progress = comp.beat
        for name, reader in self.serial.items():
            sup.start(f"serial:{name}", reader.run)
        if cfg.gpio is not None:
            self._start_gpio()
        if cfg.lighting:
            await self._start_lighting()
        if cfg.alerts:
            self._start_alerts()
        self.commands.lighting, self.commands.alerts = self.lighting, self.alerts
        if outbox is not None:
            self._start_uplink(outbox)
        self._start_service()
        # test-only seam: crash the named components at every step (the supervision tests
        # run the real process); never set in production
        for name in filter(None, os.environ.get(FAULT_INJECT_ENV, "").split(",")):
            if name in sup.components:
                log.warning("%s: injecting a fault into %s at every step", FAULT_INJECT_ENV,
                            name)
                sup.components[name].inject(RuntimeError(f"injected by {FAULT_INJECT_ENV}"),
                                            always=True)

    def _progress(self, comp: Component, part: Any) -> None:
        part.set_progress(comp.beat)

    def _start_gpio(self) -> None:
        assert self.config.gpio is not None
        loop = asyncio.get_running_loop()

        def changed(name: str, kind: str, active: bool) -> None:
            # RPi.GPIO and lgpio call back from their own thread on real pins
            sample = Sample(name, kind, int(self.wall() * 1000), active)
            loop.call_soon_threadsafe(self._samples, [sample])

        self.gpio_outputs, self.gpio_inputs = start_gpio(self.config.gpio, on_input=changed)
        for dev in (*self.gpio_outputs.values(), *self.gpio_inputs.values()):
            self._closers.append(dev.close)
        for i in self.config.gpio.inputs:
            self._samples([Sample(i.name, i.kind, int(self.wall() * 1000),
                                  self.gpio_inputs[i.name].active)])

    async def _start_lighting(self) -> None:
        from gateway.lighting import LightingController

        assert self.supervisor is not None
        controller = LightingController(
            rules_raw=self.config.lighting, location=self.config.gateway.location,
            latest=self.latest, write_point=self._write_point, emit=self.events.emit,
            offer=self._samples, clock_trust=self.clock,
            known_points=known_points(self.config), gpio_outputs=self.gpio_outputs,
            kv=self.outbox, wall_clock=self.wall)
        self.lighting = controller
        if self.outbox is not None:
            self.outbox.on_loaded(controller.restore)
        await controller.start()            # the outputs to the resolved level at once
        comp = self.supervisor.start("lighting", controller.serve, critical=True,
                                     stall_after=LIGHTING_STALL, backoff_cap=5.0)
        controller.progress = comp.beat

    def _start_alerts(self) -> None:
        from gateway.alerting import AlertMonitor

        assert self.supervisor is not None
        cfg = self.config
        periods = {(d.name, p.name): p.poll or d.poll for d in cfg.devices for p in d.points}
        monitor = AlertMonitor(
            cfg.alerts if isinstance(cfg.alerts, dict) else None,
            timezone=cfg.gateway.location.timezone if cfg.gateway.location else None,
            points=known_points(cfg),
            groups=self.lighting.group_names() if self.lighting is not None else [],
            poll_periods=periods, latest=self.latest, emit=self.events.emit,
            lighting=self.lighting, kv=self.outbox, wall_clock=self.wall)
        self.alerts = monitor
        if self.outbox is not None:
            self.outbox.on_loaded(monitor.restore)
        comp = self.supervisor.start("alerts", monitor.serve)
        monitor.progress = comp.beat

    def _start_uplink(self, outbox: Outbox) -> None:
        assert self.supervisor is not None and self.pipeline is not None
        cfg = self.config
        sup = self.supervisor
        # before the link starts, so the first command has a handler; a bad key file raises
        # ConfigError here and the agent refuses to start
        self.dispatcher = Dispatcher(self.commands, cfg=cfg.commands, store=outbox,
                                     emit=self.events.emit, gateway_id=cfg.gateway.id,
                                     topic_prefix=cfg.mqtt.topic_prefix, clock=self.wall,
                                     groups=cfg.gateway.groups)
        outbox.on_loaded(self.dispatcher.memory.restore)
        fmt = self.northbound = make_northbound(NorthboundContext(
            cfg, outbox, latest=self.latest, birth_detail=self.birth_detail,
            dispatcher=self.dispatcher, wall_clock=self.wall, emit=self.events.emit))
        link = MqttLink(
            cfg.mqtt, client_id=fmt.client_id(), will=fmt.will,
            subscriptions=fmt.subscriptions(),
            on_connect=self._on_connect, on_message=self._on_message,
            on_refused=self._link_refused, first_attempt_jitter=self._first_jitter,
            max_handlers=cfg.commands.concurrency)
        self.link = link
        self.publisher = Publisher(cfg, outbox, link, fmt=fmt)
        self._progress(sup.start("pipeline", self.pipeline.serve, critical=True),
                       self.pipeline)
        self._progress(sup.start("publisher", self.publisher.serve, critical=True,
                                 stall_after=PUBLISHER_STALL), self.publisher)
        self._progress(sup.start("link", link.serve, critical=True), link)

    def _start_service(self) -> None:
        """Health telemetry, the control socket, the systemd notifier."""
        from gateway.control import ControlError, ControlServer, status_line
        from gateway.health import HealthSampler, run_health

        assert self.supervisor is not None
        sup = self.supervisor
        cfg = self.config
        if self.pipeline is not None:
            sampler = HealthSampler(store_path=cfg.store.path,
                                    counters=lambda: self.status().health_counters())
            pipeline = self.pipeline
            sup.start("health", lambda: run_health(sampler, pipeline.offer,
                                                   cfg.service.health_interval))
        if cfg.web is not None:
            self._start_web()
        if self._with_control:
            control = ControlServer(cfg.service.control_socket, self.state_snapshot)
            # a socket path that cannot be used is a configuration to fix, not a crash to
            # retry: reported once (the lamps matter more than `edgegw status`)
            sup.start("control", control.serve, permanent=(ControlError,))
            self._closers.append(control.close)
        sd = self.notifier
        if sd is not None:
            sd.alive = sup.alive
            sd.status_fn = lambda: status_line(self.state_snapshot())
            if sd.watchdog_timeout is not None:
                sup.start("watchdog", sd.serve_watchdog)
            if sd.enabled:
                sup.start("status-line", sd.serve_status)

    def _start_web(self) -> None:
        """The technician's page (imported only here: a gateway without it carries none of
        it). State changes from the page go through the one dispatcher, made here when the
        agent has no uplink."""
        from gateway.sitecheck import SiteChecks
        from gateway.web.server import WebError, WebServer

        assert self.supervisor is not None
        cfg = self.config
        if self.dispatcher is None:
            self.dispatcher = Dispatcher(self.commands, cfg=cfg.commands, store=None,
                                         emit=self.events.emit, gateway_id=cfg.gateway.id,
                                         topic_prefix=cfg.mqtt.topic_prefix, clock=self.wall,
                                         groups=cfg.gateway.groups)
        self.commands.site_checks = SiteChecks(self)
        web = self.web = WebServer(self)
        self.supervisor.start("web", web.serve, permanent=(WebError,))
        self._closers.append(web.close)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._entered:
            return
        self._entered = False
        sup = self.supervisor
        if sup is None:
            return
        if self.notifier is not None:
            self.notifier.stopping()
        self.events.emit(EventType.AGENT_STOP, None, {})
        # the loops that write to the buses first, then the buses (asked to finish their
        # transaction: a driver that swallows a cancellation cannot hold the stop up)
        if self.web is not None:
            await self.web.close()        # a running lamp test restores the lamps first
        for name in ("web", "alerts", "lighting"):
            await sup.stop(name)
        for bus in self.buses.values():
            bus.request_stop()
        for name in [n for n in sup.components if n.startswith(("bus:", "serial:"))] + [
                "health", "control", "watchdog", "status-line"]:
            await sup.stop(name)
        for bus in self.buses.values():
            await bus.close()
        for reader in self.serial.values():
            with contextlib.suppress(Exception):
                await reader.aclose()
        if self.lighting is not None:
            await self.lighting.close()       # counters kept
        if self.alerts is not None:
            await self.alerts.close()
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
        await self._close_uplink(sup)
        await sup.stop_all()

    async def _close_uplink(self, sup: Supervisor) -> None:
        """What is batched is handed over, the backlog gets 2 s to go out, the link says
        goodbye, the store closes."""
        if self.pipeline is None or self.outbox is None:
            return
        await sup.stop("pipeline")
        self.pipeline.flush()
        if self.publisher is not None and self.link is not None:
            if self.link.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self.publisher.drained()
            await sup.stop("publisher")
            if self.northbound is not None and self.link.connected.is_set():
                with contextlib.suppress(LinkError, TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self.northbound.farewell(self.link)
            await self.link.close(goodbye=self.northbound.goodbye()
                                  if self.northbound is not None else None)
            await sup.stop("link")
        await sup.stop("store")
        await self.outbox.close(within=self.config.store.stall_timeout)

    async def run(self, stop: asyncio.Event) -> bool:
        """Serve until ``stop`` is set (False) or a restart on a new config file is asked for
        (True: ``set_config``, a roll-back); ComponentFailed if a critical component gave up."""
        assert self.supervisor is not None, "enter the agent first"
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        restart: asyncio.Future[Any] = asyncio.ensure_future(self.restart_requested.wait())
        failed = self.supervisor.failed
        try:
            await asyncio.wait([stopped, failed, restart], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            restart.cancel()
        if failed.done() and not stop.is_set():
            raise failed.result()
        return self.restart_requested.is_set() and not stop.is_set()

    def _restart_soon(self) -> None:
        # the set_config response goes out first
        asyncio.get_running_loop().call_later(0.5, self.request_restart)

    def request_restart(self) -> None:
        """Stop serving and let the runner start again on the config file (remote config)."""
        self.restart_requested.set()

    async def wait_first_cycle(self) -> None:
        """Until every bus has polled each of its devices once (answering or not)."""
        for bus in self.buses.values():
            await bus.first_cycle_done.wait()

    # ------------------------------------------------------------------ status
    def status(self) -> AgentStatus:
        return build_status(self)

    def state_snapshot(self) -> dict[str, Any]:
        """The whole live picture (get_state, edgegw status)."""
        return self.status().as_dict()

    def link_state(self) -> str:
        return self.link.state.value if self.link is not None else LinkState.CLOSED.value

    def birth_detail(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(self.wall() - self.started_at, 1),
            "clock_trusted": self.clock.trusted,
            "rules_version": self.lighting.version if self.lighting is not None else None,
        }

    # ------------------------------------------------------------------ hooks
    async def _on_connect(self, link: MqttLink) -> None:
        if self.publisher is not None:
            await self.publisher.on_connect(link)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        """A command: answered as the format answers (the dispatcher never raises)."""
        if self.northbound is None or self.link is None:
            return
        await self.northbound.on_message(self.link, topic, payload)

    def _link_refused(self, url: str, reason: str) -> None:
        self.events.emit(EventType.LINK_REFUSED, None, {"url": url, "reason": reason[:300]})

    def _component_failed(self, c: Component, err: BaseException, restarting: bool) -> None:
        self.events.emit(EventType.COMPONENT_FAILED, None, {
            "component": c.name, "error": type(err).__name__, "message": str(err)[:300],
            "restarts": c.restarts, "restarting": restarting, "critical": c.critical})

    def on_event(self, listener: EventListener) -> None:
        self.events.subscribe(listener)

    def emit_event(self, type_: EventType | str, device: str | None,
                   detail: dict[str, Any]) -> None:
        self.events.emit(type_, device, detail)

    def _bus_event(self, event: BusEvent) -> None:
        self.events.emit(event.type, event.device, event.detail)

    def _samples(self, samples: list[Sample]) -> None:
        self.latest.update(samples)
        if self.pipeline is not None:
            self.pipeline.offer(samples)
        if self._log_samples:
            for s in samples:
                if s.quality is Quality.GOOD:
                    log.info("%s.%s = %r", s.device, s.point, s.value)
                else:
                    log.info("%s.%s: %s", s.device, s.point, s.quality)

    async def _write_point(self, device: str, point: str, value: float) -> None:
        await self.commands.write_point(device, point, value)


def log_events(agent: Agent) -> None:
    """Every event in the log, one line each (the CLI's listener)."""
    agent.on_event(lambda e: log.info("event %s %s %s", e.type, e.device or "",
                                      json.dumps(e.detail, default=str)))
