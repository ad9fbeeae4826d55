"""The config file: YAML -> typed, validated models (DESIGN.md 4.2 is the contract).

Every problem is reported with the file, the line where YAML has one, and the field path:
``examples/street.yaml:31: devices[2].points[0].type: 'flaot32' is not one of bool, int16, ...``
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from drivers.gpio import parse_pin
from drivers.modbus.planner import DEFAULT_MAX_GAP, PlanError, plan_device
from drivers.modbus.registers import DataType, Order, PointSpec, Table
from gateway.commands.config import CommandsCfg
from gateway.errors import ConfigError
from policies.common import check_timezone, describe_error, format_path
from policies.validation import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROFILE_DIR = Path(__file__).parent / "profiles"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------- gateway
class Location(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)


class GatewayCfg(_Model):
    id: str = Field(pattern=NAME_RE, max_length=64)
    site: str = ""
    groups: list[Annotated[str, Field(pattern=NAME_RE)]] = []
    location: Location | None = None
    has_rtc: bool = False   # a battery-backed clock: time counts as trusted from boot
    trust_ntp: bool = True  # the kernel's NTP-synchronised flag makes the clock trusted


# ------------------------------------------------------------------------------------------ mqtt
class TlsCfg(_Model):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure_skip_verify: Literal[False] = False   # there is no switch to turn checks off

    def with_base(self, base_dir: Path) -> TlsCfg:
        """Relative paths resolved against ``base_dir`` (the config file's folder)."""
        def fix(p: str | None) -> str | None:
            return p if p is None or Path(p).is_absolute() else str(base_dir / p)
        return self.model_copy(update={"ca": fix(self.ca), "cert": fix(self.cert),
                                       "key": fix(self.key)})


MQTT_URL_RE = r"^mqtts?://[^\s/:]+(:\d{1,5})?/?$"


SPARKPLUG_ID_RE = r"^[^/+#\s]+$"


class SparkplugCfg(_Model):
    """``mqtt.format: sparkplug`` (docs/platform-integration.md)."""

    group_id: str | None = Field(default=None, pattern=SPARKPLUG_ID_RE)      # default: site
    edge_node_id: str | None = Field(default=None, pattern=SPARKPLUG_ID_RE)  # default: id
    # hold the births and the data until this host application's STATE says it is online
    primary_host: str | None = Field(default=None, pattern=SPARKPLUG_ID_RE)
    data_qos: Literal[0, 1] = 1              # 1: stored data is deleted once the broker has it
    historical_after: float = Field(default=30.0, gt=0)   # older data is sent is_historical
    override_duration_s: int = Field(default=3600, ge=1, le=7 * 86400)
    override_priority: int = Field(default=50, ge=0, le=999)


class ThingsBoardCfg(_Model):
    """``mqtt.format: thingsboard`` (docs/platform-integration.md)."""

    # ThingsBoard device names are global in a tenant: a device's name there
    device_name: str = Field(default="{gateway}.{device}", min_length=1, max_length=200)

    @field_validator("device_name")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(v)
                      if name is not None]
        except ValueError as err:
            raise ValueError(f"is not a valid template ({err})") from None
        for name, spec, conv in fields:
            if name not in ("gateway", "device"):
                raise ValueError("may use only {gateway} and {device} as placeholders, "
                                 f"not {{{name}}}")
            if spec or conv:          # {device:>99999999}: a width would be built in memory
                raise ValueError(f"placeholders take no format (write {{{name}}})")
        if "{device}" not in v:
            raise ValueError("must contain {device} (each device needs its own name)")
        return v


