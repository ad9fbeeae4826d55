"""`edgegw demo`: a street on one screen, with no set-up.

A broker (Mosquitto if installed, else an embedded Python broker) on a free loopback port,
simulated devices for a street of N poles (LED drivers on Modbus TCP; environmental sensors,
a water-level sensor and an energy meter on Modbus RTU over a pseudo-terminal), the gateway
agent with the operator's example lighting program, and a live view of what the platform
receives, decoded. The street runs on an accelerated clock (`--speed`) from `--start` (default:
today, half an hour before sunset) so a few minutes show dusk, the night steps and dawn.

This module is command-line only: it imports the simulators, which the agent never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.config import parse_config
from gateway.platform.client import Broker, listen_sized
from gateway.runtime import Agent
from simulators.broker import EmbeddedBroker, MosquittoBroker, start_demo_broker
from simulators.runner import SimHandle, open_spec, street_spec

DEMO_LIGHTING: dict[str, Any] = {
    "failsafe": {"entry_delay_s": 120},
    "programs": {"main-street": {
        "description": "the operator's example: full at dusk, dimmed through the night",
        "steps": [{"at": "sunset-10m", "level": 100}, {"at": "23:00", "level": 60},
                  {"at": "01:00", "level": 40}, {"at": "05:00", "level": 80},
                  {"at": "sunrise+10m", "level": "off"}],
        "calendar": [{"name": "weekend", "nights": ["fri", "sat"],
                      "steps": [{"at": "sunset-10m", "level": 80}, {"at": "01:00", "level": 40},
                                {"at": "05:00", "level": 80},
                                {"at": "sunrise+10m", "level": "off"}]}],
    }},
}


DEMO_ALERTS: dict[str, Any] = {"rules": [
    {"name": "flood_warning", "kind": "threshold", "severity": "warning",
     "point": "water-1/water_level", "above": 25, "clear": 20, "hold": "60s",
     "lighting": {"group": "main-street", "level": 100, "priority": 500}},
    {"name": "flood_alarm", "kind": "threshold", "severity": "alarm",
     "point": "water-1/water_level", "above": 40, "clear": 35,
     "lighting": {"group": "main-street", "pattern": "flash", "level": 100, "off_level": 20,
                  "on_s": 60, "off_s": 60, "priority": 600}},
    {"name": "flood_rising", "kind": "rate", "severity": "warning",
     "point": "water-1/water_level", "rise": 5, "window": "10m", "clear": 2},
    {"name": "air_quality_poor", "kind": "mean", "severity": "warning",
     "point": "env-1/pm25", "above": 55, "clear": 45, "window": "1h"},
]}


@dataclass
class DeviceView:
    values: dict[str, Any] = field(default_factory=dict)
    points: int = 0
    bytes: float = 0.0
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=200))


@dataclass
class View:
    """What the platform side has seen, for the screen."""

    devices: dict[str, DeviceView] = field(default_factory=lambda: defaultdict(DeviceView))
    events: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    messages: int = 0
    telemetry_bytes: int = 0
    points: int = 0
    online: bool | None = None
    last_seq: int | None = None
    gaps: int = 0
    units: dict[tuple[str, str], str] = field(default_factory=dict)   # from the birth

    def add(self, msg: dict[str, Any], size: int, now: float) -> None:
        self.messages += 1
        kind = msg.get("kind")
        if kind == "telemetry":
            pts = msg.get("points", [])
            seq = msg.get("seq")
            if isinstance(seq, int):
                if self.last_seq is not None and seq > self.last_seq + 1:
                    self.gaps += seq - self.last_seq - 1
                self.last_seq = max(seq, self.last_seq or 0)
            self.telemetry_bytes += size
            self.points += len(pts)
            share = size / max(1, len(pts))
            for p in pts:
                dv = self.devices[p["device"]]
                dv.values[p["point"]] = p.get("value")
                dv.points += 1
                dv.bytes += share
                dv.arrivals.append(now)
        elif kind == "event":
            detail = msg.get("detail") or {}
            what = detail.get("group") or msg.get("device") or ""
            self.events.appendleft(f"{msg.get('type')} {what}".strip())
        elif kind == "state":
            self.online = bool(msg.get("online"))
            # the birth's catalogue says each point's unit, as it tells the platform
            cat = (msg.get("detail") or {}).get("catalogue") or {}
            for row in cat.get("points") or []:
                if isinstance(row, list) and len(row) >= 4 and row[3]:
                    self.units[(str(row[0]), str(row[1]))] = str(row[3])


def _fmt(v: Any, unit: str | None = None) -> str:
    text = f"{v:.1f}" if isinstance(v, float) else str(v)
    if unit and v is not None and not isinstance(v, bool):
        text += "%" if unit == "%" else f" {unit}"
    return text


DEVICE_ROWS = 14         # the screen keeps its layout: more devices are summed up in one line


WIDTH = 100              # a fixed width: the columns do not jump between frames
SHOW = {"lamp": ["dim_level", "lamp_power", "lamp_on"],
        "env": ["illuminance", "temperature", "humidity", "pm25", "noise"],
        "water": ["water_level"], "meter": ["voltage", "active_power", "energy"]}


def render(view: View, agent: Agent, sim: SimHandle, broker_label: str) -> Group:
    now = time.monotonic()
    local = sim.world.now().astimezone(sim.world.tz)
    head = Text.assemble(
        ("edgegw demo ", "bold"), f"· broker {broker_label} · street time ",
        (local.strftime("%a %H:%M"), "bold cyan"),
        f" · link {agent.link_state()} · {view.messages} messages · ",
        f"{view.telemetry_bytes / max(1, view.points):.2f} B/point on the wire",
        (" · seq gaps: " + str(view.gaps)) if view.gaps else "")
    groups = Table(title="lighting (decided by the gateway)", title_justify="left",
                   width=WIDTH)
    groups.add_column("group", width=14, no_wrap=True)
    groups.add_column("level", justify="right", width=16, no_wrap=True)
    groups.add_column("reason", no_wrap=True, overflow="ellipsis")
    flashing = {d.group: d.action for d in (agent.alerts.demands if agent.alerts else ())
                if d.action.pattern.value == "flash"}
    if agent.lighting is not None:
        for name, g in agent.lighting.snapshot()["groups"].items():
            flash = flashing.get(name) or flashing.get("*")
            if flash is not None:
                level = f"flashing {flash.level:g}/{flash.off_level:g} %"
            else:
                level = f"{g['level']:g} %" if g["level"] is not None else "-"
            groups.add_row(name, level, g["reason"] or "")
    devices = Table(title="what the platform receives", title_justify="left", width=WIDTH)
    devices.add_column("device", width=10, no_wrap=True)
    devices.add_column("last values", no_wrap=True, overflow="ellipsis")
    devices.add_column("msg/s", justify="right", width=6, no_wrap=True)
    devices.add_column("B/point", justify="right", width=7, no_wrap=True)
    names = sorted(view.devices, key=_natural)
    for name in names[:DEVICE_ROWS]:
        dv = view.devices[name]
        keys = next((v for k, v in SHOW.items() if name.startswith(k)), None)
        shown = {k: dv.values[k] for k in (keys or list(dv.values)[:3]) if k in dv.values}
        recent = [t for t in dv.arrivals if now - t <= 10]
        rate = len({round(t, 1) for t in recent}) / 10
        devices.add_row(name, "  ".join(f"{k}={_fmt(v, view.units.get((name, k)))}"
                                        for k, v in shown.items()),
                        f"{rate:.1f}", f"{dv.bytes / max(1, dv.points):.2f}")
    if len(names) > DEVICE_ROWS:
        rest = names[DEVICE_ROWS:]
        pts = sum(view.devices[n].points for n in rest)
        devices.add_row(f"+{len(rest)} more", f"{pts} points received from them", "", "")
    alerts = Table(title="active alerts (raised at the edge)", title_justify="left",
                   width=WIDTH)
    alerts.add_column("alert")
    alerts.add_column("severity")
    alerts.add_column("device")
    alerts.add_column("since")
    if agent.alerts is not None:
        for a in agent.alerts.snapshot():
            since = dt.datetime.fromtimestamp(a.get("since", 0) / 1000, sim.world.tz)
            alerts.add_row(str(a.get("type")), str(a.get("severity")), str(a.get("device")),
                           since.strftime("%H:%M"))
    events = Text("events: " + (" · ".join(view.events) or "none yet"), style="yellow")
    return Group(head, groups, alerts, devices, events)


def _natural(name: str) -> tuple[str, int]:
    base, _, num = name.rpartition("-")
    return (base, int(num)) if num.isdigit() else (name, 0)


async def run_demo(*, poles: int, duration: float | None, speed: float,
                   start: dt.datetime | None, console: Console,
                   storm_after: float | None = None, pollution_after: float | None = None,
                   web: bool = True, open_browser: bool = True) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    world: dict[str, Any] = {"lat": 10.7769, "lon": 106.7009, "timezone": "Asia/Ho_Chi_Minh",
                             "speed": speed}
    if start is None:
        start = default_start(world)
    world["start"] = start.isoformat()
    with tempfile.TemporaryDirectory(prefix="edgegw-demo-") as tmp:
        broker = start_demo_broker()
        label = "mosquitto" if isinstance(broker, MosquittoBroker) else "embedded (amqtt)"
        async with broker, open_spec(street_spec(poles, world=world), ephemeral=True) as sim:
            assert isinstance(broker, (MosquittoBroker, EmbeddedBroker))
            page = _demo_web(Path(tmp), console) if web else None
            cfg = demo_config(sim, url=broker.url, store=Path(tmp) / "store.db",
                              location=world, web=page[0] if page else None)
            view = View()
            agent = Agent(cfg, wall_clock=lambda: sim.world.now().timestamp())

            ready = asyncio.Event()

            async def platform() -> None:
                async for msg, size in listen_sized(Broker(broker.url), prefix="city/v1",
                                                    on_ready=ready.set):
                    view.add(msg, size, time.monotonic())

            # the platform listens first, so it sees the gateway's birth and first events
            listener = asyncio.create_task(platform(), name="demo-platform")
            try:
                async with asyncio.timeout(10):
                    await ready.wait()
                async with agent:
                    if page is not None:
                        await _show_web(agent, page[1], console, open_browser=open_browser)
                    if storm_after is not None:
                        _schedule(storm_after, lambda: _storm(sim, speed, view))
                    if pollution_after is not None:
                        _schedule(pollution_after, lambda: _pollution(sim, speed, view))
                    await _screen(view, agent, sim, label, console, stop, duration)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    console.print(f"demo stopped: {view.messages} messages received, {view.points} points, "
                  f"{view.telemetry_bytes / max(1, view.points):.2f} bytes per point, "
                  f"{view.gaps} seq gaps")
    return 0


async def _screen(view: View, agent: Agent, sim: SimHandle, label: str, console: Console,
                  stop: asyncio.Event, duration: float | None) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    if console.is_terminal:
        with Live(render(view, agent, sim, label), console=console, refresh_per_second=4,
                  screen=False) as live:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
                live.update(render(view, agent, sim, label))
        return
    # not a terminal (CI, a pipe): a plain summary every few seconds
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        remaining = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await stop.wait()
        levels = ""
        if agent.lighting is not None:
            levels = ", ".join(f"{n} {g['level']:g}% ({g['reason']})" for n, g in
                               agent.lighting.snapshot()["groups"].items()
                               if g["level"] is not None)
        local = sim.world.now().astimezone(sim.world.tz)
        console.print(f"[{local:%H:%M}] link {agent.link_state()}, "
                      f"{view.messages} messages, {len(view.devices)} devices reporting, "
                      f"{view.telemetry_bytes / max(1, view.points):.2f} B/point; {levels}")


def _schedule(after: float, action: Any) -> None:
    asyncio.get_running_loop().call_later(after, action)


def _storm(sim: SimHandle, speed: float, view: View) -> None:
    """A storm that plays out in about two minutes of real time, whatever the speed."""
    from simulators.scenarios import apply_scenario, storm

    apply_scenario(sim.world, storm().fit(120 * speed))
    view.events.appendleft("STORM started (simulated)")


def _pollution(sim: SimHandle, speed: float, view: View) -> None:
    from simulators.scenarios import apply_scenario, pollution_episode

    apply_scenario(sim.world, pollution_episode().fit(180 * speed))
    view.events.appendleft("POLLUTION episode started (simulated)")


def default_start(world: dict[str, Any]) -> dt.datetime:
    """Today, half an hour before sunset at the demo's location."""
    from zoneinfo import ZoneInfo

    from policies.lighting import Location, sun_times

    tz = ZoneInfo(world["timezone"])
    today = dt.datetime.now(tz).date()
    loc = Location(lat=world["lat"], lon=world["lon"], timezone=world["timezone"])
    sun = sun_times(loc, today)
    sunset = sun.sunset or dt.datetime.combine(today, dt.time(18, 0), tz)
    return sunset - dt.timedelta(minutes=30)


