"""Simulated Modbus devices, driven by a real pymodbus client over real TCP sockets and ptys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.modbus.registers import Table, Value, decode
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from simulators.devices import (
    EnergyMeter,
    Fault,
    FaultMode,
    Refused,
    SimulatedDevice,
)
from simulators.modbus_server import ModbusRtuSim, ModbusTcpSim, PtyLink
from simulators.runner import SimHandle, open_spec, run_spec, street_spec
from simulators.spec import SpecError, load_spec, parse_spec
from simulators.world import ManualClock, World, clear_sky_lux

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.3
# 2025-06-21 in Ho Chi Minh City (UTC+7): solar noon ~11:52 local, sunset ~18:24 local
NOON = datetime(2025, 6, 21, 5, 0, tzinfo=UTC)         # 12:00 local
MIDNIGHT = datetime(2025, 6, 21, 17, 0, tzinfo=UTC)    # 00:00 local (next day)
CIVIL_DUSK = datetime(2025, 6, 21, 11, 49, tzinfo=UTC)  # ~18:49 local: sun ~6 deg below


def make_world(when: datetime = NOON) -> tuple[World, ManualClock]:
    clock = ManualClock(when)
    return World(lat=10.7769, lon=106.7009, timezone="Asia/Ho_Chi_Minh", clock=clock,
                 seed=1), clock


def device(profile: str, unit: int = 1, world: World | None = None, **kw: Any) -> SimulatedDevice:
    return SimulatedDevice.from_profile(profile, unit=unit, name=f"{profile}-{unit}",
                                        world=world or make_world()[0], **kw)


# --------------------------------------------------------------------------------- the world
def test_lux_follows_the_sun() -> None:
    world, clock = make_world(NOON)
    noon = world.illuminance()
    clock.set(CIVIL_DUSK)
    dusk = world.illuminance()
    clock.set(MIDNIGHT)
    night = world.illuminance()
    assert 80_000 < noon <= 100_000
    assert 0.5 < dusk < 20
    assert night < 0.5
    assert clear_sky_lux(0.0) == pytest.approx(400.0)


def test_lux_override_and_script() -> None:
    world, clock = make_world(NOON)
    world.set_lux_script([(60, 5.0), (120, 30_000.0)])
    assert world.illuminance() > 50_000          # before the first step: the sun
    clock.advance(61)
    assert world.illuminance() == 5.0
    clock.advance(60)
    assert world.illuminance() == 30_000.0
    world.lux_override = 2.0
    assert world.illuminance() == 2.0
    world.lux_override = None
    world.set_lux_script(None)
    assert world.illuminance() > 50_000


def test_temperature_has_a_daily_cycle_and_water_a_script() -> None:
    world, clock = make_world(datetime(2025, 6, 21, 7, 0, tzinfo=UTC))   # ~14:00 solar
    afternoon = world.temperature()
    clock.set(datetime(2025, 6, 20, 22, 0, tzinfo=UTC))                  # ~05:00 solar
    dawn = world.temperature()
    assert afternoon - dawn > 6
    assert 0 <= world.water() < 1
    world.set_water_script([(0, 42.0)])
    assert world.water() == pytest.approx(42.0, abs=1)


# ------------------------------------------------------------------------- devices, no wire
def test_led_power_follows_dim_level_and_lamp_failure() -> None:
    lamp = device("led-driver")
    assert lamp.get("dim_level") == 100                    # drivers light at power-up
    assert lamp.get("lamp_power") == pytest.approx(60, rel=0.03)
    lamp.set("dim_level", 40)
    assert lamp.get("lamp_power") == pytest.approx(24, rel=0.03)
    assert lamp.get("lamp_on") is True
    lamp.set("dim_level", 0)
    assert lamp.get("lamp_power") == 0
    assert lamp.get("lamp_on") is False
    lamp.set("dim_level", 80)
    lamp.lamp_failed = True
    assert lamp.get("lamp_power") == 0
    assert lamp.get("fault_lamp_open") is True
    assert lamp.get("fault_bits") == 1
    lamp.lamp_failed = False
    assert lamp.get("fault_bits") == 0
    assert lamp.get("lamp_power") == pytest.approx(48, rel=0.03)


def test_counters_grow_with_world_time() -> None:
    world, clock = make_world(MIDNIGHT)
    lamps = [device("led-driver", unit=i, world=world) for i in (1, 2)]
    meter = device("energy-meter", unit=3, world=world)
    assert isinstance(meter.behaviour, EnergyMeter)
    meter.behaviour.link(lamps)
    hours0 = lamps[0].get("burning_hours")
    energy0 = meter.get("energy")
    assert isinstance(hours0, int) and isinstance(energy0, float)
    assert meter.get("active_power") == pytest.approx(124, rel=0.03)   # 2 x 60 W + 4 W standby
    assert meter.get("voltage") == pytest.approx(230, abs=5)
    assert meter.get("frequency") == pytest.approx(50, abs=0.2)
    assert meter.get("power_factor") == pytest.approx(0.95, abs=0.03)
    for _ in range(30):                  # 30 x 6 min: the accumulators must not lose steps
        clock.advance(360)
        meter.get("energy")
        lamps[0].get("burning_hours")
    assert lamps[0].get("burning_hours") == hours0 + 3
    assert meter.get("energy") == pytest.approx(energy0 + 0.124 * 3, abs=0.01)


def test_env_and_water_sensors_read_the_world() -> None:
    world, _ = make_world(NOON)
    env = device("env-sensor", world=world)
    water = device("water-level", unit=2, world=world)
    assert 15 < float(env.get("temperature")) < 40
    assert 30 < float(env.get("humidity")) <= 100
    assert float(env.get("illuminance")) > 50_000
    assert 35 < float(env.get("noise")) < 80
    assert 0 < float(env.get("pm25")) < float(env.get("pm10")) < 200
    assert float(water.get("water_level")) < 1
    assert water.get("distance") == pytest.approx(2000, abs=10)
    world.water_level = 35.0
    water.refresh(force=True)
    assert water.get("water_level") == pytest.approx(35, abs=1)
    assert water.get("distance") == pytest.approx(1650, abs=10)


def test_set_pins_a_value_until_released_and_writes_are_range_checked() -> None:
    world, _ = make_world(NOON)
    env = device("env-sensor", world=world)
    env.set("temperature", 41.5)
    env.refresh(force=True)
    assert env.get("temperature") == 41.5
    env.release("temperature")
    env.refresh(force=True)
    assert env.get("temperature") != 41.5
    with pytest.raises(KeyError, match="no point 'nope'"):
        env.get("nope")
    lamp = device("led-driver", world=world)
    with pytest.raises(Refused) as err:
        lamp.write_words(Table.HOLDING, 0, [101])            # dim_level max is 100
    assert err.value.code == 3
    assert lamp.get("dim_level") == 100


def test_static_device_holds_what_is_written() -> None:
    dev = device("led-driver", behaviour="static")
    dev.write_words(Table.HOLDING, 0, [55])
    dev.write_words(Table.HOLDING, 500, [7, 8])
    assert dev.get("dim_level") == 55
    assert dev.get("lamp_power") == 0                        # nothing moves it
    assert dev.writes == [("dim_level", 55), (500, 7), (501, 8)]


# ----------------------------------------------------------------------- over a real wire
@dataclass
class Rig:
    sim: ModbusTcpSim | ModbusRtuSim
    client: AsyncModbusTcpClient | AsyncModbusSerialClient


@contextlib.asynccontextmanager
async def serve(kind: str, devices: list[SimulatedDevice], *, client_timeout: float = TIMEOUT,
                **kw: Any) -> AsyncIterator[Rig]:
    """A started simulator of `kind` and a connected pymodbus client (no retries)."""
    timeout = client_timeout
    sim = ModbusTcpSim(devices) if kind == "tcp" else ModbusRtuSim(devices, **kw)
    async with sim:
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(sim, ModbusTcpSim):
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=timeout,
                                          retries=0)
        else:
            client = AsyncModbusSerialClient(sim.client_path, baudrate=sim.baudrate,
                                             timeout=timeout, retries=0)
        assert await client.connect()
        try:
            yield Rig(sim, client)
        finally:
            client.close()


async def read_pdu(client: AsyncModbusTcpClient | AsyncModbusSerialClient, table: Table,
                   address: int, count: int, unit: int) -> ModbusPDU:
    if table is Table.HOLDING:
        return await client.read_holding_registers(address, count=count, device_id=unit)
    if table is Table.INPUT:
        return await client.read_input_registers(address, count=count, device_id=unit)
    if table is Table.COIL:
        return await client.read_coils(address, count=count, device_id=unit)
    return await client.read_discrete_inputs(address, count=count, device_id=unit)


async def read_point(client: AsyncModbusTcpClient | AsyncModbusSerialClient,
                     dev: SimulatedDevice, name: str) -> Value:
    """Read one point over the wire and decode it with the gateway's codec."""
    spec = dev.points[name]
    rr = await read_pdu(client, spec.table, spec.address, spec.width, dev.unit)
    assert not rr.isError(), rr
    values = rr.bits[:1] if spec.table.is_bits else rr.registers
    return decode(spec, [int(v) for v in values])