class MqttCfg(_Model):
    url: Annotated[str, Field(pattern=MQTT_URL_RE)] | list[
        Annotated[str, Field(pattern=MQTT_URL_RE)]] = "mqtt://127.0.0.1:1883"
    topic_prefix: str = Field(default="city/v1", pattern=r"^[^#+\s]+$")
    tls: TlsCfg | None = None
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    max_inflight: int = Field(default=20, ge=1, le=1000)
    reconnect_min: float = Field(default=1.0, gt=0, le=600)    # first retry delay, seconds
    reconnect_max: float = Field(default=60.0, gt=0, le=3600)  # backoff cap, seconds
    connect_timeout: float = Field(default=10.0, gt=0, le=120)
    replay_rate: float = Field(default=50_000, gt=0)           # points/s when draining a backlog
    # the wire format (docs/platform-integration.md): ours, Sparkplug B, ThingsBoard's API
    format: Literal["edgegw", "sparkplug", "thingsboard"] = "edgegw"
    sparkplug: SparkplugCfg | None = None
    thingsboard: ThingsBoardCfg | None = None

    @property
    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)


class TelemetryCfg(_Model):
    batch_interval: float = Field(default=5.0, gt=0, le=3600)
    max_batch_points: int = Field(default=2000, ge=1, le=100_000)
    compression: Literal["zstd", "zlib", "none"] = "zstd"
    # a point with a deadband is still reported at least this often (seconds), so the
    # platform can tell "unchanged" from "gone"
    max_silence: float = Field(default=300.0, gt=0)


class StoreCfg(_Model):
    path: str = "/var/lib/edgegw/store.db"
    max_mb: float = Field(default=256, gt=0)
    # full: every commit fsynced (survives power loss); normal: fewer syncs, less SD wear
    synchronous: Literal["full", "normal"] = "full"
    # an operation that takes longer is a stalled store (a frozen or dying card): the agent
    # says so and keeps what it would have written in memory
    stall_timeout: float = Field(default=5.0, gt=0, le=300)
    # while the store fails: telemetry points and events kept in memory (oldest dropped first)
    buffer_points: int = Field(default=100_000, ge=0, le=10_000_000)
    buffer_events: int = Field(default=2_000, ge=0, le=100_000)
    # deleting what the broker acknowledged waits up to this long to share the next commit
    # (a batch's): one fsync per batch instead of two; a crash re-sends at most this much
    # (same seq, same content: a duplicate the platform drops). 0: each deletion at once;
    # unset: twice telemetry.batch_interval (at least 1 s), so the next batch always comes first
    ack_delay: float | None = Field(default=None, ge=0, le=600)


# ----------------------------------------------------------------------------------------- buses
class _BusBase(_Model):
    name: str = Field(pattern=NAME_RE)
    timeout: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=10)


