"""`edgegw scan`: who answers on a Modbus bus, at which line settings, and what they look like.

Three steps, each usable on its own:

1. :func:`find_line` (RTU, ``--auto-baud``): tries the common line settings (9600, 19200,
   38400, 4800, 115200 baud x parity N/E/O) until some unit answers;
2. :func:`probe` asks each unit id for one register (`drivers.modbus.probe`): any answer, an
   exception response too, means a device is there;
3. :func:`match_profiles` reads every point of every builtin profile from each unit that
   answered. A profile *fits* when every read succeeds and every value is plausible (finite,
   within the point's min/max and a sane range for its unit: a "temperature" of 1725 degC
   means the registers are something else). Fitting profiles are ranked by how many points
   read a live (non-zero) value, so a sensor whose map merely *contains* a smaller profile's
   registers is proposed as itself. Devices that refuse unmapped registers (most do) are told
   apart at once; devices that read unmapped registers as 0 are told apart by the ranking.

:func:`proposed_devices` turns the findings into `devices:` entries to paste into the config.
Scanning a live RS-485 bus competes with the agent: stop it first (`edgegw check` says so).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import termios
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import serial
import yaml

from drivers.errors import BusError, DeviceException, DeviceTimeout
from drivers.modbus.bus import BusKind, BusSettings, DeviceSettings, ModbusBus
from drivers.modbus.probe import ProbeResult, probe_units
from drivers.modbus.registers import DataType, PointSpec, Value
from gateway.config import Config, PointCfg, builtin_profiles, load_profile

BAUD_RATES = (9600, 19200, 38400, 4800, 115200)
PARITIES = ("N", "E", "O")
PROBE_CHUNK = 8           # units probed per connection while hunting for the line settings
DEFAULT_POLL = 10.0

#: short device names for the builtin profiles, for proposed entries (lamp-3, env-1...)
SHORT_NAMES = {"led-driver": "lamp", "env-sensor": "env", "energy-meter": "meter",
               "water-level": "water"}

#: what a real device of our field can report, by unit (engineering values, after scale)
UNIT_RANGES: dict[str, tuple[float, float]] = {
    "degC": (-60.0, 150.0),
    "%RH": (0.0, 100.0),
    "%": (0.0, 100.0),
    "lx": (0.0, 200_000.0),
    "dB": (0.0, 160.0),
    "ug/m3": (0.0, 5_000.0),
    "V": (0.0, 1_000.0),
    "A": (-2_000.0, 2_000.0),
    "W": (-1_000_000.0, 1_000_000.0),
    "Hz": (0.0, 100.0),
    "kWh": (0.0, 1e9),
    "h": (0.0, 250_000.0),          # 28 years of burning
    "cm": (-1_000.0, 2_000.0),
    "mm": (0.0, 100_000.0),
}
FLOAT_TINY = 1e-12        # a non-zero float this small is integer registers read as a float
FLOAT_HUGE = 1e12


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line parameters of an RTU bus (8 data bits)."""

    baudrate: int
    parity: str
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"

    def apply(self, settings: BusSettings) -> BusSettings:
        return dataclasses.replace(settings, baudrate=self.baudrate, parity=self.parity,
                                   stopbits=self.stopbits)

    @classmethod
    def of(cls, settings: BusSettings) -> LineSettings:
        return cls(settings.baudrate, settings.parity, settings.stopbits)


def common_lines(*, stopbits: int = 1) -> tuple[LineSettings, ...]:
    """The line settings ``--auto-baud`` tries, most common first."""
    return tuple(LineSettings(b, p, stopbits) for b in BAUD_RATES for p in PARITIES)


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """One step of a scan, for a progress bar: `phase` names the bar."""

    phase: str
    done: int
    total: int