TRANSPORTS = ["tcp", "rtu"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_values_are_readable_and_plausible(kind: str) -> None:
    world, _ = make_world(NOON)
    env = device("env-sensor", 1, world)
    meter = device("energy-meter", 2, world)
    lamp = device("led-driver", 3, world)
    water = device("water-level", 4, world)
    async with serve(kind, [env, meter, lamp, water]) as rig:
        got = {(d.name, p): await read_point(rig.client, d, p)
               for d in (env, meter, lamp, water) for p in d.points}
    assert 15 < float(got["env-sensor-1", "temperature"]) < 40
    assert float(got["env-sensor-1", "illuminance"]) > 50_000
    assert got["energy-meter-2", "voltage"] == pytest.approx(230, abs=5)
    assert got["energy-meter-2", "frequency"] == pytest.approx(50, abs=0.2)
    assert float(got["energy-meter-2", "energy"]) > 100
    assert got["led-driver-3", "lamp_power"] == pytest.approx(60, rel=0.03)
    assert got["led-driver-3", "lamp_on"] is True
    assert got["led-driver-3", "fault_lamp_open"] is False
    assert float(got["water-level-4", "water_level"]) < 1
    # what the wire says is what the device holds
    assert got["led-driver-3", "burning_hours"] == lamp.peek("burning_hours")


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_lamp_power_follows_a_written_dim_level(kind: str) -> None:
    lamp = device("led-driver", 5)
    async with serve(kind, [lamp]) as rig:
        for level, watts in ((50, 30.0), (0, 0.0), (100, 60.0), (25, 15.0)):
            wr = await rig.client.write_register(0, level, device_id=5)
            assert not wr.isError()
            assert await read_point(rig.client, lamp, "lamp_power") == pytest.approx(
                watts, rel=0.03)
            assert await read_point(rig.client, lamp, "lamp_on") is (level > 0)
        wr = await rig.client.write_register(0, 150, device_id=5)   # above the driver's max
        assert isinstance(wr, ExceptionResponse) and wr.exception_code == 3
    assert lamp.writes == [("dim_level", 50), ("dim_level", 0), ("dim_level", 100),
                           ("dim_level", 25)]


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("fault", [Fault.silent(), Fault.garbage()], ids=["silent", "garbage"])
async def test_no_usable_answer_times_out_then_recovers(kind: str, fault: Fault) -> None:
    lamp = device("led-driver")
    async with serve(kind, [lamp]) as rig:
        lamp.fault = fault
        t0 = time.monotonic()
        with pytest.raises(ModbusIOException):
            await rig.client.read_input_registers(0, count=2, device_id=1)
        assert time.monotonic() - t0 >= TIMEOUT * 0.9
        # the request did arrive; a garbled answer was even sent
        assert lamp.requests == 1
        assert lamp.responses == (1 if fault.mode is FaultMode.GARBAGE else 0)
        lamp.fault = Fault()
        assert await read_point(rig.client, lamp, "lamp_power") == pytest.approx(60, rel=0.03)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_slow_device_answers_late(kind: str) -> None:
    lamp = device("led-driver")
    async with serve(kind, [lamp], client_timeout=1.0) as rig:
        lamp.fault = Fault.slow(0.2)
        t0 = time.monotonic()
        rr = await rig.client.read_input_registers(0, count=2, device_id=1)
        assert not rr.isError()
        assert 0.19 <= time.monotonic() - t0 < 0.9


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_late_answer_is_never_taken_for_the_next_request(kind: str) -> None:
    slow = device("led-driver", 1)                           # input 0 holds 600 (60.0 W)
    other = device("water-level", 2, behaviour="static", values={"water_level": 123.4})
    async with serve(kind, [slow, other], client_timeout=0.5) as rig:
        slow.fault = Fault.slow(0.7)
        other.fault = Fault.slow(0.3)
        with pytest.raises(ModbusIOException):               # gives up at 0.5 s
            await rig.client.read_input_registers(0, count=1, device_id=1)
        # unit 1's late answer lands at ~0.7 s while the client waits for unit 2's (~0.8 s)
        try:
            rr = await rig.client.read_input_registers(0, count=1, device_id=2)
        except ModbusIOException:
            assert kind == "tcp"     # TCP: the late answer's transaction id does not match
        else:
            assert rr.registers == [1234]   # RTU: the client skips the other unit's frame
        assert slow.responses == 1


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_exception_fault_answers_the_code(kind: str) -> None:
    lamp = device("led-driver")
    async with serve(kind, [lamp]) as rig:
        lamp.fault = Fault.exception(6)                     # device busy
        rr = await rig.client.read_input_registers(0, count=2, device_id=1)
        assert isinstance(rr, ExceptionResponse) and rr.exception_code == 6
        lamp.fault = Fault.exception()                      # default: device failure
        wr = await rig.client.write_register(0, 10, device_id=1)
        assert isinstance(wr, ExceptionResponse) and wr.exception_code == 4
        assert lamp.get("dim_level") == 100                 # the refused write changed nothing


async def test_fault_rate_hits_a_fraction_of_requests() -> None:
    lamp = device("led-driver", seed=7)
    async with serve("tcp", [lamp]) as rig:
        lamp.fault = Fault.exception(6, rate=0.5)
        results = [await rig.client.read_input_registers(0, count=1, device_id=1)
                   for _ in range(40)]
    errors = sum(isinstance(r, ExceptionResponse) for r in results)
    assert 8 <= errors <= 32


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_unknown_unit_is_silent_and_counted(kind: str) -> None:
    lamp = device("led-driver")
    async with serve(kind, [lamp]) as rig:
        with pytest.raises(ModbusIOException):
            await rig.client.read_holding_registers(0, count=1, device_id=42)
        assert rig.sim.unknown_requests == 1
        rr = await rig.client.read_holding_registers(0, count=1, device_id=1)
        assert rr.registers == [100]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_counters(kind: str) -> None:
    env = device("env-sensor", 1)
    lamp = device("led-driver", 2)
    async with serve(kind, [env, lamp]) as rig:
        c = rig.client
        await c.read_input_registers(0, count=7, device_id=1)
        await c.read_input_registers(0, count=5, device_id=2)
        await c.read_discrete_inputs(0, count=1, device_id=2)
        await c.write_register(0, 30, device_id=2)
        await c.write_registers(200, [1, 2], device_id=2)
        await c.write_coil(3, True, device_id=2)
        sim = rig.sim
    assert (env.requests, env.responses, env.registers_read) == (1, 1, 7)
    assert dict(env.requests_by_function) == {4: 1}
    assert lamp.requests == 5
    assert dict(lamp.requests_by_function) == {4: 1, 2: 1, 6: 1, 16: 1, 5: 1}
    assert lamp.registers_read == 6                          # 5 registers + 1 bit
    assert lamp.writes == [("dim_level", 30), (200, 1), (201, 2), (3, True)]
    assert (sim.requests, sim.responses, sim.unknown_requests) == (6, 6, 0)
    lamp.reset_counters()
    assert (lamp.requests, lamp.registers_read, lamp.writes) == (0, 0, [])


async def test_out_of_range_and_strict_addresses() -> None:
    loose = device("led-driver", 1)
    strict = device("led-driver", 2, strict_addresses=True)
    async with serve("tcp", [loose, strict]) as rig:
        c = rig.client
        gap = await c.read_input_registers(0, count=20, device_id=1)    # unmapped reads as 0
        assert gap.registers[5:] == [0] * 15
        rr = await c.read_input_registers(0, count=20, device_id=2)
        assert isinstance(rr, ExceptionResponse) and rr.exception_code == 2
        rr = await c.read_holding_registers(65530, count=10, device_id=1)
        assert isinstance(rr, ExceptionResponse) and rr.exception_code == 2
        ok = await c.read_input_registers(0, count=5, device_id=2)
        assert not ok.isError()


async def test_rtu_wire_time_is_kept() -> None:
    lamp = device("led-driver")
    async with serve("rtu", [lamp], client_timeout=1.0, baudrate=9600, wire_time=True) as rig:
        await rig.client.read_holding_registers(0, count=10, device_id=1)   # warm up
        t0 = time.monotonic()
        for _ in range(5):
            rr = await rig.client.read_holding_registers(0, count=10, device_id=1)
            assert not rr.isError()
        per_read = (time.monotonic() - t0) / 5
    # 8-byte request + 25-byte answer + two 3.5-character silences, 10 bits a character
    expected = (8 + 25 + 7) * 10 / 9600
    assert expected * 0.95 <= per_read < expected + 0.06


async def test_close_is_clean_with_a_slow_request_in_flight() -> None:
    lamp = device("led-driver")
    sim = ModbusTcpSim([lamp])
    await sim.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
    await client.connect()
    lamp.fault = Fault.slow(30)

    async def read() -> ModbusPDU:
        return await client.read_input_registers(0, count=1, device_id=1)

    pending = asyncio.create_task(read())
    await sim.wait_requests(1, unit=1)     # the request reached the device
    t0 = time.monotonic()
    await sim.close()
    await sim.close()              # twice is fine
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(ModbusIOException):
        await pending
    client.close()
    probe = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0)
    assert not await probe.connect()                         # nothing listens any more
    probe.close()


