"""Alerts in the running agent: a flood during a broker outage reaches the platform before
the replayed backlog, nothing is lost, get_state lists it, and it lights the street."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from gateway.runtime import Agent
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec
from simulators.world import AcceleratedClock
from tests.helpers import Platform, gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
LIGHTING: dict[str, Any] = {
    "programs": {"day-off": {"steps": [{"at": "18:00", "level": 100},
                                       {"at": "06:00", "level": "off"}]}},
    "groups": [{"name": "street", "program": "day-off",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60}]}],
}
ALERTS: dict[str, Any] = {"rules": [
    {"name": "flood_warning", "kind": "threshold", "severity": "warning",
     "point": "water-1/water_level", "above": 25, "clear": 20, "hold": "60s"},
    {"name": "flood_alarm", "kind": "threshold", "severity": "alarm",
     "point": "water-1/water_level", "above": 40, "clear": 35,
     "lighting": {"group": "street", "level": 100, "priority": 600}},
]}


async def test_flood_alarm_during_an_outage_goes_out_before_the_backlog(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    # the street and the gateway share a clock running 10x: a 5-minute outage takes 30 s
    noon = dt.datetime(2026, 6, 10, 5, 0, tzinfo=dt.UTC)        # 12:00 in Ho Chi Minh City
    clock = AcceleratedClock(noon, 10.0)
    async with open_spec(SPEC, ephemeral=True, clock=clock) as sim, \
            Platform(broker.url, client_id="platform-flood") as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db", poll=0.5,
                             batch_interval=0.5, extra={
                                 "gateway": {"id": "gw-f", "has_rtc": True, "location": {
                                     "lat": 10.7769, "lon": 106.7009,
                                     "timezone": "Asia/Ho_Chi_Minh"}},
                                 "lighting": LIGHTING, "alerts": ALERTS})
        agent = Agent(cfg, wall_clock=lambda: clock().timestamp())
        async with agent:
            assert agent.link is not None and agent.pipeline is not None
            await platform.until(lambda: len(platform.seqs()) >= 2)
            lamp = sim.devices["lamp-1"]
            assert lamp.peek("dim_level") == 0                     # noon: off
            await broker.stop()
            before = max(platform.seqs())
            await asyncio.sleep(10)                                # 100 s of street time
            sim.world.water_level = 45.0                           # the street floods
            await asyncio.sleep(20)                                # 200 s more
            snapshot = agent.state_snapshot()
            active = {a["type"] for a in snapshot["alerts"]}
            assert active == {"flood_warning", "flood_alarm"}
            assert lamp.peek("dim_level") == 100                   # alarm: full light
            backlog = agent.outbox.counts.batches if agent.outbox else 0
            assert backlog > 20
            await broker.start()
            await asyncio.wait_for(agent.link.connected.wait(), 15)
            last = agent.pipeline.stats.batches
            await platform.until(lambda: last in platform.seqs(), within=30)
    order = [m for m in platform.messages if m["kind"] in ("event", "telemetry")]
    alarm_at = next(i for i, m in enumerate(order) if m.get("type") == "flood_alarm")
    replay_at = next(i for i, m in enumerate(order)
                     if m["kind"] == "telemetry" and m["seq"] > before)
    assert alarm_at < replay_at, "the alarm waited behind the backlog"
    alarm = order[alarm_at]
    assert alarm["severity"] == "alarm" and alarm["device"] == "water-1"
    seen: list[int] = []
    for s in platform.seqs():
        if s not in seen:
            seen.append(s)
    assert seen == list(range(1, len(seen) + 1))                  # nothing lost, in order
