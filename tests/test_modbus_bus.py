"""The Modbus driver end to end against simulated devices over real transports (TCP sockets
and pseudo-terminals): values, the planner's request count, faults, backoff, writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import DeviceException, DeviceTimeout, WriteRejected
from drivers.modbus.bus import (
    BusEvent,
    BusKind,
    BusSettings,
    DeviceSettings,
    Health,
    ModbusBus,
)
from drivers.modbus.registers import DataType, PointSpec, Table
from drivers.sample import Quality, Sample
from gateway.config import load_config, parse_config
from gateway.runtime import Agent
from simulators.devices import Fault, SimulatedDevice
from simulators.modbus_server import ModbusRtuSim, ModbusTcpSim
from simulators.runner import open_spec

ROOT = Path(__file__).resolve().parent.parent


def led(unit: int, name: str) -> SimulatedDevice:
    return SimulatedDevice.from_profile("led-driver", unit=unit, name=name)


def settings_for(dev: SimulatedDevice, *, poll: float = 0.2, max_gap: int = 16) -> DeviceSettings:
    return DeviceSettings(name=dev.name, unit=dev.unit, poll=poll,
                          points=tuple(dev.points.values()), max_gap=max_gap)


class Collector:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.events: list[BusEvent] = []
        self.changed = asyncio.Event()

    def on_samples(self, batch: list[Sample]) -> None:
        self.samples.extend(batch)
        self.changed.set()

    def on_event(self, event: BusEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def polls_of(self, device: str, point: str) -> int:
        return sum(1 for s in self.samples if (s.device, s.point) == (device, point)
                   and s.quality is Quality.GOOD)

    async def until(self, predicate: Any, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def tcp_street() -> AsyncIterator[ModbusTcpSim]:
    async with ModbusTcpSim([led(1, "lamp-1"), led(2, "lamp-2"), led(3, "lamp-3")]) as sim:
        yield sim


def tcp_bus(sim: ModbusTcpSim, *, timeout: float = 0.2, retries: int = 0) -> BusSettings:
    return BusSettings(name="lan", kind=BusKind.TCP, host="127.0.0.1", port=sim.port,
                       timeout=timeout, retries=retries, backoff_cap=2.0)


async def test_example_street_reads_every_point_with_correct_values() -> None:
    """examples/street.yaml against examples/sim-street.yaml: TCP and RTU, every point."""
    async with open_spec(ROOT / "examples" / "sim-street.yaml", ephemeral=True) as sim:
        cfg = load_config(ROOT / "examples" / "street.yaml")
        raw = cfg.model_dump(mode="json", exclude={"source", "lighting", "alerts"})
        # same devices and units; the ports are the simulator's (OS-assigned, a pty)
        rtu = sim.rtu[0]
        tcp = sim.tcp[0]
        for bus in raw["buses"]:
            if bus["type"] == "modbus-rtu":
                bus["port"] = rtu.client_path
            else:
                bus["port"] = tcp.port
        cfg = parse_config_dict(raw)
        for d in sim.devices.values():   # pin every value so the comparison is exact
            d.refresh(force=True)
            for name in d.points:
                d.set(name, d.peek(name))
        async with Agent(cfg, uplink=False) as agent:
            await asyncio.wait_for(agent.wait_first_cycle(), 10)
            total = 0
            for dev_cfg in cfg.devices:
                simdev = sim.devices[dev_cfg.name]
                for p in dev_cfg.points:
                    got = agent.latest.get(dev_cfg.name, p.name)
                    assert got is not None, f"{dev_cfg.name}.{p.name} never read"
                    assert got.quality is Quality.GOOD
                    assert got.value == simdev.peek(p.name), f"{dev_cfg.name}.{p.name}"
                    total += 1
            assert total == 40


def parse_config_dict(raw: dict[str, Any]) -> Any:
    import yaml

    return parse_config(yaml.safe_dump(raw))


async def test_planner_reads_a_device_in_the_fewest_requests(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-1")
    col = Collector()
    dev = settings_for(lamp, poll=60)
    async with ModbusBus(tcp_bus(tcp_street), [dev], on_samples=col.on_samples) as bus:
        await asyncio.wait_for(bus.first_cycle_done.wait(), 5)
    # led-driver: holding 0, input 0..4 (6 overlapping/adjacent points), discrete 0 -> 3 reads
    assert lamp.requests == 3
    assert bus.stats.requests == 3
    assert len(dev.points) == 8       # a per-point gateway would send 8


async def test_rtu_over_a_pty_reads_and_writes() -> None:
    env = SimulatedDevice.from_profile("env-sensor", unit=1, name="env-1")
    drv = led(2, "lamp-9")
    async with ModbusRtuSim([env, drv]) as sim:
        col = Collector()
        s = BusSettings(name="rs485-1", kind=BusKind.RTU, serial_port=sim.client_path,
                        timeout=0.3, retries=1)
        async with ModbusBus(s, [settings_for(env, poll=60), settings_for(drv, poll=60)],
                             on_samples=col.on_samples) as bus:
            await asyncio.wait_for(bus.first_cycle_done.wait(), 5)
            temps = [x for x in col.samples if x.point == "temperature"]
            assert temps and temps[0].quality is Quality.GOOD
            assert temps[0].value == env.peek("temperature")
            await bus.write_point("lamp-9", "dim_level", 40)
            assert drv.peek("dim_level") == 40
            power = await bus.read_point("lamp-9", "lamp_power")
            assert power.value == drv.peek("lamp_power")
            assert 20 < float(power.value or 0) < 28        # 60 W x 40 %, within noise


async def test_write_is_range_checked_before_the_wire(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-1")
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street), [settings_for(lamp, poll=60)],
                         on_samples=col.on_samples) as bus:
        with pytest.raises(WriteRejected, match="above the maximum 100"):
            await bus.write_point("lamp-1", "dim_level", 150)
        with pytest.raises(WriteRejected, match="not writable"):
            await bus.write_point("lamp-1", "lamp_power", 5)
        assert lamp.writes == []


async def test_dead_device_is_backed_off_and_others_keep_their_rate(
        tcp_street: ModbusTcpSim) -> None:
    lamps = [tcp_street.device(n) for n in ("lamp-1", "lamp-2", "lamp-3")]

    async def run(dead: bool) -> tuple[int, Collector]:
        col = Collector()
        lamps[2].fault = Fault.silent() if dead else Fault()
        lamps[2].reset_counters()
        devs = [settings_for(d, poll=0.1) for d in lamps]
        async with ModbusBus(tcp_bus(tcp_street, timeout=0.15), devs,
                             on_samples=col.on_samples, on_event=col.on_event):
            await asyncio.sleep(3.0)
        return col.polls_of("lamp-1", "dim_level") + col.polls_of("lamp-2", "dim_level"), col

    healthy, _ = await run(dead=False)
    with_dead, col = await run(dead=True)
    # the dead device costs a timeout only once per backoff period, not every poll
    assert with_dead >= 0.9 * healthy, (with_dead, healthy)
    offline = [e for e in col.events if e.type == "device_offline"]
    assert [e.device for e in offline] == ["lamp-3"]          # reported once
    attempts = lamps[2].requests
    assert attempts < 10, attempts                            # 30 polls due, few attempts
    timeouts = [s for s in col.samples if s.device == "lamp-3"]
    assert timeouts and all(s.quality is Quality.TIMEOUT for s in timeouts)


async def test_device_back_online_is_reported_once(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-1")
    lamp.fault = Fault.silent()
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street, timeout=0.1), [settings_for(lamp, poll=0.05)],
                         on_samples=col.on_samples, on_event=col.on_event) as bus:
        await col.until(lambda: any(e.type == "device_offline" for e in col.events))
        assert bus.health("lamp-1") is Health.OFFLINE
        lamp.fault = Fault()
        await col.until(lambda: any(e.type == "device_online" for e in col.events))
        assert bus.health("lamp-1") is Health.ONLINE
    assert [e.type for e in col.events] == ["device_offline", "device_online"]


async def test_exception_code_becomes_quality_and_one_event(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-2")
    lamp.fault = Fault.exception(4)
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street), [settings_for(lamp, poll=0.05)],
                         on_samples=col.on_samples, on_event=col.on_event) as bus:
        await col.until(lambda: sum(1 for s in col.samples if s.point == "dim_level") >= 3)
        with pytest.raises(DeviceException, match=r"exception 4 \(device failure\)"):
            await bus.read_point("lamp-2", "dim_level")
    bad = [s for s in col.samples if s.point == "dim_level"]
    assert all(s.quality is Quality.EXCEPTION and s.value is None for s in bad)
    exc_events = [e for e in col.events if e.type == "modbus_exception"]
    # one per refused read of the plan (3 reads), not one per poll
    assert len(exc_events) == 3
    assert {e.detail["code"] for e in exc_events} == {4}
    assert bus.health("lamp-2") is Health.ONLINE      # it answers: not offline


async def test_garbage_answers_count_as_timeouts(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-3")
    lamp.fault = Fault.garbage()
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street), [settings_for(lamp, poll=60)],
                         on_samples=col.on_samples, on_event=col.on_event) as bus:
        with pytest.raises(DeviceTimeout, match=r"unit 3 .*timed out"):
            await bus.read_point("lamp-3", "dim_level")
        lamp.fault = Fault()
        sample = await bus.read_point("lamp-3", "dim_level")
        assert sample.value == lamp.peek("dim_level")


async def test_read_over_a_hole_is_split_after_illegal_address() -> None:
    pts = [PointSpec(name="a", table=Table.HOLDING, address=0, type=DataType.UINT16),
           PointSpec(name="b", table=Table.HOLDING, address=10, type=DataType.UINT16)]
    dev = SimulatedDevice(pts, unit=1, name="picky", strict_addresses=True,
                          values={"a": 7, "b": 9})
    async with ModbusTcpSim([dev]) as sim:
        col = Collector()
        async with ModbusBus(tcp_bus(sim), [settings_for(dev, poll=0.05)],
                             on_samples=col.on_samples, on_event=col.on_event) as bus:
            await col.until(lambda: col.polls_of("picky", "b") >= 3)
            plan = bus.devices["picky"].plans[0]
            assert [(r.start, r.count) for r in plan.reads] == [(0, 1), (10, 1)]
        assert {s.value for s in col.samples if s.point == "a" and s.quality is Quality.GOOD} \
            == {7}
        assert not [e for e in col.events if e.type == "modbus_exception"]


async def test_tcp_reconnects_after_the_server_restarts(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-1")
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street), [settings_for(lamp, poll=0.05)],
                         on_samples=col.on_samples, on_event=col.on_event) as bus:
        await col.until(lambda: col.polls_of("lamp-1", "dim_level") >= 2)
        await tcp_street.close()
        await col.until(lambda: any(e.type == "device_offline" for e in col.events))
        before = col.polls_of("lamp-1", "dim_level")
        await tcp_street.start()
        await col.until(lambda: col.polls_of("lamp-1", "dim_level") > before + 2)
        assert bus.health("lamp-1") is Health.ONLINE
        assert bus.stats.reconnects >= 2


async def test_a_caller_that_gives_up_does_not_kill_the_bus(tcp_street: ModbusTcpSim) -> None:
    lamp = tcp_street.device("lamp-1")
    lamp.fault = Fault.slow(0.3)
    col = Collector()
    async with ModbusBus(tcp_bus(tcp_street, timeout=1.0), [settings_for(lamp, poll=60)],
                         on_samples=col.on_samples) as bus:
        await asyncio.wait_for(bus.first_cycle_done.wait(), 5)
        task = asyncio.create_task(bus.read_point("lamp-1", "dim_level"))
        await asyncio.sleep(0.1)            # the read is on the wire now
        task.cancel()
        lamp.fault = Fault()
        sample = await asyncio.wait_for(bus.read_point("lamp-1", "dim_level"), 5)
        assert sample.value == lamp.peek("dim_level")