ProgressFn = Callable[[ScanProgress], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileFit:
    """How one builtin profile fits one unit's registers."""

    profile: str                      # builtin:NAME
    fits: bool
    points: int
    live: int                         # points that read a non-zero value
    values: Mapping[str, Value]
    problem: str | None               # why it does not fit
    live_registers: int = 0           # registers (or bits) behind the live values
    dead_registers: int = 0           # registers read that only gave zeros

    @property
    def rank(self) -> tuple[bool, int, int, int]:
        """Best first: fits, then the most live registers, then the fewest dead ones.

        Registers, not points: a profile that reads one register as a number and as three
        status bits must not count it four times.
        """
        return (self.fits, self.live_registers, -self.dead_registers, self.points)

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "fits": self.fits, "points": self.points,
                "live_points": self.live, "problem": self.problem,
                "values": dict(self.values)}


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitFinding:
    unit: int
    detail: str                         # what the probe saw: "registers", "exception 2"
    configured_as: str | None           # the config's device on this unit, if any
    configured_profile: str | None
    fits: tuple[ProfileFit, ...]        # best first

    @property
    def proposal(self) -> ProfileFit | None:
        """The best fitting profile, if one fits with at least one live value."""
        best = self.fits[0] if self.fits else None
        return best if best is not None and best.fits and best.live > 0 else None

    @property
    def also_fits(self) -> tuple[str, ...]:
        best = self.proposal
        return tuple(f.profile for f in self.fits if f.fits and f is not best)

    def to_json(self) -> dict[str, Any]:
        best = self.proposal
        return {"unit": self.unit, "detail": self.detail, "configured_as": self.configured_as,
                "configured_profile": self.configured_profile,
                "profile": best.profile if best else None,
                "fits": [f.to_json() for f in self.fits]}


@dataclass(frozen=True, slots=True, kw_only=True)
class BusScan:
    bus: str
    kind: BusKind
    where: str                                   # port path or host:port
    line: LineSettings | None                    # RTU: the settings the units answered at
    configured_line: LineSettings | None         # RTU: what the config says
    tried: tuple[int, ...]
    units: tuple[UnitFinding, ...]
    line_attempts: tuple[tuple[LineSettings, bool], ...] = ()   # --auto-baud: tried, answered

    @property
    def line_differs(self) -> bool:
        return (self.line is not None and self.configured_line is not None
                and self.line != self.configured_line)

    def to_json(self) -> dict[str, Any]:
        line = self.line
        return {
            "bus": self.bus, "type": str(self.kind), "where": self.where,
            "line": None if line is None else dataclasses.asdict(line),
            "line_differs_from_config": self.line_differs,
            "auto_baud": [{**dataclasses.asdict(ls), "answered": ok}
                          for ls, ok in self.line_attempts],
            "tried": len(self.tried),
            "units": [u.to_json() for u in self.units],
        }


# ---------------------------------------------------------------------------------- inputs
def parse_units(text: str, *, lo: int = 1, hi: int = 247) -> list[int]:
    """'1-5,9' -> [1, 2, 3, 4, 5, 9]; ValueError naming the bad part."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            start, end = int(a), int(b or a)
        except ValueError:
            raise ValueError(f"{part!r} is not a unit id or a range like 1-32") from None
        if not (lo <= start <= end <= hi):
            raise ValueError(f"{part!r} is outside {lo}..{hi}")
        out.extend(range(start, end + 1))
    if not out:
        raise ValueError("no unit ids given")
    return sorted(set(out))


def builtin_profile_specs() -> dict[str, tuple[PointSpec, ...]]:
    """Every builtin profile's points, keyed ``builtin:NAME``."""
    out = {}
    for name in builtin_profiles():
        ref = f"builtin:{name}"
        out[ref] = tuple(PointCfg.model_validate(p).spec() for p in load_profile(ref))
    return out


def implausible(spec: PointSpec, value: Value | None) -> str | None:
    """Why `value` cannot be what a real device reports for `spec` (None when it can)."""
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.rstrip("\0 ")
        return None if text.isprintable() else "not printable text"
    v = float(value)
    if not math.isfinite(v):
        return f"{value} is not a number"
    if spec.type in (DataType.FLOAT32, DataType.FLOAT64) and v != 0 and not (
            FLOAT_TINY <= abs(v) <= FLOAT_HUGE):
        return f"{v:g} looks like integer registers read as a float"
    if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
        return f"{v:g} is outside {spec.min}..{spec.max}"
    bounds = UNIT_RANGES.get(spec.unit or "")
    if bounds is not None and not bounds[0] <= v <= bounds[1]:
        return f"{v:g} {spec.unit} is not a plausible reading"
    return None


def _live(value: Value) -> bool:
    if isinstance(value, str):
        return bool(value.strip("\0 "))
    return bool(value)