async def test_a_closed_tcp_sim_restarts_on_the_same_port() -> None:
    lamp = device("led-driver")
    sim = ModbusTcpSim([lamp])
    async with sim:
        port = sim.port
    async with sim:                                   # the device comes back where it was
        assert sim.port == port
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT, retries=0)
        assert await client.connect()
        assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [100]
        client.close()


async def test_a_taken_port_is_an_os_error() -> None:
    async with ModbusTcpSim([device("led-driver")]) as first:
        second = ModbusTcpSim([device("led-driver")], port=first.port)
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}: cannot listen"):
            await second.start()
        await second.close()


# ----------------------------------------------------------------------------------- ptys
def test_pty_link_copies_both_ways_and_symlinks(tmp_path: Path) -> None:
    link_path = tmp_path / "var" / "rs485-1"
    with PtyLink(link_path=link_path) as link:
        assert os.path.realpath(link_path) == link.client_path
        dev = os.open(link.device_path, os.O_RDWR | os.O_NOCTTY)
        cli = os.open(str(link_path), os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(cli, b"\x01\x03ping")
            assert _read_exactly(dev, 6) == b"\x01\x03ping"
            os.write(dev, b"pong")
            assert _read_exactly(cli, 4) == b"pong"
            link.unplug()
            assert not link_path.exists() and not link.plugged
            link.replug()
            assert os.path.realpath(link_path) == link.client_path
        finally:
            os.close(dev)
            os.close(cli)
        link.close()
    assert not link_path.exists()
    link.close()                                             # twice is fine


def _read_exactly(fd: int, n: int) -> bytes:
    import select

    out = b""
    deadline = time.monotonic() + 2
    while len(out) < n:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"got {out!r} of {n} bytes")
        out += os.read(fd, n - len(out))
    return out


