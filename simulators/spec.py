"""The simulator spec file: which simulated devices to serve, where, in what world.

``edgegw simulate --spec FILE`` reads it (see `simulators.runner.run_spec`). YAML::

    world:                       # optional; where and when the simulated street is
      lat: 10.7769               # degrees (default Ho Chi Minh City)
      lon: 106.7009
      timezone: Asia/Ho_Chi_Minh # IANA name: rush hours and noise follow the civil clock
      start: 2025-06-01T18:00:00+07:00   # optional: the simulated clock starts here...
      speed: 60                  # ...and runs this many times faster than real time (default 1)
      seed: 42                   # optional: reproducible noise
      lux: 5.0                   # optional: pin the illuminance (lx) instead of following the sun
      water_level: 0.0           # cm of water above the road
    servers:                     # one entry per simulated bus
      - type: rtu                # Modbus RTU on a pseudo-terminal pair
        link: ./var/rs485-1      # optional symlink to the client pty (relative to the cwd)
        baudrate: 9600
        parity: N                # N, E or O
        stopbits: 1
        wire_time: false         # true: frames take their real time at `baudrate`
        devices:
          - {unit: 1, profile: env-sensor, name: env-1}
          - {unit: 3, profile: energy-meter, name: meter-1, feeds: [lamp-1, lamp-2]}
      - type: tcp                # Modbus TCP
        host: 127.0.0.1
        port: 5020               # 0 = any free port
        devices:
          - {unit: 1, profile: led-driver, name: lamp-1, rated_power: 60}
          - unit: 3
            profile: led-driver
            name: lamp-3
            extra_points:        # as inline `points:` in the gateway config
              - {name: serial_number, table: holding, address: 100, type: string, length: 4}
            values: {serial_number: LD3-0042}

A device: `unit` (1..247), `profile` (a builtin name such as ``led-driver``, ``builtin:NAME``, or
a YAML file relative to the spec), `name` (default ``PROFILE-UNIT``; must be unique),
`behaviour` (default: the builtin profile's own, else ``static``), `extra_points`, `values`
(initial values by point name: the behaviour moves them on as usual), `pin` (values the
behaviour leaves alone, e.g. ``{water_level: 35}``), `feeds` (energy meters: the LED drivers
whose power they meter),
`rated_power` (LED drivers, W) and `fault` (``{mode: silent|slow|exception|garbage, delay: 0.5,
code: 4, rate: 1.0, lamp_failed: false}``).

Problems are reported all at once as a `SpecError` (a `ConfigError`, so a ValueError), each with
its line and field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from drivers.errors import WriteRejected
from drivers.modbus.registers import PointSpec, encode
from gateway.config import NAME_RE, PointCfg, format_loc, read_yaml
from gateway.errors import ConfigError
from policies.common import check_timezone
from policies.validation import BaseModel, ConfigDict, Field, ValidationError, field_validator
from simulators.devices import (
    BEHAVIOURS,
    Fault,
    FaultMode,
    profile_behaviour,
    profile_points,
)

BehaviourName = Literal["static", "env-sensor", "energy-meter", "led-driver", "water-level"]
SpecValue = bool | int | float | str


class SpecError(ConfigError):
    """A simulator spec is invalid; `problems` lists each as ``(where, message)``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldSpec(_Model):
    lat: float = Field(default=10.7769, ge=-90, le=90)
    lon: float = Field(default=106.7009, ge=-180, le=180)
    timezone: str = "Asia/Ho_Chi_Minh"
    start: datetime | None = None
    speed: float = Field(default=1.0, gt=0, le=100_000)
    seed: int | None = None
    lux: float | None = Field(default=None, ge=0)
    water_level: float = 0.0

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give the start time with its UTC offset, e.g. 2025-06-01T18:00+07:00")
        return v


class FaultSpec(_Model):
    mode: FaultMode = FaultMode.NONE
    delay: float = Field(default=1.0, ge=0, le=3600)
    code: int = Field(default=4, ge=1, le=11)
    rate: float = Field(default=1.0, ge=0, le=1)
    lamp_failed: bool = False

    def fault(self) -> Fault:
        return Fault(self.mode, delay=self.delay, code=self.code, rate=self.rate,
                     lamp_failed=self.lamp_failed)


