"""The lighting loop in the running agent, against simulated LED drivers over Modbus TCP:
outputs driven to the resolved level at start, overrides, clock failsafe, lamp health, rule
updates, relay anti-chatter."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.gpio import PinFactoryName, RelayOutput, make_pin_factory
from drivers.modbus.bus import BusEvent
from gateway.config import Config
from gateway.lighting import RulesRejected
from gateway.runtime import Agent
from gateway.store import Store
from simulators.broker import MosquittoBroker
from simulators.runner import SimHandle, open_spec
from tests.helpers import gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
RULES: dict[str, Any] = {
    "failsafe": {"entry_delay_s": 0},
    "programs": {"night": {"steps": [{"at": "18:00", "level": 100}, {"at": "23:00", "level": 60},
                                     {"at": "06:00", "level": "off"}]}},
    "groups": [{"name": "street", "program": "night",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60},
                            {"device": "lamp-2", "point": "dim_level", "watts": 60}]}],
}


def clock_at(local: str) -> Callable[[], float]:
    """A wall clock that starts at a local Paris time and then runs at real speed."""
    from zoneinfo import ZoneInfo

    start = dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris"))
    t0 = time.time()
    return lambda: start.timestamp() + (time.time() - t0)


def config(sim: SimHandle, tmp_path: Path, *, trusted: bool = True,
           rules: dict[str, Any] | None = None, url: str = "mqtt://127.0.0.1:1") -> Config:
    return gateway_config(sim, broker_url=url, store=tmp_path / "store.db", poll=0.1, extra={
        "gateway": {"id": "gw-l", "location": PARIS, "has_rtc": trusted, "trust_ntp": False},
        "lighting": rules or RULES})


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    # the simulated devices' registers have no change notification: poll them
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_outputs_follow_the_program_from_the_start(tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path)
        async with Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T23:30")) as agent:
            assert agent.lighting is not None
            # written during start, before the first tick
            assert sim.devices["lamp-1"].peek("dim_level") == 60
            assert sim.devices["lamp-2"].peek("dim_level") == 60
            assert sim.devices["lamp-3"].peek("dim_level") == 100     # not in the group
            snap = agent.state_snapshot()["lighting"]["groups"]["street"]
            assert snap["level"] == 60 and snap["reason"] == "program step 23:00"
            # what comes next: the program's step at 06:00 (local), off
            assert snap["next"]["at"].startswith("2026-12-02T06:00:00")
            assert snap["next"]["level"] == 0 and snap["next"]["reason"] == "program step 06:00"


async def test_override_wins_then_expires(tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path)
        async with Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T23:30")) as agent:
            agent.commands.set_override(group="street", level=100, duration_s=1.5, priority=50,
                               source="op-17")
            lamp = sim.devices["lamp-1"]
            await until(lambda: lamp.peek("dim_level") == 100)
            reason = agent.state_snapshot()["lighting"]["groups"]["street"]["reason"]
            assert reason.startswith("override op-17 until")
            await until(lambda: lamp.peek("dim_level") == 60)      # the program takes over
            with pytest.raises(KeyError, match="no lighting group 'nowhere'"):
                agent.commands.set_override(group="nowhere", level=1, duration_s=None, priority=1,
                                   source="x")


async def test_untrusted_clock_goes_failsafe_until_sync_time(tmp_path: Path) -> None:
    events: list[BusEvent] = []
    async with open_spec(SPEC, ephemeral=True) as sim:
        # noon: the program says off; with no trusted clock and no light sensor: full on
        cfg = config(sim, tmp_path, trusted=False)
        agent = Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T12:00"))
        agent.on_event(events.append)
        async with agent:
            lamp = sim.devices["lamp-1"]
            assert lamp.peek("dim_level") == 100
            assert "failsafe" in agent.state_snapshot()["lighting"]["groups"]["street"]["reason"]
            assert any(e.type == "failsafe_entered" for e in events)
            agent.commands.sync_time(epoch_ms=int(time.time() * 1000), set_clock=False)
            await until(lambda: lamp.peek("dim_level") == 0)
            assert any(e.type == "failsafe_left" for e in events)


async def test_lamp_failure_is_reported_once_and_recovery_too(tmp_path: Path) -> None:
    events: list[BusEvent] = []
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path)
        agent = Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T23:30"))
        agent.on_event(events.append)
        async with agent:
            sim.devices["lamp-2"].lamp_failed = True
            await until(lambda: any(e.type == "lamp_failure" for e in events))
            await asyncio.sleep(1.5)                      # still failed: no second event
            failures = [e for e in events if e.type == "lamp_failure"]
            assert len(failures) == 1 and failures[0].device == "lamp-2"
            assert failures[0].detail["level"] == 60
            sim.devices["lamp-2"].lamp_failed = False
            await until(lambda: any(e.type == "lamp_recovered" for e in events))
        assert not [e for e in events if e.type == "lamp_failure" and e.device == "lamp-1"]


async def test_lamp_drawing_power_while_off_is_reported(tmp_path: Path) -> None:
    events: list[BusEvent] = []
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path)
        agent = Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T12:00"))
        agent.on_event(events.append)
        async with agent:
            assert sim.devices["lamp-1"].peek("dim_level") == 0
            sim.devices["lamp-1"].set("lamp_power", 35.0)          # a stuck relay
            await until(lambda: any(e.type == "lamp_unexpected_on" for e in events))


async def test_set_rules_persists_and_bad_rules_keep_the_old(broker: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path, url=broker.url)
        async with Agent(cfg, wall_clock=clock_at("2026-12-01T23:30")) as agent:
            old = agent.commands.get_rules()["version"]
            bad = json.loads(json.dumps(RULES))
            bad["groups"][0]["outputs"][0]["point"] = "lamp_power"     # read-only
            with pytest.raises(RulesRejected, match="is not writable"):
                await agent.commands.set_rules(bad)
            assert agent.commands.get_rules()["version"] == old
            new = json.loads(json.dumps(RULES))
            new["programs"]["night"]["steps"][1]["level"] = 30
            result = await agent.commands.set_rules(new)
            assert result["version"] != old
            await until(lambda: sim.devices["lamp-1"].peek("dim_level") == 30)
        with Store(cfg.store.path) as store:              # kept in the store, one commit
            assert json.loads(store.kv_get("lighting.rules") or b"{}") == new
        async with Agent(cfg, wall_clock=clock_at("2026-12-01T23:30")) as again:
            assert again.commands.get_rules()["version"] == result["version"]   # survives a restart
            assert sim.devices["lamp-1"].peek("dim_level") == 30


def test_relay_anti_chatter() -> None:
    factory = make_pin_factory(PinFactoryName.MOCK)
    relay = RelayOutput("relay-1", 17, factory, min_switch_interval=5.0)
    try:
        assert relay.set_level(100, now=0.0) is True
        assert relay.read_level() == 100
        assert relay.set_level(0, now=1.0) is False       # too soon: deferred
        assert relay.read_level() == 100
        assert relay.set_level(0, now=5.5) is True
        assert relay.read_level() == 0
        assert relay.set_level(0, now=5.6) is True        # no change, no switching
        assert relay.switches == 2
    finally:
        relay.close()


async def test_burning_hours_and_energy_survive_a_restart(broker: MosquittoBroker,
                                                         tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = config(sim, tmp_path, url=broker.url)
        clock = clock_at("2026-12-01T23:30")
        async with Agent(cfg, wall_clock=clock) as agent:
            assert agent.lighting is not None
            agent.lighting.report_every = 0.5
            await until(lambda: agent.lighting is not None
                        and agent.lighting.counters.groups.get("street") is not None
                        and agent.lighting.counters.groups["street"].burning_s >= 2)
            first = agent.lighting.counters.groups["street"]
            # 2 x 60 W at 60 %: 72 W, so energy follows burning time
            assert first.energy_wh == pytest.approx(72 * first.burning_s / 3600, rel=0.05)
        saved = first.burning_s
        async with Agent(cfg, wall_clock=clock) as again:
            assert again.lighting is not None
            restored = again.lighting.counters.groups["street"]
            assert restored.burning_s >= saved                 # carried over, not reset


async def test_counters_follow_a_fast_street_clock() -> None:
    """The demo's street clock runs 60 x real time: burning hours follow it (they used to be
    capped at 5 s a tick, so 11 street hours showed 0.9 h)."""
    async with open_spec(SPEC, ephemeral=True) as sim:
        from zoneinfo import ZoneInfo

        start = dt.datetime(2026, 12, 1, 23, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
        t0 = time.time()

        def street() -> float:
            return start + 60 * (time.time() - t0)

        cfg = gateway_config(sim, broker_url="mqtt://127.0.0.1:1", store=Path("/nonexistent"),
                             extra={"gateway": {"id": "gw-fast", "location": PARIS,
                                                "has_rtc": True}, "lighting": RULES})
        async with Agent(cfg, uplink=False, wall_clock=street) as agent:
            assert agent.lighting is not None
            await until(lambda: agent.lighting is not None
                        and agent.lighting.counters.groups.get("street") is not None
                        and agent.lighting.counters.groups["street"].burning_s >= 120,
                        within=10)
            real = time.time() - t0
            burning = agent.lighting.counters.groups["street"].burning_s
    assert burning >= 30 * real          # street seconds, not real ones


async def test_a_silent_driver_holds_up_no_lamp_that_answers(tmp_path: Path) -> None:
    """Outputs are written all at once, those of a device that stopped answering last: the
    lamps after it in the group get their level at once, not after its timeout."""
    from drivers.sample import Quality
    from simulators.devices import Fault

    rules = json.loads(json.dumps(RULES))
    rules["groups"][0]["outputs"] = [{"device": f"lamp-{i}", "point": "dim_level", "watts": 60}
                                     for i in (1, 2, 3)]        # the silent one in the middle
    async with open_spec(SPEC, ephemeral=True) as sim:
        sim.devices["lamp-2"].fault = Fault.silent()
        slow = {"buses": [{**b, "timeout": 3.0, "retries": 0}
                          for b in sim.gateway_section()["buses"]]}
        cfg = gateway_config(sim, broker_url="mqtt://127.0.0.1:1", store=tmp_path / "store.db",
                             poll=0.1, extra={**slow, "gateway": {
                                 "id": "gw-l", "location": PARIS, "has_rtc": True,
                                 "trust_ntp": False}, "lighting": rules})
        async with Agent(cfg, uplink=False, wall_clock=clock_at("2026-12-01T23:30")) as agent:
            def silent() -> bool:
                got = agent.latest.get("lamp-2", "dim_level")
                return got is not None and got.quality is Quality.TIMEOUT
            await until(silent, within=30)
            await asyncio.sleep(3.5)     # a write sent before it was known silent times out
            lamps = [sim.devices[f"lamp-{i}"] for i in (1, 3)]
            t0 = time.monotonic()
            agent.commands.set_override(group="street", level=35, duration_s=600, priority=50,
                                        source="op-1")
            await until(lambda: all(d.peek("dim_level") == 35 for d in lamps), within=20)
            took = time.monotonic() - t0
            assert agent.lighting is not None
            assert sim.devices["lamp-2"].peek("dim_level") != 35
            # lamp-2 answers again: the lighting's own retry gives it the level (the bus's
            # probe of a unit with a 3 s timeout comes only every few minutes)
            agent.lighting.silent_retry = 1.0
            sim.devices["lamp-2"].fault = Fault()
            await until(lambda: sim.devices["lamp-2"].peek("dim_level") == 35, within=15)
    assert took < 2.0, f"lamp-3 waited {took:.1f} s behind the silent lamp-2 (timeout 3 s)"
