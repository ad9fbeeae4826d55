"""Simulated Modbus field devices: a register map, live values from the `World`, and faults.

A `SimulatedDevice` holds the four Modbus tables of one unit (holding and input registers as
16-bit words, coils and discrete inputs as bits, addresses 0..65535) and a register map of
`PointSpec`s. A `Behaviour` keeps the registers plausible: before every read it is asked to
update the values from the world and from what clients wrote (a written dim level changes the
lamp power read back). Protocol servers (`simulators.modbus_server`) read and write the tables and
count requests; the device itself knows nothing of pymodbus.

Behaviours, by the builtin profile they play:

======================  =====================================================================
``led-driver``          `lamp_power` = rated power x `dim_level` / 100 (0 at level 0), `lamp_on`,
                        `fault_lamp_open` when ``fault.lamp_failed`` (then no power), a driver
                        temperature that lags the load, `burning_hours` that grow while lit
``energy-meter``        ~230 V, ~50 Hz, PF ~0.95, `active_power` = the linked lamps' power plus
                        the cabinet's standby (or a day/night default load), `energy` (kWh) grows
``env-sensor``          temperature, humidity, illuminance, noise, PM2.5, PM10 from the world
``water-level``         the world's water level, the matching echo distance, status 0
``static``              nothing moves: registers hold whatever was written or set
======================  =====================================================================

Scripting: ``device.set("water_level", 35.0)`` stores a value; on a point that is not writable
over Modbus it also *pins* it, so the behaviour stops moving it until ``device.release(name)``.
``device.fault = Fault.silent()`` (or ``slow``, ``exception``, ``garbage``) changes how the
device answers; ``Fault(lamp_failed=True)`` breaks an LED driver's lamp.
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from drivers.modbus.registers import (
    INT_RANGES,
    DataType,
    PointSpec,
    Table,
    Value,
    decode,
    encode,
)
from gateway.config import PointCfg, builtin_profiles, load_profile
from simulators.world import World

ADDRESS_SPACE = 65536

# Modbus exception codes a device can refuse a request with
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4
_VALID_EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})


class Refused(Exception):
    """A request the device refuses with a Modbus exception `code` (2 = address, 3 = value)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------- faults
class FaultMode(StrEnum):
    """How a device answers (or does not) on the wire."""

    NONE = "none"            # answers normally
    SILENT = "silent"        # no answer at all, as if unplugged from the bus
    SLOW = "slow"            # answers after `delay` seconds
    EXCEPTION = "exception"  # answers a Modbus exception response with `code`
    GARBAGE = "garbage"      # answers bytes that are not a valid frame


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault to inject: a wire `mode` (hitting a `rate` fraction of requests) and lamp state.

    ``Fault.silent()``, ``Fault.slow(0.5)``, ``Fault.exception(6)``, ``Fault.garbage()`` and
    ``Fault(lamp_failed=True)`` cover the common cases; ``Fault()`` is a healthy device.
    """

    mode: FaultMode = FaultMode.NONE
    delay: float = 1.0          # SLOW: seconds before the answer
    code: int = DEVICE_FAILURE  # EXCEPTION: the Modbus exception code
    rate: float = 1.0           # fraction of requests affected, 0..1
    lamp_failed: bool = False   # LED drivers: the lamp is open-circuit (no power, fault bit set)

    def __post_init__(self) -> None:
        if self.code not in _VALID_EXCEPTION_CODES:
            raise ValueError(f"fault code {self.code} is not a Modbus exception code "
                             f"({', '.join(map(str, sorted(_VALID_EXCEPTION_CODES)))})")
        if self.delay < 0:
            raise ValueError(f"fault delay must be >= 0, got {self.delay}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {self.rate}")

    @classmethod
    def silent(cls, *, rate: float = 1.0) -> Fault:
        return cls(FaultMode.SILENT, rate=rate)

    @classmethod
    def slow(cls, delay: float, *, rate: float = 1.0) -> Fault:
        return cls(FaultMode.SLOW, delay=delay, rate=rate)

    @classmethod
    def exception(cls, code: int = DEVICE_FAILURE, *, rate: float = 1.0) -> Fault:
        return cls(FaultMode.EXCEPTION, code=code, rate=rate)

    @classmethod
    def garbage(cls, *, rate: float = 1.0) -> Fault:
        return cls(FaultMode.GARBAGE, rate=rate)


# ---------------------------------------------------------------------------------- behaviours
class Behaviour:
    """What makes a device's values move. The base class is the `static` behaviour."""

    name: ClassVar[str] = "static"

    @property
    def volatile(self) -> bool:
        """True if the values depend on other devices: then update on every read."""
        return False

    def start(self, dev: SimulatedDevice) -> None:
        """Put initial values in place (before the device's own initial `values`)."""

    def update(self, dev: SimulatedDevice, now: datetime, dt: float) -> None:
        """Move the values to `now`, `dt` seconds of world time after the previous update."""