class DeviceSpec(_Model):
    unit: int = Field(ge=1, le=247)
    profile: str
    name: str | None = Field(default=None, pattern=NAME_RE)
    behaviour: BehaviourName | None = None
    extra_points: list[PointCfg] = []
    values: dict[str, SpecValue] = {}
    pin: dict[str, SpecValue] = {}
    feeds: list[str] = []
    rated_power: float | None = Field(default=None, gt=0)
    fault: FaultSpec | None = None

    @property
    def device_name(self) -> str:
        if self.name:
            return self.name
        stem = self.profile.removeprefix("builtin:")
        return f"{Path(stem).stem}-{self.unit}"

    @property
    def behaviour_name(self) -> str:
        return self.behaviour or profile_behaviour(self.profile)


class TcpServerSpec(_Model):
    type: Literal["tcp"]
    host: str = "127.0.0.1"
    port: int = Field(default=5020, ge=0, le=65535)
    devices: list[DeviceSpec] = Field(min_length=1)


class RtuServerSpec(_Model):
    type: Literal["rtu"]
    link: str | None = None
    baudrate: int = Field(default=9600, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    wire_time: bool = False
    devices: list[DeviceSpec] = Field(min_length=1)


ServerSpec = Annotated[TcpServerSpec | RtuServerSpec, Field(discriminator="type")]


class SimSpec(_Model):
    world: WorldSpec = WorldSpec()
    servers: list[ServerSpec] = Field(min_length=1)
    # where the spec came from, to resolve profile paths (not spec keys)
    source: str = Field(default="<spec>", exclude=True)
    base_dir: Path | None = Field(default=None, exclude=True)

    def points_of(self, dev: DeviceSpec) -> list[PointSpec]:
        """The device's register map: its profile's points, extended or replaced by name."""
        points = {p.name: p for p in profile_points(dev.profile, base_dir=self.base_dir)}
        for extra in dev.extra_points:
            points[extra.name] = extra.spec()
        return list(points.values())


# ------------------------------------------------------------------------------- validation
_TAGS = {"tcp", "rtu"}


def _describe(err: Mapping[str, Any]) -> str:
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    inp = err.get("input")
    if typ == "extra_forbidden":
        return "unknown key (see the spec format in simulators/spec.py or examples/sim-street.yaml)"
    if typ == "missing":
        return "required key is missing"
    if typ == "union_tag_invalid":
        return f"type {ctx.get('tag')!r} is not one of tcp, rtu"
    if typ == "union_tag_not_found":
        return "`type:` is missing (tcp or rtu)"
    if typ in ("literal_error", "enum"):
        return f"{inp!r} is not one of {str(ctx.get('expected', '')).replace(chr(39), '')}"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if inp is not None and not isinstance(inp, (dict, list)) and typ != "value_error":
        return f"{msg} (got {inp!r})"
    return msg


def _cross_check(spec: SimSpec) -> list[tuple[tuple[int | str, ...], str]]:
    problems: list[tuple[tuple[int | str, ...], str]] = []
    names: dict[str, tuple[int | str, ...]] = {}
    behaviours: dict[str, str] = {}
    endpoints: dict[str, int] = {}
    for i, srv in enumerate(spec.servers):
        where: tuple[int | str, ...] = ("servers", i)
        if isinstance(srv, TcpServerSpec):
            key = f"{srv.host}:{srv.port}"
            if srv.port and key in endpoints:
                problems.append(((*where, "port"),
                                 f"{key} is already used by servers[{endpoints[key]}]"))
        else:
            key = f"link {srv.link}"
            if srv.link and key in endpoints:
                problems.append(((*where, "link"),
                                 f"{srv.link} is already used by servers[{endpoints[key]}]"))
        endpoints.setdefault(key, i)
        units: set[int] = set()
        for j, dev in enumerate(srv.devices):
            at: tuple[int | str, ...] = (*where, "devices", j)
            if dev.unit in units:
                problems.append(((*at, "unit"), f"unit {dev.unit} is used twice on this server"))
            units.add(dev.unit)
            name = dev.device_name
            if name in names:
                problems.append(((*at, "name"), f"device name {name!r} is used twice "
                                 f"(also at {format_loc(names[name])}); give each a `name:`"))
            names.setdefault(name, at)
            behaviours[name] = dev.behaviour_name
            try:
                points = {p.name: p for p in spec.points_of(dev)}
            except ValueError as err:
                problems.append(((*at, "profile"), str(err)))
                continue
            for field_name, given in (("values", dev.values), ("pin", dev.pin)):
                for key_name, value in given.items():
                    point = points.get(key_name)
                    if point is None:
                        problems.append(((*at, field_name, key_name),
                                         f"no point {key_name!r} (points: {', '.join(points)})"))
                        continue
                    try:
                        encode(point, value)
                    except WriteRejected as err:
                        problems.append(((*at, field_name, key_name), str(err)))
            if dev.rated_power is not None and dev.behaviour_name != "led-driver":
                problems.append(((*at, "rated_power"),
                                 "only led-driver devices have a rated power"))
            if dev.feeds and dev.behaviour_name != "energy-meter":
                problems.append(((*at, "feeds"), "only energy-meter devices have `feeds`"))
    for i, srv in enumerate(spec.servers):
        for j, dev in enumerate(srv.devices):
            for k, fed in enumerate(dev.feeds):
                loc: tuple[int | str, ...] = ("servers", i, "devices", j, "feeds", k)
                if fed not in names:
                    problems.append((loc, f"no device named {fed!r} in this spec"))
                elif behaviours[fed] != "led-driver":
                    problems.append((loc, f"{fed} is not an led-driver (it is {behaviours[fed]})"))
    return problems


def parse_spec(text: str, *, source: str = "<spec>", base_dir: Path | None = None) -> SimSpec:
    """Parse and validate spec text; raises `SpecError` naming every problem's line and field."""
    raw, at = read_yaml(text, source=source, error=SpecError,
                        expected="the spec to be a YAML mapping with `servers:`")

    try:
        spec = _validate(raw, source=source, base_dir=base_dir)
    except _SpecProblems as err:
        raise SpecError(source, [(at(loc), msg) for loc, msg in err.problems]) from None
    return spec


class _SpecProblems(Exception):
    def __init__(self, problems: list[tuple[tuple[int | str, ...], str]]) -> None:
        super().__init__("; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in problems))
        self.problems = problems


def _validate(raw: Mapping[str, Any], *, source: str, base_dir: Path | None) -> SimSpec:
    try:
        spec = SimSpec.model_validate({**raw, "source": source, "base_dir": base_dir})
    except ValidationError as err:
        problems = [(tuple(p for p in e["loc"] if p not in _TAGS), _describe(dict(e)))
                    for e in err.errors()]
        raise _SpecProblems(problems) from None
    if problems := _cross_check(spec):
        raise _SpecProblems(problems)
    return spec


def load_spec(path: str | Path) -> SimSpec:
    """Read, parse and validate a spec file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise SpecError(str(path), [("", f"cannot read the spec: {err.strerror}")]) from err
    return parse_spec(text, source=str(path), base_dir=p.parent)


def spec_from_mapping(raw: Mapping[str, Any], *, source: str = "<spec>",
                      base_dir: Path | None = None) -> SimSpec:
    """Validate an already-parsed spec (a dict). Raises `SpecError` naming each field."""
    try:
        return _validate(raw, source=source, base_dir=base_dir)
    except _SpecProblems as err:
        raise SpecError(source, [(format_loc(loc), msg) for loc, msg in err.problems]) from None


def as_spec(spec: SimSpec | Mapping[str, Any] | str | Path) -> SimSpec:
    """A spec from a spec, a parsed mapping, or a file path."""
    if isinstance(spec, SimSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_mapping(spec)
    return load_spec(spec)


assert set(BEHAVIOURS) == set(get_args(BehaviourName))  # the Literal and the registry agree