# ------------------------------------------------------------------------------------ scans
async def probe(settings: BusSettings, units: Sequence[int], *, unit_timeout: float,
                on_progress: ProgressFn | None = None,
                phase: str = "probing") -> list[ProbeResult]:
    """Which of `units` answer (drivers.modbus.probe); BusError if the bus cannot be opened."""
    done = 0

    def tick(_: ProbeResult) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(ScanProgress(phase, done, len(units)))

    reason = None
    try:
        results = await probe_units(settings, units, unit_timeout=unit_timeout,
                                    on_progress=tick)
    except (OSError, termios.error, serial.SerialException) as err:
        # a setting the port refuses (a pty has no parity E), or a port that went away
        reason = str(err)
    if reason is not None:
        # pymodbus leaves the port open (and exclusively locked) when configuring it fails
        # after the open; the port object is only reachable from the exception's traceback
        # cycle, which is gone now: collect it, or every later open of this port fails
        gc.collect()
        line = (f" at {settings.baudrate} 8{settings.parity}{settings.stopbits}"
                if settings.kind is BusKind.RTU else "")
        raise BusError(f"modbus {settings.name}: cannot open {settings.serial_port}{line}: "
                       f"{reason}")
    return [r for r in results if r.answered]


async def find_line(
    settings: BusSettings,
    units: Sequence[int],
    *,
    unit_timeout: float,
    candidates: Iterable[LineSettings] | None = None,
    on_progress: ProgressFn | None = None,
) -> tuple[LineSettings | None, list[tuple[LineSettings, bool]]]:
    """The first line settings at which one of `units` answers, and every attempt made.

    Units are asked in chunks, and the hunt stops at the first answer, so a bus with a device
    at a low unit id is found in seconds; a silent bus costs `unit_timeout` per unit per setting.
    """
    if settings.kind is not BusKind.RTU:
        raise ValueError(f"bus {settings.name} is Modbus TCP: line settings are for RTU buses")
    lines = list(candidates or common_lines(stopbits=settings.stopbits))
    attempts: list[tuple[LineSettings, bool]] = []
    failures: list[str] = []
    for i, line in enumerate(lines):
        if on_progress is not None:
            on_progress(ScanProgress("line settings", i, len(lines)))
        trial = line.apply(settings)
        answered = False
        try:
            for start in range(0, len(units), PROBE_CHUNK):
                if await probe(trial, units[start:start + PROBE_CHUNK],
                               unit_timeout=unit_timeout):
                    answered = True
                    break
        except BusError as err:
            failures.append(str(err))    # this adapter cannot do this setting: try the next
        attempts.append((line, answered))
        if answered:
            if on_progress is not None:
                on_progress(ScanProgress("line settings", len(lines), len(lines)))
            return line, attempts
    if len(failures) == len(lines):
        raise BusError(failures[-1])     # the port cannot be opened at any setting
    return None, attempts


async def match_profiles(
    settings: BusSettings,
    units: Sequence[int],
    *,
    profiles: Mapping[str, Sequence[PointSpec]] | None = None,
    unit_timeout: float,
    on_progress: ProgressFn | None = None,
) -> dict[int, tuple[ProfileFit, ...]]:
    """Read every profile's points from each unit; the fits of each unit, best first."""
    profiles = profiles if profiles is not None else builtin_profile_specs()
    devices = [
        DeviceSettings(name=f"unit-{u}:{ref.removeprefix('builtin:')}", unit=u, poll=3600.0,
                       points=tuple(dataclasses.replace(p, poll=None) for p in points))
        for u in units for ref, points in profiles.items()
    ]
    out: dict[int, tuple[ProfileFit, ...]] = {}
    if not devices:
        return out
    bus_settings = dataclasses.replace(settings, timeout=unit_timeout, retries=1)
    total, done = len(devices), 0
    async with ModbusBus(bus_settings, devices, on_samples=lambda s: None, poll=False) as bus:
        for u in units:
            fits = []
            silent = 0
            for ref, points in profiles.items():
                name = f"unit-{u}:{ref.removeprefix('builtin:')}"
                if silent >= 2:   # stopped answering: do not spend a timeout on each point
                    fits.append(ProfileFit(profile=ref, fits=False, points=len(points),
                                           live=0, values={}, problem="unit stopped answering"))
                else:
                    fit = await _fit(bus, name, ref, points)
                    silent = silent + 1 if fit.problem == "no answer" else 0
                    fits.append(fit)
                done += 1
                if on_progress is not None:
                    on_progress(ScanProgress("matching profiles", done, total))
            out[u] = tuple(sorted(fits, key=lambda f: f.rank, reverse=True))
    return out