DEMO_WEB_USER = "demo"


def _demo_web(tmp: Path, console: Console) -> tuple[dict[str, Any], str] | None:
    """The page's section for the demo (a free loopback port, a one-off account whose
    password is printed: for the demo only) and that password; None without the web extra."""
    import secrets
    import socket

    try:
        import aiohttp  # noqa: F401

        from gateway.web.accounts import Role, set_account
    except ImportError:
        console.print("[yellow]the technician's page needs the web extra: pip install "
                      "'edgegw[web]'[/yellow]")
        return None
    password = secrets.token_urlsafe(9)
    users = tmp / "web-users"
    set_account(users, DEMO_WEB_USER, Role.TECHNICIAN, password)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"listen": f"127.0.0.1:{port}", "users": str(users)}, password


async def _show_web(agent: Agent, password: str, console: Console, *,
                    open_browser: bool) -> None:
    import os
    import webbrowser

    web = agent.web
    if web is None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while not web.bound_ports():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    if not web.bound_ports():
        console.print("[yellow]the technician's page did not start (see the log)[/yellow]")
        return
    url = f"https://localhost:{web.bound_ports()[0]}/"
    console.print(f"[bold]technician's page:[/bold] {url}   log in as [bold]{DEMO_WEB_USER}"
                  f"[/bold], password [bold]{password}[/bold] (this demo only)")
    console.print(f"  self-signed certificate, SHA-256 {web.fingerprint}: the browser warns; "
                  "compare the fingerprint, then accept it")
    if open_browser and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        with contextlib.suppress(Exception):
            await asyncio.to_thread(webbrowser.open, url)