def test_pty_link_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "ttyX"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        PtyLink(link_path=path)
    assert path.read_text() == "keep me"


# ---------------------------------------------------------------------------------- specs
async def test_example_spec_serves_the_example_config() -> None:
    spec = load_spec(ROOT / "examples" / "sim-street.yaml")
    cfg = load_config(ROOT / "examples" / "street.yaml")
    served = {(d.device_name, d.unit, d.profile) for s in spec.servers for d in s.devices}
    wanted = {(d.name, d.unit, (d.profile or "").removeprefix("builtin:"))
              for d in cfg.devices}
    assert served == wanted
    lan = cfg.bus("lan")
    rs485 = cfg.bus("rs485-1")
    assert [(s.type, getattr(s, "port", None), getattr(s, "link", None)) for s in spec.servers
            ] == [("rtu", None, rs485.port), ("tcp", lan.port, None)]  # type: ignore[union-attr]
    async with open_spec(spec, ephemeral=True) as sim:
        assert sim.tcp[0].port not in (0, 5020)
        assert sim.rtu[0].link_path is None
        lamp3 = sim.devices["lamp-3"]
        async with contextlib.AsyncExitStack() as stack:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.tcp[0].port, timeout=TIMEOUT,
                                          retries=0)
            stack.callback(client.close)
            assert await client.connect()
            assert await read_point(client, lamp3, "serial_number") == "LD3-0042"
        meter = sim.devices["meter-1"]
        assert meter.get("active_power") == pytest.approx(184, rel=0.05)   # 3 lamps + standby
        lines = sim.describe()
        assert lines[0].startswith("modbus-rtu /dev/pts/") and "3=meter-1" in lines[0]
        assert lines[1].startswith("modbus-tcp 127.0.0.1:") and "1=lamp-1" in lines[1]