async def _fit(bus: ModbusBus, device: str, ref: str, points: Sequence[PointSpec]) -> ProfileFit:
    values: dict[str, Value] = {}
    for p in points:
        try:
            sample = await bus.read_point(device, p.name)
        except DeviceTimeout:
            return ProfileFit(profile=ref, fits=False, points=len(points), live=0,
                              values=values, problem="no answer")
        except DeviceException as err:
            reason = str(err).rsplit(": ", 1)[-1]
            return ProfileFit(profile=ref, fits=False, points=len(points), live=0,
                              values=values, problem=f"{p.name} ({p.table} {p.address}): "
                                                     f"{reason}")
        except (ValueError, UnicodeDecodeError) as err:
            return ProfileFit(profile=ref, fits=False, points=len(points), live=0,
                              values=values, problem=f"{p.name}: cannot decode ({err})")
        why = implausible(p, sample.value)
        if why is not None:
            return ProfileFit(profile=ref, fits=False, points=len(points), live=0,
                              values=values, problem=f"{p.name}: {why}")
        assert sample.value is not None
        values[p.name] = sample.value
    live = [p for p in points if _live(values[p.name])]
    live_regs = set().union(*(_registers(p) for p in live))
    all_regs = set().union(*(_registers(p) for p in points))
    return ProfileFit(profile=ref, fits=True, points=len(points), live=len(live), values=values,
                      problem=None, live_registers=len(live_regs),
                      dead_registers=len(all_regs - live_regs))


def _registers(p: PointSpec) -> set[tuple[str, int]]:
    return {(str(p.table), a) for a in range(p.address, p.end)}


async def scan_bus(
    settings: BusSettings,
    units: Sequence[int],
    *,
    unit_timeout: float,
    auto_baud: bool = False,
    profiles: Mapping[str, Sequence[PointSpec]] | None = None,
    match: bool = True,
    known: Mapping[int, tuple[str, str | None]] | None = None,
    on_progress: ProgressFn | None = None,
) -> BusScan:
    """The whole scan of one bus. `known`: unit -> (device name, profile) from the config.

    Raises BusError when the bus cannot be opened (port missing or busy, TCP refused).
    """
    known = known or {}
    rtu = settings.kind is BusKind.RTU
    configured = LineSettings.of(settings) if rtu else None
    attempts: list[tuple[LineSettings, bool]] = []
    line = configured
    if auto_baud:
        found, attempts = await find_line(settings, units, unit_timeout=unit_timeout,
                                          on_progress=on_progress)
        if found is None:
            where = settings.serial_port
            return BusScan(bus=settings.name, kind=settings.kind, where=where, line=None,
                           configured_line=configured, tried=tuple(units), units=(),
                           line_attempts=tuple(attempts))
        line = found
        settings = found.apply(settings)
    answered = await probe(settings, units, unit_timeout=unit_timeout, on_progress=on_progress)
    fits: dict[int, tuple[ProfileFit, ...]] = {}
    if match and answered:
        fits = await match_profiles(settings, [r.unit for r in answered], profiles=profiles,
                                    unit_timeout=max(unit_timeout, 0.2), on_progress=on_progress)
    findings = tuple(
        UnitFinding(unit=r.unit, detail=r.detail,
                    configured_as=known.get(r.unit, (None, None))[0],
                    configured_profile=known.get(r.unit, (None, None))[1],
                    fits=fits.get(r.unit, ()))
        for r in answered)
    where = settings.serial_port if rtu else f"{settings.host}:{settings.port}"
    return BusScan(bus=settings.name, kind=settings.kind, where=where, line=line,
                   configured_line=configured, tried=tuple(units), units=findings,
                   line_attempts=tuple(attempts))


# ------------------------------------------------------------------------------- proposals
def known_units(cfg: Config, bus: str) -> dict[int, tuple[str, str | None]]:
    """unit -> (device name, profile) of the config's devices on `bus`."""
    return {d.unit: (d.name, d.profile) for d in cfg.devices if d.bus == bus}