class ModbusRtuBus(_BusBase):
    type: Literal["modbus-rtu"]
    port: str
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusTcpBus(_BusBase):
    type: Literal["modbus-tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)


class SerialBus(_BusBase):
    type: Literal["serial"]
    port: str
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    protocol: Literal["sds011", "nmea", "lines"]
    pattern: str | None = None          # `lines`: a regex with named groups
    device: str | None = None           # the device name the samples are reported under
    period: float = Field(default=1.0, gt=0, le=3600)     # seconds between frames
    stale_periods: float = Field(default=5.0, gt=0)        # silent this many periods = stale
    scales: dict[str, float] = {}       # `lines`: per named group, value = raw x scale + offset
    offsets: dict[str, float] = {}

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from err
        return v


Bus = Annotated[ModbusRtuBus | ModbusTcpBus | SerialBus, Field(discriminator="type")]


# ------------------------------------------------------------------------------------------ gpio
class _GpioPin(_Model):
    name: str = Field(pattern=NAME_RE)
    pin: int | str                 # BCM number, or GPIO17 / BCM17 / BOARD11 / J8:11

    @field_validator("pin")
    @classmethod
    def _pin(cls, v: int | str) -> int | str:
        parse_pin(v)               # ValueError naming the forms a pin is written in
        return v

    @property
    def bcm(self) -> int:
        return parse_pin(self.pin)


class GpioOutputCfg(_GpioPin):
    kind: Literal["relay", "pwm"] = "relay"
    active_high: bool = True
    min_switch_interval: float = Field(default=5.0, ge=0, le=3600)   # relay anti-chatter, s
    frequency: int = Field(default=1000, ge=1, le=100_000)           # pwm, Hz


class GpioInputCfg(_GpioPin):
    # reported as device NAME, point KIND
    kind: Literal["motion", "switch", "contact"] = "contact"
    pull_up: bool = False


class GpioCfg(_Model):
    # auto: RPi.GPIO on a Raspberry Pi up to 4, lgpio on a Pi 5, an error elsewhere (never a
    # silent fall-back to the simulation); mock: simulated pins
    factory: Literal["auto", "mock", "rpigpio", "lgpio"] = "auto"
    outputs: list[GpioOutputCfg] = []
    inputs: list[GpioInputCfg] = []


# --------------------------------------------------------------------------------------- devices
class PointCfg(_Model):
    name: str = Field(pattern=NAME_RE)
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType
    length: int | None = Field(default=None, ge=1, le=125)
    bit: int | None = Field(default=None, ge=0, le=15)
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    writable: bool = False
    deadband: float | None = Field(default=None, ge=0)
    poll: float | None = Field(default=None, gt=0)
    min: float | None = None
    max: float | None = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PointCfg:
        if self.table.is_bits and self.type is not DataType.BOOL:
            raise ValueError(f"a {self.table} point must have type bool, not {self.type}")
        if self.type is DataType.STRING and self.length is None:
            raise ValueError("a string point needs `length` (in registers)")
        if self.bit is not None and (self.type is not DataType.BOOL or self.table.is_bits):
            raise ValueError("`bit` is only for bool points in holding or input registers")
        if self.writable and not self.table.is_writable:
            raise ValueError(f"a {self.table} point cannot be writable (read-only table)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.address + self.spec().width - 1 > 65535:
            raise ValueError("the point runs past register 65535")
        return self

    def spec(self) -> PointSpec:
        return PointSpec(
            name=self.name, table=self.table, address=self.address, type=self.type,
            length=self.length, bit=self.bit, byte_order=self.byte_order,
            word_order=self.word_order, scale=self.scale, offset=self.offset, unit=self.unit,
            writable=self.writable, deadband=self.deadband, poll=self.poll, min=self.min,
            max=self.max,
        )


class DeviceCfg(_Model):
    name: str = Field(pattern=NAME_RE)
    bus: str
    unit: int = Field(default=1, ge=0, le=247)
    poll: float = Field(default=10.0, gt=0, le=86400)
    profile: str | None = None
    points: list[PointCfg] = []
    max_gap: int = Field(default=DEFAULT_MAX_GAP, ge=0, le=124)
    enabled: bool = True

    def specs(self) -> tuple[PointSpec, ...]:
        return tuple(p.spec() for p in self.points)


class ServiceCfg(_Model):
    control_socket: str = "/run/edgegw/control.sock"
    health_interval: float = Field(default=60.0, gt=0, le=3600)   # `gateway` device telemetry
    status_interval: float = Field(default=5.0, gt=0, le=600)     # systemd STATUS= refresh
    connect_jitter: float = Field(default=10.0, ge=0, le=600)     # first MQTT connect, s
    # a critical component (lighting, store, pipeline, publisher, link) that fails more than
    # restart_limit times within restart_window seconds stops the agent (exit 1): systemd
    # starts a fresh one
    restart_limit: int = Field(default=5, ge=0, le=1000)
    restart_window: float = Field(default=300.0, gt=0, le=86400)


# ------------------------------------------------------------------------------------------- web
LISTEN_RE = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}$"


class WebTlsCfg(_Model):
    cert: str                      # PEM certificate (chain) the page is served with
    key: str                       # its private key (0600)

    def with_base(self, base_dir: Path) -> WebTlsCfg:
        def fix(p: str) -> str:
            return p if Path(p).is_absolute() else str(base_dir / p)
        return self.model_copy(update={"cert": fix(self.cert), "key": fix(self.key)})


class WebCfg(_Model):
    """The technician's local web page (gateway/web): off unless the section is present."""

    # HOST:PORT, or several; [::]:8443 for IPv6
    listen: Annotated[str, Field(pattern=LISTEN_RE)] | list[
        Annotated[str, Field(pattern=LISTEN_RE)]] = "0.0.0.0:8443"
    # None: a self-signed certificate made at first start, kept beside the store
    tls: WebTlsCfg | None = None
    users: str = "web-users"       # the accounts file (edgegw provision --web-user), 0600
    session_idle: float = Field(default=900.0, ge=30, le=86400)        # seconds
    session_max: float = Field(default=8 * 3600.0, ge=60, le=7 * 86400)
    login_per_minute: int = Field(default=5, ge=1, le=600)   # failed log-ins per address
    max_connections: int = Field(default=16, ge=2, le=256)
    max_streams: int = Field(default=4, ge=1, le=64)         # live-update streams at once

    @property
    def listens(self) -> list[str]:
        return [self.listen] if isinstance(self.listen, str) else list(self.listen)

    def with_base(self, base_dir: Path) -> WebCfg:
        users = self.users if Path(self.users).is_absolute() else str(base_dir / self.users)
        return self.model_copy(update={
            "users": users, "tls": self.tls.with_base(base_dir) if self.tls else None})


class Config(_Model):
    gateway: GatewayCfg
    mqtt: MqttCfg = MqttCfg()
    telemetry: TelemetryCfg = TelemetryCfg()
    store: StoreCfg = StoreCfg()
    buses: list[Bus] = []
    devices: list[DeviceCfg] = []
    gpio: GpioCfg | None = None
    lighting: dict[str, Any] | None = None
    alerts: dict[str, Any] | list[Any] | None = None
    commands: CommandsCfg = CommandsCfg()
    service: ServiceCfg = ServiceCfg()
    web: WebCfg | None = None

    # where the file came from (not a config key)
    source: str = Field(default="<config>", exclude=True)

    def bus(self, name: str) -> ModbusRtuBus | ModbusTcpBus | SerialBus:
        for b in self.buses:
            if b.name == name:
                return b
        raise KeyError(name)

    def device(self, name: str) -> DeviceCfg:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def digest(self) -> str:
        """A short hash of the effective config, reported in the birth message."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------------- profiles
def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(ref: str, *, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The raw point list of a profile: ``builtin:NAME`` or a path (relative to the config)."""
    if ref.startswith("builtin:"):
        name = ref.split(":", 1)[1]
        path = PROFILE_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown builtin profile {name!r} (builtin: {', '.join(builtin_profiles())})")
    else:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ValueError(f"profile file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"profile {ref!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ValueError(f"profile {ref!r} must be a mapping with a `points:` list")
    return list(data["points"])


# ----------------------------------------------------------------------------------- loading
#: ``('devices', 2, 'points')`` -> ``devices[2].points`` (the simulators' spec uses it too)
format_loc = format_path


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # an error path holds the union tag (`modbus-rtu`) or a function name in the path: drop them
    return tuple(p for p in loc if isinstance(p, int) or (
        not p.startswith(("function-", "union[", "list[", "constrained-str"))
        and p not in ("modbus-rtu", "modbus-tcp", "serial", "str")
    ))


class _Lines:
    """Field path -> line number, from YAML's node tree."""

    def __init__(self, text: str) -> None:
        try:
            self.root: yaml.Node | None = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

    def line(self, loc: tuple[int | str, ...]) -> int | None:
        node = self.root
        best = None
        for part in loc:
            if node is None:
                break
            best = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == part:
                        best = k.start_mark.line + 1
                        nxt = v
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
        if node is not None:
            best = node.start_mark.line + 1
        return best


Locator = Callable[[tuple[int | str, ...]], str]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    one silently: a second `store:` would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:        # an unhashable key: the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first}): the "
                    "second would silently replace the first; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_checked_timestamp(self, node: yaml.ScalarNode) -> Any:
        # a date that does not exist (2027-02-30) is a located error, not a traceback
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError as err:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a date: {err}", node.start_mark) from None


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp",
                                 _UniqueKeyLoader.construct_checked_timestamp)


def load_yaml(text: str) -> Any:
    """YAML as every edgegw file is read: safe (no tags run code), a key twice in one mapping
    and an impossible date are errors with their line (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(text: str, *, source: str, expected: str,
              error: type[ConfigError] = ConfigError) -> tuple[dict[str, Any], Locator]:
    """YAML text -> (the mapping, a locator that turns a field path into "line N: a[2].b").

    Raises `error` for text that is not YAML, or not a mapping (`expected` says what it should
    be, e.g. "a YAML mapping (key: value)").
    """
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise error(source, [(where, f"not valid YAML: {err}")]) from err
    except RecursionError:
        raise error(source, [("", "nested too deeply to be a config (hundreds of levels)")]
                    ) from None
    if not isinstance(raw, dict):
        raise error(source, [("", f"expected {expected}")])
    lines = _Lines(text)

    def at(loc: tuple[int | str, ...]) -> str:
        ln = lines.line(loc)
        path = format_loc(loc)
        return f"line {ln}: {path}" if ln else path

    return raw, at


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None,
                 check_files: bool = False) -> Config:
    """Parse and validate config text. Raises ConfigError naming every problem found. With
    ``check_files``, also the files `run` would read (keys, certificates) and the store's
    directory."""
    raw, at = read_yaml(text, source=source,
                        expected="the config to be a YAML mapping (key: value)")

    # resolve profiles: profile points first, inline points override by name or extend
    problems: list[tuple[str, str]] = []
    devices = raw.get("devices")
    if isinstance(devices, list):
        for i, dev in enumerate(devices):
            if not isinstance(dev, dict) or not dev.get("profile"):
                continue
            try:
                prof_points = load_profile(str(dev["profile"]), base_dir=base_dir)
            except ValueError as err:
                problems.append((at(("devices", i, "profile")), str(err)))
                continue
            inline = dev.get("points") or []
            if not isinstance(inline, list):
                continue
            names = {p.get("name") for p in inline if isinstance(p, dict)}
            dev["points"] = [p for p in prof_points if p.get("name") not in names] + inline
            dev["_profile_count"] = len(prof_points)
    if problems:
        raise ConfigError(source, problems)

    # strip bookkeeping before validation; keep counts for error positions of profile points
    profile_counts: dict[int, int] = {}
    if isinstance(devices, list):
        for i, dev in enumerate(devices):
            if isinstance(dev, dict) and "_profile_count" in dev:
                profile_counts[i] = dev.pop("_profile_count")
    try:
        cfg = Config.model_validate({**raw, "source": source})
    except ValidationError as err:
        for e in err.errors():
            loc = _clean_loc(tuple(e["loc"]))
            problems.append((at(loc), describe_error(e, doc="docs/configuration.md",
                                                     name_form=None)))
        raise ConfigError(source, problems) from None
    if base_dir is not None and cfg.commands.signing is not None:
        cfg = cfg.model_copy(update={"commands": cfg.commands.model_copy(
            update={"signing": cfg.commands.signing.with_base(base_dir)})})
    if base_dir is not None and cfg.web is not None:
        cfg = cfg.model_copy(update={"web": cfg.web.with_base(base_dir)})
    if base_dir is not None and cfg.mqtt.tls is not None:
        cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(
            update={"tls": cfg.mqtt.tls.with_base(base_dir)})})
    problems.extend(_cross_check(cfg))
    if check_files:                  # a file on disk: what `run` would read, checked now
        problems.extend(_check_files(cfg))
    if problems:
        raise ConfigError(source, [(at(_parse_path(path)), msg) for path, msg in problems])
    return cfg


def _parse_path(path: str) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for name, idx in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        out.append(int(idx) if idx else name)
    return tuple(out)


def _cross_check(cfg: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    bus_names: dict[str, int] = {}
    for i, b in enumerate(cfg.buses):
        if b.name in bus_names:
            problems.append((f"buses[{i}].name", f"bus name {b.name!r} is used twice"))
        bus_names[b.name] = i
        if isinstance(b, SerialBus) and b.protocol == "lines" and not b.pattern:
            problems.append((f"buses[{i}].pattern",
                             "protocol `lines` needs a `pattern` with named groups"))
    if cfg.gpio is not None:
        pins: dict[int, str] = {}
        for where, items in (("outputs", cfg.gpio.outputs), ("inputs", cfg.gpio.inputs)):
            for i, item in enumerate(items):
                other = pins.setdefault(item.bcm, item.name)
                if other != item.name:
                    problems.append((f"gpio.{where}[{i}].pin",
                                     f"GPIO {item.bcm} is already used by {other}"))
    problems.extend(_check_lighting(cfg))
    problems.extend(_check_alerts(cfg))
    seen_dev: set[str] = set()
    seen_unit: dict[tuple[str, int], str] = {}
    for i, d in enumerate(cfg.devices):
        where = f"devices[{i}]"
        if d.name in seen_dev:
            problems.append((f"{where}.name", f"device name {d.name!r} is used twice"))
        if d.name in ("gateway", "lighting"):
            problems.append((f"{where}.name", f"{d.name!r} is the name of a built-in device "
                                              "(the agent's own telemetry): choose another"))
        seen_dev.add(d.name)
        if d.bus not in bus_names:
            known = ", ".join(bus_names) or "none defined"
            problems.append((f"{where}.bus", f"no bus named {d.bus!r} (buses: {known})"))
            continue
        bus = cfg.buses[bus_names[d.bus]]
        if isinstance(bus, SerialBus):
            continue
        if d.unit == 0 and isinstance(bus, ModbusRtuBus):
            problems.append((f"{where}.unit", "unit 0 is the RS-485 broadcast address: no device "
                                              "answers it; give the device's own address "
                                              "(1..247)"))
        key = (d.bus, d.unit)
        if key in seen_unit and d.enabled:
            problems.append((f"{where}.unit",
                             f"unit {d.unit} on bus {d.bus} is already used by {seen_unit[key]}"))
        seen_unit[key] = d.name
        if not d.points:
            problems.append((f"{where}", "the device has no points (give `profile:` or `points:`)"))
        names: set[str] = set()
        for j, p in enumerate(d.points):
            if p.name in names:
                problems.append((f"{where}.points[{j}].name",
                                 f"point name {p.name!r} is used twice in {d.name}"))
            names.add(p.name)
        try:
            plan_device(d.specs(), default_period=d.poll, max_gap=d.max_gap)
        except PlanError as err:
            problems.append((f"{where}.points", str(err)))
    return problems


def _installed(*modules: str) -> bool:
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:        # a parent package is missing
        return False


def _check_files(cfg: Config) -> list[tuple[str, str]]:
    """The files `run` would read and the store's directory, checked at validate time: a
    missing CA or key, a key others can read, a key file that does not load, a store path
    that cannot be a directory."""
    import stat

    problems: list[tuple[str, str]] = []
    tls = cfg.mqtt.tls
    if tls is not None:
        for name in ("ca", "cert", "key"):
            path = getattr(tls, name)
            if path is None:
                continue
            problem = _unreadable(path)
            if problem:
                problems.append((f"mqtt.tls.{name}", problem))
            elif name == "key":
                mode = stat.S_IMODE(os.stat(path).st_mode)
                if mode & 0o077:
                    problems.append(("mqtt.tls.key", f"{path} is readable by others (mode "
                                                     f"{mode:o}); run: chmod 600 {path}"))
        if bool(tls.cert) != bool(tls.key):
            problems.append(("mqtt.tls", "give both `cert` and `key` (a client certificate "
                                         "and its private key), or neither"))
    if cfg.mqtt.password_file:
        problem = _unreadable(cfg.mqtt.password_file)
        if problem:
            problems.append(("mqtt.password_file", problem))
    if cfg.mqtt.format == "sparkplug" and not _installed("google.protobuf",
                                                         "sparkplub_b_packets"):
        problems.append(("mqtt.format", "sparkplug needs protobuf and the Sparkplug "
                                            "payload module: pip install 'edgegw[sparkplug]'"))
    signing = cfg.commands.signing
    if signing is not None:
        try:
            signing.verifier()
        except ConfigError as err:
            for where, msg in err.problems:
                problems.append(("commands.signing", f"{err.source}: {msg}" if not where
                                 else f"{where}: {msg}"))
        except (OSError, ValueError) as err:
            problems.append(("commands.signing", str(err)))
    if cfg.web is not None:
        problems.extend(_check_web_files(cfg.web))
    store_dir = Path(cfg.store.path).parent
    probe = store_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        problems.append(("store.path", f"{probe} is a file, so {store_dir} cannot be created: "
                                       "choose another store.path"))
    elif probe.exists() and os.statvfs(probe).f_flag & os.ST_RDONLY:
        problems.append(("store.path", f"{probe} is on a read-only filesystem: the store "
                                       "cannot be written there"))
    return problems


def _check_web_files(web: WebCfg) -> list[tuple[str, str]]:
    import stat

    problems: list[tuple[str, str]] = []
    files = [("web.users", web.users)]
    if web.tls is not None:
        files += [("web.tls.cert", web.tls.cert), ("web.tls.key", web.tls.key)]
    for where, path in files:
        problem = _unreadable(path)
        if problem:
            if where == "web.users":
                problem += " (make an account: edgegw provision --web-user NAME)"
            problems.append((where, problem))
        elif where in ("web.users", "web.tls.key"):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                problems.append((where, f"{path} is readable by others (mode {mode:o}); "
                                        f"run: chmod 600 {path}"))
    return problems


def _unreadable(path: str) -> str | None:
    p = Path(path)
    if not p.exists():
        return f"{p}: no such file"
    if not p.is_file():
        return f"{p}: not a file"
    try:
        with p.open("rb"):
            pass
    except OSError as err:
        return f"{p}: cannot read it ({err.strerror})"
    return None


def known_points(cfg: Config) -> dict[tuple[str, str], bool]:
    """Every (device, point) the agent can read, with whether it is writable: Modbus points,
    GPIO inputs (point = their kind), serial sensors' points."""
    out = {(d.name, p.name): p.writable for d in cfg.devices for p in d.points}
    if cfg.gpio is not None:
        out.update({(i.name, i.kind): False for i in cfg.gpio.inputs})
    serial_points = {"sds011": ["pm25", "pm10"],
                     "nmea": ["latitude", "longitude", "altitude", "satellites", "fix_quality"]}
    for b in cfg.buses:
        if isinstance(b, SerialBus):
            names = serial_points.get(b.protocol) or (
                list(re.compile(b.pattern).groupindex) if b.pattern else [])
            out.update({(b.device or b.name, n): False for n in names})
    return out


def _check_lighting(cfg: Config) -> list[tuple[str, str]]:
    if not cfg.lighting:
        return []
    from policies.lighting import LightingConfigError, parse_lighting

    try:
        rules = parse_lighting(cfg.lighting, location=cfg.gateway.location)
    except LightingConfigError as err:
        return [(f"lighting.{p}" if p else "lighting", m) for p, m in err.problems]
    from gateway.lighting import cross_check_rules

    gpio_outs = [o.name for o in cfg.gpio.outputs] if cfg.gpio else []
    return cross_check_rules(rules, known_points(cfg), gpio_outs)


def _check_alerts(cfg: Config) -> list[tuple[str, str]]:
    if not cfg.alerts:
        return []
    from policies.alerts import AlertConfigError, load_alerts

    groups = [str(g.get("name")) for g in (cfg.lighting or {}).get("groups", [])
              if isinstance(g, dict)]
    tz = cfg.gateway.location.timezone if cfg.gateway.location else None
    raw = cfg.alerts if isinstance(cfg.alerts, dict) else None
    if raw is None:
        return [("alerts", "expected a mapping with a `rules:` list (see docs/alerts.md)")]
    try:
        _rules, warnings = load_alerts(raw, timezone=tz, points=known_points(cfg),
                                       groups=groups)
    except AlertConfigError as err:
        return [(f"alerts.{p}" if p else "alerts", m) for p, m in err.problems]
    # in a gateway config an unknown point or group is an error: a typo would never fire
    return [(f"alerts.{w.path}" if w.path else "alerts", w.message) for w in warnings
            if "is not a configured point" in w.message
            or w.message.startswith("no lighting group")]


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(str(path), [("", f"cannot read the config: {err.strerror}")]) from err
    return parse_config(text, source=str(path), base_dir=p.parent, check_files=True)


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema.get("properties", {}).pop("source", None)
    schema["title"] = "edgegw configuration"
    return schema