async def test_gateway_section_is_a_valid_config(tmp_path: Path) -> None:
    spec = street_spec(6, env_every=3, link=str(tmp_path / "rs485"))
    async with open_spec(spec) as sim:
        section = sim.gateway_section(poll=5)
        text = yaml.safe_dump({"gateway": {"id": "gw-test"}, **section})
        cfg = parse_config(text)
        assert [d.name for d in cfg.devices] == [
            "env-1", "env-2", "water-1", "meter-1", *(f"lamp-{i}" for i in range(1, 7))]
        assert cfg.bus("sim-rtu-1").port == str(tmp_path / "rs485")  # type: ignore[union-attr]
        assert cfg.bus("sim-tcp-1").port == sim.tcp[0].port          # type: ignore[union-attr]
        assert str((tmp_path / "rs485").resolve()) == sim.rtu[0].client_path
    assert not (tmp_path / "rs485").exists()


async def test_run_spec_serves_until_stopped() -> None:
    ready: list[SimHandle] = []
    stop = asyncio.Event()

    def on_ready(handle: SimHandle) -> None:
        ready.append(handle)
        stop.set()

    await asyncio.wait_for(run_spec(ROOT / "examples" / "sim-street.yaml", on_ready=on_ready,
                                    stop=stop, ephemeral=True), 5)
    assert set(ready[0].devices) == {"env-1", "water-1", "meter-1", "lamp-1", "lamp-2", "lamp-3"}
    raw = {"world": {"water_level": 12.0},
           "servers": [{"type": "tcp", "port": 0, "devices": [
               {"unit": 1, "profile": "water-level"},
               {"unit": 2, "profile": "water-level", "name": "w2", "pin": {"water_level": 35}}]}]}
    async with run_spec(raw) as handle:
        assert handle.tcp[0].port > 0
        assert handle.devices["water-level-1"].get("water_level") == pytest.approx(12, abs=1)
        handle.devices["w2"].refresh(force=True)
        assert handle.devices["w2"].get("water_level") == 35