def proposed_devices(scans: Iterable[BusScan], *, cfg: Config | None = None,
                     poll: float = DEFAULT_POLL) -> list[dict[str, Any]]:
    """`devices:` entries for the units that answered, are not in the config, and fit a
    builtin profile; names are unique against the config and each other."""
    taken = {d.name for d in cfg.devices} if cfg is not None else set()
    out: list[dict[str, Any]] = []
    for scan in scans:
        for u in scan.units:
            best = u.proposal
            if u.configured_as is not None or best is None:
                continue
            short = SHORT_NAMES.get(best.profile.removeprefix("builtin:"),
                                    best.profile.removeprefix("builtin:"))
            name = f"{short}-{u.unit}"
            if name in taken:
                name = f"{short}-{scan.bus}-{u.unit}"
            taken.add(name)
            out.append({"name": name, "bus": scan.bus, "unit": u.unit, "poll": poll,
                        "profile": best.profile})
    return out


def proposed_bus(scan: BusScan, cfg: Config | None) -> dict[str, Any] | None:
    """The bus entry with the line settings found, when they differ from the config's."""
    if not scan.line_differs or scan.line is None or cfg is None:
        return None
    try:
        bus = cfg.bus(scan.bus)
    except KeyError:
        return None
    entry = bus.model_dump(mode="json", exclude_defaults=True)
    entry.update({"type": bus.type, "baudrate": scan.line.baudrate,
                  "parity": scan.line.parity, "stopbits": scan.line.stopbits})
    return entry


def render_yaml(key: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """``key:`` and one flow-style line per entry: ready to paste under the config's key."""
    lines = [f"{key}:"]
    for e in entries:
        flow = yaml.safe_dump(dict(e), default_flow_style=True, sort_keys=False,
                              width=1000).strip()
        lines.append(f"  - {flow}")
    return "\n".join(lines) + "\n"


def add_devices_to_config(text: str, entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The config's text with ``entries`` added to its ``devices:`` list, everything else (the
    comments too) as it was; None when the file's layout does not allow it safely (``devices:``
    written inline, or followed by other top-level keys): the caller writes a fragment."""
    items = render_yaml("devices", entries).split("\n", 1)[1]
    lines = text.splitlines(keepends=True)
    tops = [i for i, line in enumerate(lines)
            if line[:1] not in ("", " ", "\t", "#", "\n", "\r", "-")]
    dev = [i for i in tops if lines[i].split(":", 1)[0].strip() == "devices"]
    body = text if text.endswith("\n") or not text else text + "\n"
    if not dev:
        return body + "devices:\n" + items
    i = dev[0]
    rest = lines[i].split(":", 1)[1].split("#", 1)[0].strip()
    if rest not in ("", "[]"):
        return None                              # `devices: [...]` inline: not ours to edit
    if any(t > i for t in tops):
        return None                              # another top-level key follows
    if rest == "[]":
        lines[i] = lines[i].replace("[]", "", 1)
        body = "".join(lines)
        body = body if body.endswith("\n") else body + "\n"
    return body + items


def scan_error_hint(err: BusError, settings: BusSettings) -> str:
    """What to do when a bus cannot be opened at all."""
    if settings.kind is BusKind.TCP:
        return (f"nothing answers at {settings.host}:{settings.port}: check the address, that "
                "the Modbus TCP gateway is powered and on this network (ping it), and port 502 "
                "vs the one configured")
    return (f"cannot open {settings.serial_port}: check the adapter is plugged in "
            "(edgegw scan --list-ports), that no agent holds the port (sudo systemctl stop "
            "edgegw), and that this user may open it (group dialout)")


__all__ = [
    "BAUD_RATES",
    "PARITIES",
    "BusScan",
    "LineSettings",
    "ProfileFit",
    "ScanProgress",
    "UnitFinding",
    "add_devices_to_config",
    "builtin_profile_specs",
    "common_lines",
    "find_line",
    "implausible",
    "known_units",
    "match_profiles",
    "parse_units",
    "probe",
    "proposed_bus",
    "proposed_devices",
    "render_yaml",
    "scan_bus",
    "scan_error_hint",
]