def demo_config(sim: SimHandle, *, url: str, store: Path, location: dict[str, Any],
                web: dict[str, Any] | None = None) -> Any:
    section = sim.gateway_section(poll=2.0)
    lamps = [d["name"] for d in section["devices"] if d["name"].startswith("lamp-")]
    lighting = dict(DEMO_LIGHTING)
    lighting["groups"] = [{
        "name": "main-street", "program": "main-street",
        "outputs": [{"device": n, "point": "dim_level", "watts": 60} for n in lamps],
        "limits": {"min_level": 20},
        "illuminance": {"device": "env-1", "point": "illuminance", "on_below": 15,
                        "off_above": 30, "hold_s": 120},
    }]
    raw = {
        "gateway": {"id": "gw-demo", "site": "demo-street", "groups": ["demo"],
                    "location": {k: location[k] for k in ("lat", "lon", "timezone")},
                    "has_rtc": True},
        "mqtt": {"url": url, "topic_prefix": "city/v1", "reconnect_min": 0.2},
        "telemetry": {"batch_interval": 1.0},
        "store": {"path": str(store)},
        **section,
        "lighting": lighting,
        "alerts": DEMO_ALERTS,
    }
    if web is not None:
        raw["web"] = web
    return parse_config(yaml.safe_dump(raw), source="demo")