class _Accumulator:
    """A growing counter (energy, hours) kept in float64 between updates.

    The registers hold a rounded (float32, integer) copy; if someone else changed them (a
    client's write, ``device.set``) the accumulator starts again from what they hold.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: float | None = None
        self.written: list[int] | None = None

    def add(self, dev: SimulatedDevice, delta: float) -> None:
        spec = dev.points.get(self.name)
        if spec is None or self.name in dev.pinned:
            return
        regs = dev.raw(self.name)
        if self.value is None or regs != self.written:
            current = decode(spec, regs)
            self.value = float(current) if isinstance(current, (int, float)) else 0.0
        self.value += delta
        stored = self.value
        if spec.type in INT_RANGES:   # counters show whole units: floor, never round up
            stored = math.floor((self.value - spec.offset) / spec.scale + 1e-9) * spec.scale
            stored += spec.offset
        dev.put(self.name, stored)
        self.written = dev.raw(self.name)


class EnvSensor(Behaviour):
    """Temperature, humidity, illuminance, noise and particulates, read off the world."""

    name = "env-sensor"

    def update(self, dev: SimulatedDevice, now: datetime, dt: float) -> None:
        w = dev.world
        dev.put("temperature", w.temperature(now))
        dev.put("humidity", w.humidity(now))
        dev.put("illuminance", round(w.illuminance(now)))
        dev.put("noise", w.noise_db(now))
        dev.put("pm25", round(w.pm25(now)))
        dev.put("pm10", round(w.pm10(now)))


class WaterLevel(Behaviour):
    """A downward-looking ranger `mount_mm` above the road: level and echo distance."""

    name = "water-level"

    def __init__(self, *, mount_mm: float = 2000.0) -> None:
        self.mount_mm = mount_mm

    def update(self, dev: SimulatedDevice, now: datetime, dt: float) -> None:
        level_cm = dev.world.water(now)
        dev.put("water_level", level_cm)
        dev.put("distance", round(max(0.0, self.mount_mm - level_cm * 10.0)))
        dev.put("status", 0)


class LedDriver(Behaviour):
    """A dimmable LED driver: power follows the written dim level; hours grow while lit."""

    name = "led-driver"

    def __init__(self, *, rated_power: float = 60.0, power_on_level: float = 100.0,
                 overtemp_at: float = 85.0, thermal_tau: float = 300.0) -> None:
        self.rated_power = rated_power
        self.power_on_level = power_on_level   # the level a driver lights at on power-up
        self.overtemp_at = overtemp_at
        self.thermal_tau = thermal_tau         # seconds for the driver to warm up to its load
        self._temp: float | None = None
        self._hours = _Accumulator("burning_hours")

    def start(self, dev: SimulatedDevice) -> None:
        dev.put("dim_level", self.power_on_level)
        dev.put("burning_hours", dev.rng.randint(1_500, 18_000))

    def update(self, dev: SimulatedDevice, now: datetime, dt: float) -> None:
        level = dev.peek("dim_level") if "dim_level" in dev.points else self.power_on_level
        level = min(100.0, max(0.0, float(level)))
        failed = dev.fault.lamp_failed
        lit = level > 0 and not failed
        power = self.rated_power * level / 100.0 * (1 + dev.rng.gauss(0, 0.004)) if lit else 0.0
        dev.put("lamp_power", power)
        dev.put("lamp_on", lit)
        dev.put("fault_lamp_open", failed)
        ambient = dev.world.temperature(now)
        target = ambient + 30.0 * power / self.rated_power
        if self._temp is None:
            self._temp = target
        else:
            self._temp += (target - self._temp) * (1 - math.exp(-dt / self.thermal_tau))
        dev.put("driver_temperature", self._temp)
        dev.put("fault_overtemp", self._temp > self.overtemp_at)
        if lit:
            self._hours.add(dev, dt / 3600.0)


FeedSource = Callable[[], float] | Sequence["SimulatedDevice"]


class EnergyMeter(Behaviour):
    """A single-phase meter on the cabinet's lighting circuit.

    Its load is, in order: a callable giving watts; the summed `lamp_power` of the linked LED
    drivers (`feeds`) plus the cabinet's `standby_w`; or, unlinked, a street of `default_lamps`
    60 W lamps that are lit when the world is dark.
    """

    name = "energy-meter"

    def __init__(self, *, feeds: FeedSource | None = None, standby_w: float = 4.0,
                 default_lamps: int = 3) -> None:
        self.feeds = feeds
        self.standby_w = standby_w
        self.default_lamps = default_lamps
        self._energy = _Accumulator("energy")

    def link(self, feeds: FeedSource | None) -> None:
        """Meter these LED drivers (or this callable's watts) from now on."""
        self.feeds = feeds

    @property
    def volatile(self) -> bool:
        return self.feeds is not None

    def load_w(self, dev: SimulatedDevice, now: datetime) -> float:
        """The watts on the metered circuit now."""
        if callable(self.feeds):
            return max(0.0, float(self.feeds()))
        if self.feeds is not None:
            total = self.standby_w
            for lamp in self.feeds:
                if "lamp_power" in lamp.points:
                    value = lamp.get("lamp_power")
                    total += float(value) if isinstance(value, (int, float)) else 0.0
            return total
        dark = dev.world.illuminance(now) < 50.0
        return self.standby_w + (60.0 * self.default_lamps if dark else 0.0)

    def start(self, dev: SimulatedDevice) -> None:
        dev.put("energy", round(dev.rng.uniform(800.0, 2500.0), 1))

    def update(self, dev: SimulatedDevice, now: datetime, dt: float) -> None:
        rng = dev.rng
        volts = 230.0 + rng.gauss(0, 0.8)
        pf = min(1.0, 0.95 + rng.gauss(0, 0.004))
        watts = self.load_w(dev, now) * (1 + rng.gauss(0, 0.002))
        dev.put("voltage", volts)
        dev.put("frequency", 50.0 + rng.gauss(0, 0.01))
        dev.put("power_factor", pf)
        dev.put("active_power", watts)
        dev.put("current", watts / (volts * pf))
        self._energy.add(dev, watts * dt / 3.6e6)


BEHAVIOURS: dict[str, Callable[..., Behaviour]] = {
    "static": Behaviour,
    "env-sensor": EnvSensor,
    "energy-meter": EnergyMeter,
    "led-driver": LedDriver,
    "water-level": WaterLevel,
}


def make_behaviour(name: str, **options: Any) -> Behaviour:
    """A behaviour by name (see `BEHAVIOURS`), with its keyword options."""
    try:
        factory = BEHAVIOURS[name]
    except KeyError:
        raise ValueError(f"unknown behaviour {name!r} (one of {', '.join(BEHAVIOURS)})") from None
    return factory(**options)


# ------------------------------------------------------------------------------------- device
def profile_points(profile: str, *, base_dir: Path | None = None) -> list[PointSpec]:
    """The points of a profile: ``builtin:NAME``, a bare builtin ``NAME``, or a YAML path."""
    ref = profile
    bare = not ref.startswith("builtin:") and "/" not in ref and not ref.endswith(
        (".yaml", ".yml"))
    if bare:
        if ref not in builtin_profiles():
            raise ValueError(f"unknown builtin profile {ref!r} (builtin: "
                             f"{', '.join(builtin_profiles())}; or a path to a .yaml file)")
        ref = f"builtin:{ref}"
    return [PointCfg.model_validate(p).spec() for p in load_profile(ref, base_dir=base_dir)]


def profile_behaviour(profile: str) -> str:
    """The behaviour that plays a profile: its builtin name if there is one, else `static`."""
    stem = profile.removeprefix("builtin:")
    stem = Path(stem).stem if "/" in stem or stem.endswith((".yaml", ".yml")) else stem
    return stem if stem in BEHAVIOURS else "static"


def _numeric_bounds(spec: PointSpec) -> tuple[float, float] | None:
    if spec.type not in INT_RANGES:
        return None
    lo, hi = INT_RANGES[spec.type]
    a, b = lo * spec.scale + spec.offset, hi * spec.scale + spec.offset
    return (min(a, b), max(a, b))


class SimulatedDevice:
    """One simulated Modbus unit: tables, a register map, a behaviour, faults and counters.

    `values` are initial contents by point name (a behaviour moves its own points on from
    there; use `set` to pin one). `seed` makes the device's noise reproducible (default: from
    its name). With `strict_addresses`, reading or writing a register no point covers answers
    ILLEGAL ADDRESS, as some devices do; by default gaps read as 0, as the planner expects
    when it bridges them. The behaviour runs at most every `min_update_interval` seconds of
    world time, and at once after a write.
    """

    def __init__(
        self,
        points: Iterable[PointSpec],
        *,
        unit: int = 1,
        behaviour: Behaviour | str = "static",
        world: World | None = None,
        name: str | None = None,
        values: Mapping[str, Value] | None = None,
        seed: int | None = None,
        strict_addresses: bool = False,
        min_update_interval: float = 0.05,
    ) -> None:
        if not 0 <= unit <= 247:
            raise ValueError(f"unit id {unit} is outside 0..247")
        self.unit = unit
        self.name = name or f"unit-{unit}"
        self.world = world or World()
        self.behaviour = make_behaviour(behaviour) if isinstance(behaviour, str) else behaviour
        self.rng = random.Random(zlib.crc32(self.name.encode()) if seed is None else seed)
        self.strict_addresses = strict_addresses
        self.min_update_interval = min_update_interval
        self.fault = Fault()
        self.points: dict[str, PointSpec] = {}
        for p in points:
            if p.name in self.points:
                raise ValueError(f"device {self.name}: point {p.name!r} is defined twice")
            if p.end > ADDRESS_SPACE:
                raise ValueError(f"device {self.name}: point {p.name!r} runs past 65535")
            self.points[p.name] = p
        self.pinned: set[str] = set()
        self._words: dict[Table, array[int]] = {
            Table.HOLDING: array("H", bytes(2 * ADDRESS_SPACE)),
            Table.INPUT: array("H", bytes(2 * ADDRESS_SPACE)),
        }
        self._bits: dict[Table, bytearray] = {
            Table.COIL: bytearray(ADDRESS_SPACE),
            Table.DISCRETE: bytearray(ADDRESS_SPACE),
        }
        self._mapped: dict[Table, set[int]] = {t: set() for t in Table}
        for p in self.points.values():
            self._mapped[p.table].update(range(p.address, p.end))
        self._last_update: datetime | None = None
        self._dirty = True
        self._updating = False
        # counters, kept by the protocol server that serves this device
        self.requests = 0                            # requests addressed to this unit
        self.requests_by_function: Counter[int] = Counter()
        self.responses = 0                           # answers sent (of any kind)
        self.registers_read = 0                      # registers (or bits) returned by reads
        self.writes: list[tuple[str | int, Value]] = []
        self.behaviour.start(self)
        for key, value in (values or {}).items():
            self.put(self._spec(key).name, value, clamp=False)
        self.refresh()

    @classmethod
    def from_profile(
        cls,
        profile: str,
        *,
        unit: int = 1,
        extra_points: Iterable[PointSpec] = (),
        behaviour: Behaviour | str | None = None,
        base_dir: Path | None = None,
        **kwargs: Any,
    ) -> SimulatedDevice:
        """A device playing a profile (``led-driver``, ``builtin:env-sensor``, a path).

        `extra_points` extend the profile's, or replace a point of the same name, as inline
        points do in the gateway config. The behaviour defaults to the profile's own.
        """
        points = {p.name: p for p in profile_points(profile, base_dir=base_dir)}
        for p in extra_points:
            points[p.name] = p
        chosen = behaviour if behaviour is not None else profile_behaviour(profile)
        return cls(points.values(), unit=unit, behaviour=chosen, **kwargs)

    def __repr__(self) -> str:
        return (f"SimulatedDevice({self.name!r}, unit={self.unit}, "
                f"behaviour={self.behaviour.name!r}, fault={self.fault.mode.value})")

    # -------------------------------------------------------------------------- scripting
    @property
    def lamp_failed(self) -> bool:
        return self.fault.lamp_failed

    @lamp_failed.setter
    def lamp_failed(self, failed: bool) -> None:
        self.fault = dataclasses.replace(self.fault, lamp_failed=failed)
        self._dirty = True

    def get(self, name: str) -> Value:
        """The point's current engineering value, as a client reading it now would see it."""
        self.refresh()
        return self.peek(name)

    def peek(self, name: str) -> Value:
        """The point's value as stored, without moving the simulation."""
        spec = self._spec(name)
        return decode(spec, self.raw(name))

    def set(self, name: str, value: Value) -> None:
        """Store a value; a point not writable over Modbus stays pinned until `release`.

        Raises `WriteRejected` (a ValueError) if the value does not fit the point's type.
        """
        spec = self._spec(name)
        self.put(name, value, clamp=False)
        if not spec.writable:
            self.pinned.add(name)
        self._dirty = True

    def release(self, name: str) -> None:
        """Hand a pinned point back to the behaviour."""
        self._spec(name)
        self.pinned.discard(name)
        self._dirty = True

    def reset_counters(self) -> None:
        self.requests = 0
        self.requests_by_function.clear()
        self.responses = 0
        self.registers_read = 0
        self.writes.clear()

    # ------------------------------------------------------------------- behaviour support
    def refresh(self, *, force: bool = False) -> None:
        """Let the behaviour move the values to the world's now (rate-limited, re-entrant safe)."""
        if self._updating:
            return
        now = self.world.now()
        last = self._last_update
        dt = 0.0 if last is None else max(0.0, (now - last).total_seconds())
        if not (force or self._dirty or last is None or dt >= self.min_update_interval
                or self.behaviour.volatile):
            return
        self._updating = True
        try:
            self.behaviour.update(self, now, dt)
        finally:
            self._updating = False
        self._last_update = now if last is None or now > last else last
        self._dirty = False

    def put(self, name: str, value: Value, *, clamp: bool = True) -> None:
        """Store a point's value, unless the device lacks the point or it is pinned.

        With `clamp`, numbers outside what the register type holds are clamped to it (a
        sensor saturates); without it they raise `WriteRejected`.
        """
        spec = self.points.get(name)
        if spec is None or (clamp and name in self.pinned):
            return
        if spec.table.is_bits:
            self._bits[spec.table][spec.address] = 1 if value else 0
            return
        words = self._words[spec.table]
        if spec.type is DataType.BOOL:
            mask = 1 << (spec.bit or 0)
            current = words[spec.address]
            words[spec.address] = (current | mask) if value else (current & ~mask)
            return
        if clamp and isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds = _numeric_bounds(spec)
            if bounds is not None:
                value = min(max(value, bounds[0]), bounds[1])
        regs = encode(dataclasses.replace(spec, min=None, max=None), value)
        words[spec.address:spec.end] = array("H", regs)

    def raw(self, name: str) -> list[int]:
        """The registers (or the one bit) a point occupies, as stored."""
        spec = self._spec(name)
        if spec.table.is_bits:
            return [self._bits[spec.table][spec.address]]
        return self._words[spec.table][spec.address:spec.end].tolist()

    def _spec(self, name: str) -> PointSpec:
        try:
            return self.points[name]
        except KeyError:
            known = ", ".join(self.points) or "none"
            raise KeyError(f"device {self.name} has no point {name!r} (points: {known})") from None

    # ------------------------------------------------------------------ protocol-side access
    def _check_range(self, table: Table, address: int, count: int) -> None:
        if count < 1 or address < 0 or address + count > ADDRESS_SPACE:
            raise Refused(ILLEGAL_ADDRESS,
                          f"{table} {address}..{address + count - 1} is outside 0..65535")
        if self.strict_addresses:
            mapped = self._mapped[table]
            for a in range(address, address + count):
                if a not in mapped:
                    raise Refused(ILLEGAL_ADDRESS, f"{table} {a} is not mapped")

    def read_words(self, table: Table, address: int, count: int) -> list[int]:
        """Registers of the holding or input table, after a refresh. Raises `Refused`."""
        self._check_range(table, address, count)
        self.refresh()
        return self._words[table][address:address + count].tolist()

    def read_bits(self, table: Table, address: int, count: int) -> list[bool]:
        """Bits of the coil or discrete table, after a refresh. Raises `Refused`."""
        self._check_range(table, address, count)
        self.refresh()
        return [bool(b) for b in self._bits[table][address:address + count]]

    def write_words(self, table: Table, address: int, values: Sequence[int]) -> None:
        """A client's register write: range-checked against the points' min/max, recorded."""
        self._check_range(table, address, len(values))
        end = address + len(values)
        words = self._words[table]
        after = words[address:end]
        after[:] = array("H", (v & 0xFFFF for v in values))
        touched = [p for p in self.points.values()
                   if p.table is table and p.address < end and p.end > address]
        staged: list[tuple[PointSpec, Value]] = []
        for p in touched:
            regs = [after[a - address] if address <= a < end else words[a]
                    for a in range(p.address, p.end)]
            value = decode(p, regs)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                (p.min is not None and value < p.min) or (p.max is not None and value > p.max)
            ):
                raise Refused(ILLEGAL_VALUE, f"{p.name}: {value} is outside {p.min}..{p.max}")
            staged.append((p, value))
        words[address:end] = after
        covered: set[int] = set()
        for p, value in staged:
            self.writes.append((p.name, value))
            covered.update(range(p.address, p.end))
        self.writes.extend((a, words[a]) for a in range(address, end) if a not in covered)
        self._dirty = True

    def write_bits(self, table: Table, address: int, values: Sequence[bool]) -> None:
        """A client's coil write, recorded by point name (or address where unmapped)."""
        self._check_range(table, address, len(values))
        bits = self._bits[table]
        by_address = {p.address: p.name for p in self.points.values() if p.table is table}
        for i, v in enumerate(values):
            bits[address + i] = 1 if v else 0
            self.writes.append((by_address.get(address + i, address + i), bool(v)))
        self._dirty = True
