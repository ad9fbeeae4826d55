"""From the config to the drivers: each bus's settings, its devices, the serial readers, the GPIO
pins, and the point catalogue the configured devices start with. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import BusEvent, BusKind, BusSettings, DeviceSettings, ModbusBus
from drivers.sample import Sample
from gateway.codec import PointDef, PointKind, point_def_from_spec
from gateway.config import Config, GpioCfg, ModbusRtuBus, ModbusTcpBus, SerialBus
from gateway.events import EventType

if TYPE_CHECKING:        # pyserial and the framers load only for a config with serial buses
    from drivers.serial.reader import SerialReader, SerialSettings

__all__ = ["catalogue_points", "device_settings", "make_buses", "make_serial",
           "modbus_settings", "serial_settings", "start_gpio"]

SampleSink = Callable[[list[Sample]], None]
EventSink = Callable[[BusEvent], None]


def modbus_settings(bus: ModbusRtuBus | ModbusTcpBus) -> BusSettings:
    if isinstance(bus, ModbusTcpBus):
        return BusSettings(name=bus.name, kind=BusKind.TCP, host=bus.host, port=bus.port,
                           timeout=bus.timeout, retries=bus.retries)
    return BusSettings(name=bus.name, kind=BusKind.RTU, serial_port=bus.port,
                       baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits,
                       bytesize=bus.bytesize, timeout=bus.timeout, retries=bus.retries)


def serial_settings(bus: SerialBus) -> SerialSettings:
    from drivers.serial.reader import Parity, SerialProtocol, SerialSettings

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


def make_buses(cfg: Config, *, on_samples: SampleSink, on_event: EventSink,
               wall_clock: Callable[[], float]) -> dict[str, ModbusBus]:
    return {b.name: ModbusBus(modbus_settings(b), device_settings(cfg, b.name),
                              on_samples=on_samples, on_event=on_event, wall_clock=wall_clock)
            for b in cfg.buses if isinstance(b, (ModbusRtuBus, ModbusTcpBus))}


def make_serial(bus: SerialBus, *, on_samples: SampleSink,
                emit: Callable[[EventType, str | None, dict[str, Any]], None],
                on_time_fix: Callable[[], None]) -> SerialReader:
    """A serial sensor's reader; its line going stale or unavailable is the device going
    offline, its first good frame after that the device coming back."""
    from drivers.serial.reader import LinkState as SerialState
    from drivers.serial.reader import SerialReader

    device = bus.device or bus.name

    def status(state: SerialState, detail: str) -> None:
        if state in (SerialState.STALE, SerialState.UNAVAILABLE):
            emit(EventType.DEVICE_OFFLINE, device,
                 {"bus": bus.name, "state": state.value, "reason": detail})
        elif state is SerialState.ONLINE:
            emit(EventType.DEVICE_ONLINE, device, {"bus": bus.name})

    return SerialReader(serial_settings(bus), on_samples=on_samples, on_status=status,
                        on_time_fix=(lambda utc: on_time_fix()) if bus.protocol == "nmea"
                        else None)


# the agent's own points (gateway/health.py and gateway/lighting.py): in the catalogue from the
# start, so that their first samples do not change it (a new birth with the whole catalogue)
HEALTH_POINTS = (
    ("cpu_percent", PointKind.FLOAT, "%", 1), ("rss_mb", PointKind.FLOAT, "MiB", 1),
    ("disk_free_mb", PointKind.FLOAT, "MiB", 1), ("sd_write_kb", PointKind.FLOAT, "KiB", 1),
    ("cpu_temp_c", PointKind.FLOAT, "degC", 1), ("uptime_s", PointKind.INT, "s", None),
    ("store_backlog_points", PointKind.INT, None, None),
    ("store_backlog_bytes", PointKind.INT, "B", None),
    ("store_memory_points", PointKind.INT, None, None), ("store_ok", PointKind.INT, None, None),
    ("modbus_errors", PointKind.INT, None, None), ("serial_errors", PointKind.INT, None, None),
    ("mqtt_reconnects", PointKind.INT, None, None),
    ("component_restarts", PointKind.INT, None, None),
)
LIGHTING_POINTS = (("level", "%", None), ("burning_h", "h", 4), ("energy_kwh", "kWh", 4))


def catalogue_points(cfg: Config) -> list[PointDef]:
    """The catalogue entries of every configured point, and of the agent's own (health, each
    lighting group's level and counters): ids stable from the start."""
    out = [point_def_from_spec(d.name, p.spec()) for d in cfg.devices for p in d.points]
    out += [PointDef("gateway", name, kind, unit, dec) for name, kind, unit, dec in HEALTH_POINTS]
    groups = (cfg.lighting or {}).get("groups") if isinstance(cfg.lighting, dict) else None
    for g in groups if isinstance(groups, list) else []:
        if isinstance(g, dict) and isinstance(g.get("name"), str):
            out += [PointDef("lighting", f"{g['name']}.{name}", PointKind.FLOAT, unit, dec)
                    for name, unit, dec in LIGHTING_POINTS]
    return out


def start_gpio(cfg: GpioCfg, *, on_input: Callable[[str, str, bool], None]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open the configured GPIO outputs and inputs; ``on_input(name, kind, active)`` is called
    (from the GPIO library's thread on real pins) when an input changes. Returns (outputs, inputs);
    each has ``close()``."""
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
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for o in cfg.outputs:
        if o.kind == "relay":
            outputs[o.name] = RelayOutput(o.name, o.pin, factory, active_high=o.active_high,
                                          min_switch_interval=o.min_switch_interval)
        else:
            outputs[o.name] = PwmOutput(o.name, o.pin, factory, frequency=o.frequency)
    for i in cfg.inputs:
        def changed(active: bool, name: str = i.name, kind: str = i.kind) -> None:
            on_input(name, kind, active)

        inputs[i.name] = DigitalInput(i.name, i.pin, factory, pull_up=i.pull_up,
                                      on_change=changed)
    return outputs, inputs