SPEC_OK = """\
servers:
  - type: tcp
    port: 0
    devices:
      - {unit: 1, profile: led-driver, name: lamp-1}
"""


@pytest.mark.parametrize(("text", "where", "message"), [
    (SPEC_OK.replace("port: 0", "prot: 0"), "line 3: servers[0].prot", "unknown key"),
    (SPEC_OK.replace("type: tcp", "type: udp"), "line 2: servers[0]", "'udp' is not one of"),
    (SPEC_OK.replace("led-driver,", "led-drivr,"), "line 5: servers[0].devices[0].profile",
     "unknown builtin profile 'led-drivr'"),
    (SPEC_OK + "      - {unit: 1, profile: env-sensor}\n", "line 6: servers[0].devices[1].unit",
     "unit 1 is used twice"),
    (SPEC_OK.replace("name: lamp-1}", "name: lamp-1, values: {dim_levl: 5}}"),
     "line 5: servers[0].devices[0].values.dim_levl", "no point 'dim_levl'"),
    (SPEC_OK + "      - {unit: 2, profile: energy-meter, feeds: [lamp-9]}\n",
     "line 6: servers[0].devices[1].feeds[0]", "no device named 'lamp-9'"),
    (SPEC_OK + "      - {unit: 2, profile: env-sensor, rated_power: 60}\n",
     "line 6: servers[0].devices[1].rated_power", "only led-driver"),
    ("servers: []\n", "line 1: servers", "at least 1 item"),
])
def test_spec_errors_name_line_and_field(text: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(text, source="sim.yaml")
    assert isinstance(err.value, ConfigError)
    assert f"sim.yaml: {where}: " in str(err.value)
    assert message in str(err.value)


def test_street_spec_sizes() -> None:
    spec = street_spec(10)
    rtu, tcp = spec.servers
    assert [d.device_name for d in rtu.devices] == ["env-1", "env-2", "env-3", "water-1",
                                                     "meter-1"]
    assert len(tcp.devices) == 10
    assert rtu.devices[-1].feeds == [f"lamp-{i}" for i in range(1, 11)]
    with pytest.raises(ValueError, match=r"1\.\.247 poles"):
        street_spec(0)
