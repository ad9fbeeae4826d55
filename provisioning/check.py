"""`edgegw check`: the on-site checklist, its verdict, and the commissioning report.

:func:`run_checks` tests the site the config describes, with the agent's own drivers and
settings, and returns a :class:`CheckReport`: one :class:`CheckResult` per line of the checklist,
each PASS, WARN (passes, but look at it), FAIL (with a `hint`: what to do) or SKIP (does not
apply). The verdict is PASS only when nothing failed. In order:

- config: the file parses and validates (`load_config`), and so do the lighting rules
  (`parse_lighting`, with their warnings);
- agent: whether `edgegw run` is running (it holds serial ports; the lamp test needs it stopped);
- secrets: key and password files exist and are 0600; the client certificate is this
  gateway's, matches the key, and is not about to expire;
- broker: each broker URL accepts a connection (TLS and the client certificate included), under
  a client id of its own so the running agent is not kicked off;
- each Modbus device answers a full read of its points (one poll, as the agent makes it);
- each serial sensor delivers a valid frame (a port the agent holds shows as busy);
- clock: NTP synchronised, a battery-backed RTC, or a GPS time fix seen during the check;
- store: its directory takes a new SQLite store (written, read, deleted beside the real one);
- outputs: each lighting group's Modbus outputs read back their level;
- with `lamp_test`: each group's Modbus outputs go off, 50 %, 100 %, the lamp power is read back
  at each step, and the previous level is restored.

Checks that do not depend on each other (broker, Modbus buses, serial sensors) run concurrently.
:func:`report_json` and :func:`report_text` give the commissioning report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import pwd
import secrets as pysecrets
import shutil
import socket
import ssl
import subprocess
import termios
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from drivers.errors import DriverError
from drivers.modbus.bus import BusEvent, DeviceSettings, ModbusBus
from drivers.modbus.planner import plan_device
from drivers.modbus.registers import DataType, PointSpec, Value
from drivers.sample import Quality, Sample
from drivers.serial.reader import LinkState, SerialReader
from gateway import __version__
from gateway.config import (
    Config,
    DeviceCfg,
    ModbusRtuBus,
    ModbusTcpBus,
    SerialBus,
    parse_config,
)
from gateway.errors import ConfigError, StoreError
from gateway.files import PUBLIC_MODE, write_atomic
from gateway.link import check_secret_file, tls_context
from gateway.store import Store
from gateway.wiring import modbus_settings, serial_settings
from provisioning.identity import IdentityError, load_key, verify_certificate
from provisioning.ports import Holder, agents_of, port_holders

CERT_WARN_DAYS = 30
CLOCK_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)   # a clock before this is surely unset
LAMP_LEVELS = (0.0, 50.0, 100.0)
SERVICE_USER = "edgegw"        # the user deploy/install.sh runs the agent as


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"       # passes; worth a look
    FAIL = "fail"
    SKIP = "skip"       # does not apply to this config


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One line of the checklist."""

    key: str                          # stable id: "config", "device:lamp-1", "broker:URL"...
    title: str
    status: Status
    detail: str
    hint: str | None = None           # what to do (failures and warnings)
    started_at: float = 0.0           # wall-clock time the check began (Unix seconds)
    duration_s: float = 0.0
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": str(self.status),
                "detail": self.detail, "hint": self.hint,
                "started_at": _iso(self.started_at), "duration_s": round(self.duration_s, 3),
                "data": dict(self.data)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOptions:
    """How the checks run. The probes of the machine itself are injectable for tests."""

    timeout: float = 5.0                  # broker connect, a Modbus answer, a serial frame
    lamp_test: bool = False
    settle: float = 2.0                   # seconds a driver gets to reach a new level
    lamp_levels: tuple[float, ...] = LAMP_LEVELS
    ntp_probe: Callable[[], str | None] | None = None        # "NTP synchronised (...)" or None
    # None: the agent of the checked config (its control socket, or `run` with this file)
    agent_probe: Callable[[], tuple[Holder, ...]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    config_path: str
    gateway: Mapping[str, Any]            # id, site, groups, location (what the config says)
    config_digest: str | None
    started_at: float
    finished_at: float
    results: tuple[CheckResult, ...]
    versions: Mapping[str, str]
    host: str

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAIL)

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def verdict(self) -> Status:
        return Status.PASS if self.passed else Status.FAIL

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for r in self.results if r.status is s) for s in Status}


# ------------------------------------------------------------------------------- helpers
def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


class _Timer:
    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = time.monotonic()

    def result(self, key: str, title: str, status: Status, detail: str, *,
               hint: str | None = None, data: Mapping[str, Any] | None = None) -> CheckResult:
        return CheckResult(key=key, title=title, status=status, detail=detail, hint=hint,
                           started_at=self.wall, duration_s=time.monotonic() - self.mono,
                           data=dict(data or {}))


def _fmt_value(value: Value | None, unit: str | None = None) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def versions() -> dict[str, str]:
    out = {"edgegw": __version__, "python": platform.python_version(),
           "os": f"{platform.system()} {platform.release()}", "machine": platform.machine()}
    for dist in ("pymodbus", "pyserial", "aiomqtt", "paho-mqtt", "cryptography"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------------- config
def _check_config(path: Path) -> tuple[Config | None, CheckResult]:
    t = _Timer()
    try:
        # the files it names (keys, certificates) get rows of their own below, with a fix each
        text = path.read_text()
        cfg = parse_config(text, source=str(path), base_dir=path.parent)
    except OSError as err:
        return None, t.result("config", "config valid", Status.FAIL,
                              f"{path}: cannot read the config: {err.strerror}",
                              hint="check the path and its permissions")
    except ConfigError as err:
        problems = [f"{where}: {msg}" if where else msg for where, msg in err.problems]
        return None, t.result(
            "config", "config valid", Status.FAIL,
            f"{len(problems)} problem(s): " + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else ""),
            hint=f"fix each line named (edgegw config validate --config {path} lists them "
                 "all; docs/configuration.md explains every key), then run the check again",
            data={"problems": problems})
    n_points = sum(len(d.points) for d in cfg.devices)
    return cfg, t.result(
        "config", "config valid", Status.PASS,
        f"{path}: gateway {cfg.gateway.id}, {len(cfg.buses)} bus(es), {len(cfg.devices)} "
        f"device(s), {n_points} point(s)", data={"digest": cfg.digest()})


def _check_lighting(cfg: Config) -> CheckResult:
    t = _Timer()
    if not cfg.lighting:
        return t.result("lighting", "lighting rules", Status.SKIP, "no lighting section")
    from policies.lighting import LightingConfigError, parse_lighting, validate

    try:
        rules = parse_lighting(cfg.lighting, location=cfg.gateway.location)
    except LightingConfigError as err:
        return t.result("lighting", "lighting rules", Status.FAIL, str(err).replace("\n", "; "),
                        hint="fix the lighting section (docs/lighting-rules.md); "
                             "`edgegw rules preview` shows a night hour by hour")
    warnings = validate(rules)
    n_out = sum(len(g.outputs) for g in rules.groups)
    detail = f"{len(rules.groups)} group(s), {n_out} output(s)"
    if warnings:
        return t.result("lighting", "lighting rules", Status.WARN,
                        f"{detail}; {len(warnings)} warning(s): "
                        + "; ".join(str(w) for w in warnings[:3]),
                        hint="look at the warnings with `edgegw rules preview`",
                        data={"warnings": [str(w) for w in warnings]})
    return t.result("lighting", "lighting rules", Status.PASS, detail)


def _check_agent(options: CheckOptions, cfg: Config,
                 path: Path) -> tuple[tuple[Holder, ...], CheckResult]:
    t = _Timer()
    agents = (options.agent_probe() if options.agent_probe is not None
              else agents_of(path, cfg.service.control_socket))
    if not agents:
        return agents, t.result("agent", "agent stopped", Status.PASS,
                                f"no agent of {path} is running (nothing answers on "
                                f"{cfg.service.control_socket})")
    who = ", ".join(f"pid {a.pid}" for a in agents)
    return agents, t.result(
        "agent", "agent stopped", Status.WARN,
        f"an agent is running ({who}): serial ports it holds show as busy"
        + ("; the lamp test will not run" if options.lamp_test else ""),
        hint="for a full check: sudo systemctl stop edgegw, check, sudo systemctl start edgegw",
        data={"pids": [a.pid for a in agents]})


# -------------------------------------------------------------------------------- secrets
def _check_secrets(cfg: Config) -> list[CheckResult]:
    out = []
    tls = cfg.mqtt.tls
    files = []
    if tls is not None and tls.key:
        files.append(("mqtt.tls.key", tls.key))
    if cfg.mqtt.password_file:
        files.append(("mqtt.password_file", cfg.mqtt.password_file))
    signing = cfg.commands.signing
    if signing is not None and signing.key_file:
        # an HMAC secret is a secret; an Ed25519 public key is not
        files.append(("commands.signing.key_file", str(signing.key_file)))
    service_uid = _service_uid()
    for what, path in files:
        t = _Timer()
        try:
            check_secret_file(path, what=what)
        except ConfigError as err:
            msg = err.problems[0][1] if err.problems else str(err)
            hint = (f"run: chmod 600 {path} (and chown it to the user that runs edgegw)"
                    if "readable by others" in msg else
                    "fix the path, or install the file (edgegw provision --cert ... installs "
                    "the certificate beside the key)")
            out.append(t.result(f"secret:{what}", f"secret {what}", Status.FAIL,
                                f"{path}: {msg}", hint=hint))
            continue
        st = Path(path).stat()
        mode = st.st_mode & 0o777
        if service_uid is not None and st.st_uid != service_uid:
            out.append(t.result(
                f"secret:{what}", f"secret {what}", Status.WARN,
                f"{path}: mode {mode:o}, but not owned by the service user {SERVICE_USER}: "
                "the agent cannot read it",
                hint="sudo /opt/edgegw/current/deploy/install.sh --fix-permissions"))
            continue
        out.append(t.result(f"secret:{what}", f"secret {what}", Status.PASS,
                            f"{path}: mode {mode:o}"))
    out.append(_check_certificate(cfg))
    return out


def _service_uid() -> int | None:
    """The uid of the service user deploy/install.sh creates, if this machine has it."""
    try:
        return pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return None


def _check_certificate(cfg: Config) -> CheckResult:
    t = _Timer()
    title = "client certificate"
    tls = cfg.mqtt.tls
    uses_tls = any(u.startswith("mqtts://") for u in cfg.mqtt.urls)
    if not uses_tls:
        return t.result("certificate", title, Status.WARN,
                        "the broker URL is plain mqtt://: no encryption, no certificate",
                        hint="city brokers take mqtts://; re-run edgegw provision with "
                             "--broker mqtts://HOST:8883 once the PKI has issued the "
                             "certificate")
    if tls is None or not tls.cert:
        return t.result("certificate", title, Status.WARN,
                        "no client certificate configured (mqtt.tls.cert)",
                        hint="send gateway.csr to the city PKI, then install what it returns: "
                             "edgegw provision --out-dir DIR --cert gateway.crt --ca ca.crt")
    try:
        cert_pem = Path(tls.cert).read_bytes()
        key_pem = Path(tls.key or "").read_bytes()
        ca_pem = Path(tls.ca).read_bytes() if tls.ca else None
    except OSError as err:
        return t.result("certificate", title, Status.FAIL,
                        f"cannot read {err.filename}: {err.strerror}",
                        hint="fix mqtt.tls paths, or re-install with edgegw provision --cert")
    try:
        key = load_key(key_pem, source=str(tls.key))
        info = verify_certificate(cert_pem, key=key, gateway_id=cfg.gateway.id, ca_pem=ca_pem,
                                  source=str(tls.cert))
    except IdentityError as err:
        return t.result("certificate", title, Status.FAIL, str(err),
                        hint="install the certificate the PKI issued for this gateway's CSR: "
                             "edgegw provision --out-dir DIR --cert FILE --ca FILE")
    days = info.days_left()
    data = {"subject": info.subject, "issuer": info.issuer, "serial": info.serial,
            "not_after": info.not_after.isoformat(), "sha256": info.sha256}
    detail = (f"CN={info.subject_cn}, issued by {info.issuer}, valid until "
              f"{info.not_after:%Y-%m-%d} ({days:.0f} days)")
    if days < CERT_WARN_DAYS:
        return t.result("certificate", title, Status.WARN, detail,
                        hint="ask the city PKI for a renewal soon", data=data)
    return t.result("certificate", title, Status.PASS, detail, data=data)


# --------------------------------------------------------------------------------- broker
def _broker_hint(err: BaseException, host: str, port: int) -> str:
    text = f"{err} {err.__cause__ or ''}".lower()
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return ("the broker's certificate is not signed by mqtt.tls.ca (wrong CA file?), its "
                "name does not match the URL, or this clock is wrong (see the clock line)")
    if "not authori" in text or "bad user name" in text or "bad username" in text:
        return ("the broker refused this gateway: install its certificate (edgegw provision "
                "--cert ...) and make sure the platform has registered the gateway id")
    if any(s in text for s in ("alert", "handshake", "wrong version", "ssl")):
        return ("TLS failed: mqtts:// to a plain port (or the reverse)? the broker may also "
                "require a client certificate (mqtt.tls.cert/key)")
    if "refused" in text:
        return (f"nothing listens at {host}:{port}: check the URL's port (mqtts is usually "
                "8883), that the broker runs, and firewalls on the way")
    if "name or service not known" in text or "nodename" in text or "getaddrinfo" in text:
        return f"{host} does not resolve: check DNS on this network, or use the IP address"
    if "timed out" in text or "timeout" in text:
        return (f"no answer from {host}:{port}: check the route (ping {host}), the cellular "
                "modem or VPN, and firewalls")
    return "check the broker URL, the network route, and the TLS files"


async def _check_broker(cfg: Config, url: str, answer_timeout: float) -> CheckResult:
    t = _Timer()
    key, title = f"broker:{url}", f"broker {url}"
    u = urlparse(url)
    host = u.hostname or "127.0.0.1"
    port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    tls: ssl.SSLContext | None = None
    password: str | None = None
    try:
        if u.scheme == "mqtts":
            tls = tls_context(cfg.mqtt) or ssl.create_default_context()
        if cfg.mqtt.password_file:
            password = check_secret_file(cfg.mqtt.password_file,
                                         what="mqtt.password_file").read_text().strip()
    except ConfigError as err:
        return t.result(key, title, Status.FAIL, f"cannot set up TLS: {err}",
                        hint="see the secret lines above")
    except (ssl.SSLError, OSError) as err:
        return t.result(key, title, Status.FAIL, f"cannot load the TLS files: {err}",
                        hint="check mqtt.tls ca/cert/key are PEM files of this gateway "
                             "(edgegw provision --cert ... --ca ... installs them)")
    client_id = f"{cfg.mqtt.client_id or cfg.gateway.id}-check-{pysecrets.token_hex(3)}"
    client = aiomqtt.Client(host, port, identifier=client_id, username=cfg.mqtt.username,
                            password=password, tls_context=tls, timeout=answer_timeout,
                            keepalive=max(5, int(answer_timeout) + 5),
                            protocol=aiomqtt.ProtocolVersion.V311)
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(answer_timeout + 1.0), client:
            connected_ms = (time.monotonic() - t0) * 1000
    except TimeoutError as err:
        return t.result(key, title, Status.FAIL, f"no answer within {answer_timeout:g} s",
                        hint=_broker_hint(err, host, port))
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as err:
        return t.result(key, title, Status.FAIL, f"cannot connect: {err}",
                        hint=_broker_hint(err, host, port))
    how = "TLS, broker certificate verified" if tls is not None else "no TLS"
    if tls is not None and cfg.mqtt.tls is not None and cfg.mqtt.tls.cert:
        how += ", client certificate accepted"
    return t.result(key, title, Status.PASS, f"connected in {connected_ms:.0f} ms ({how})",
                    data={"connect_ms": round(connected_ms, 1), "tls": tls is not None})


# --------------------------------------------------------------------------------- modbus
def _line(bus: ModbusRtuBus | ModbusTcpBus) -> str:
    if isinstance(bus, ModbusTcpBus):
        return f"{bus.host}:{bus.port}"
    return f"{bus.port} {bus.baudrate} 8{bus.parity}{bus.stopbits}"


def _bus_problem(bus: ModbusRtuBus | ModbusTcpBus, reason: str) -> tuple[str, str]:
    """(detail, hint) for a bus that cannot be opened at all."""
    if isinstance(bus, ModbusTcpBus):
        return (f"cannot connect to {bus.host}:{bus.port}",
                f"check the Modbus TCP device or gateway at {bus.host} is powered and on this "
                "network (ping it), and its port (502 unless configured otherwise)")
    if not os.path.exists(bus.port):
        return (f"{bus.port} does not exist",
                "plug in the RS-485 adapter; `edgegw scan --list-ports` shows the ports and "
                "their /dev/serial/by-id names")
    holders = port_holders(bus.port)
    if holders:
        who = ", ".join(f"pid {h.pid} ({h.command})" for h in holders)
        return (f"{bus.port} is busy: held by {who}",
                "stop the agent for the check: sudo systemctl stop edgegw (start it after)")
    if not os.access(bus.port, os.R_OK | os.W_OK):
        return (f"no permission to open {bus.port}",
                "run the check as the user that runs edgegw, or add it to group dialout")
    return (f"cannot open {bus.port}: {reason}",
            "the port may be held by another program (stop the agent: sudo systemctl stop "
            "edgegw), or the adapter is faulty")


def _device_hint(bus: ModbusRtuBus | ModbusTcpBus, dev: DeviceCfg, config: str) -> str:
    scan = f"edgegw scan --config {config} --bus {bus.name}"
    if isinstance(bus, ModbusTcpBus):
        return (f"unit {dev.unit} does not answer at {bus.host}:{bus.port}: check the unit id "
                f"({scan} lists who answers) and, behind a TCP-to-RS-485 gateway, its serial "
                "side (wiring, baud rate)")
    return (f"check unit id {dev.unit} ({scan} lists who answers), the device's power, the "
            "RS-485 wiring (A/B swapped? termination at both ends?) and its line settings "
            f"({bus.baudrate} 8{bus.parity}{bus.stopbits}; {scan} --auto-baud finds them)")


async def _check_modbus_bus(cfg: Config, bus: ModbusRtuBus | ModbusTcpBus,
                            answer_timeout: float) -> list[CheckResult]:
    t = _Timer()
    devices = [d for d in cfg.devices if d.bus == bus.name and d.enabled]
    if not devices:
        return [t.result(f"bus:{bus.name}", f"bus {bus.name}", Status.SKIP,
                         f"{bus.type} {_line(bus)}: no devices configured",
                         hint=f"find them: edgegw scan --config {cfg.source} --bus {bus.name}")]
    settings = dataclasses.replace(modbus_settings(bus),
                                   timeout=min(bus.timeout, answer_timeout), reconnect_cap=1.0)
    # one plan per device: every point read once, in the agent's merged requests
    dev_settings = [DeviceSettings(name=d.name, unit=d.unit, poll=3600.0, max_gap=d.max_gap,
                                   points=tuple(dataclasses.replace(p, poll=None)
                                                for p in d.specs()))
                    for d in devices]
    n_reads = sum(len(plan.reads) for s in dev_settings
                  for plan in plan_device(s.points, default_period=s.poll, max_gap=s.max_gap))
    deadline = min(300.0, n_reads * (settings.timeout * (settings.retries + 1) + 0.2) + 2.0)
    latest: dict[tuple[str, str], Sample] = {}
    events: list[BusEvent] = []

    def on_samples(batch: list[Sample]) -> None:
        for s in batch:
            latest[(s.device, s.point)] = s

    bus_obj = ModbusBus(settings, dev_settings, on_samples=on_samples, on_event=events.append)
    try:
        async with bus_obj:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bus_obj.first_cycle_done.wait(), deadline)
    except (termios.error, ValueError) as err:
        # the port refuses the line settings (pyserial raises these past the driver)
        detail, hint = _bus_problem(bus, str(err))
        return [t.result(f"device:{d.name}", f"device {d.name}", Status.FAIL,
                         f"{bus.name} unit {d.unit}: {detail}", hint=hint) for d in devices]
    bus_down = next((e for e in events if e.type == "bus_down"), None)
    out = []
    for d in devices:
        out.append(_device_result(cfg, bus, d, latest, events, bus_down, t, deadline))
    return out


def _device_result(cfg: Config, bus: ModbusRtuBus | ModbusTcpBus, dev: DeviceCfg,
                   latest: Mapping[tuple[str, str], Sample], events: Sequence[BusEvent],
                   bus_down: BusEvent | None, t: _Timer, deadline: float) -> CheckResult:
    key, title = f"device:{dev.name}", f"device {dev.name}"
    where = f"{bus.name} unit {dev.unit}"
    samples = {p.name: latest.get((dev.name, p.name)) for p in dev.points}
    got = {n: s for n, s in samples.items() if s is not None}
    offline = [e for e in events if e.device == dev.name and e.type == "device_offline"]
    reason = str(offline[-1].detail.get("reason", "")) if offline else ""
    good = {n: s for n, s in got.items() if s.quality is Quality.GOOD}
    if len(good) == len(samples):
        units = {p.name: p.unit for p in dev.points}
        shown = ", ".join(f"{n}={_fmt_value(s.value, units.get(n))}"
                          for n, s in list(good.items())[:4])
        more = f" (+{len(good) - 4} more)" if len(good) > 4 else ""
        return t.result(key, title, Status.PASS,
                        f"{where}: {len(good)} point(s) read: {shown}{more}",
                        data={"values": {n: s.value for n, s in good.items()}})
    if "cannot connect" in reason or (bus_down is not None and not got):
        why = reason or str(bus_down.detail.get("reason", "")) if bus_down else reason
        detail, hint = _bus_problem(bus, why)
        return t.result(key, title, Status.FAIL, f"{where}: {detail}", hint=hint)
    if not got or any(s.quality is Quality.TIMEOUT for s in got.values()):
        detail = "no answer" if not got or "timed out" in reason or not reason else reason
        if not got and not offline:
            detail = f"not read within {deadline:.0f} s"
        return t.result(key, title, Status.FAIL, f"{where}: {detail}",
                        hint=_device_hint(bus, dev, cfg.source))
    refused = sorted(n for n, s in got.items() if s.quality is Quality.EXCEPTION)
    if refused:
        codes = sorted({f"{e.detail.get('code')} ({e.detail.get('name')})" for e in events
                        if e.device == dev.name and e.type == "modbus_exception"})
        return t.result(key, title, Status.FAIL,
                        f"{where}: refuses {', '.join(refused)}: exception "
                        f"{', '.join(codes) or '?'}",
                        hint="the device does not have these registers: check that its "
                             "profile/points match this model (the vendor's register table) "
                             "and that the unit id is not another device's")
    bad = sorted(n for n, s in got.items() if s.quality is not Quality.GOOD)
    missing = sorted(n for n, s in samples.items() if s is None)
    return t.result(key, title, Status.FAIL,
                    f"{where}: cannot decode {', '.join(bad + missing)}",
                    hint="check type, length, byte_order and word_order of these points "
                         "against the vendor's register table")


# --------------------------------------------------------------------------------- serial
def _serial_failure(bus: SerialBus, state: LinkState, detail: str,
                    errors: int, dropped: int) -> tuple[str, str]:
    low = detail.lower()
    if "exclusive" in low or "resource temporarily unavailable" in low or "busy" in low:
        holders = port_holders(bus.port)
        who = (" by " + ", ".join(f"pid {h.pid} ({h.command})" for h in holders)
               if holders else " by another program (the running agent?)")
        return (f"{bus.port} is busy: held{who}",
                "the agent reads it already (its telemetry shows the values); to check it "
                "here: sudo systemctl stop edgegw, check, sudo systemctl start edgegw")
    if "no such file" in low or ("could not open port" in low
                                 and not os.path.exists(bus.port)):
        return (f"{bus.port} does not exist",
                "plug in the sensor's adapter; `edgegw scan --list-ports` shows the ports and "
                "their stable /dev/serial/by-id names")
    if "permission" in low:
        return (f"no permission to open {bus.port}",
                "run as the user that runs edgegw, or add it to group dialout")
    if state is LinkState.UNAVAILABLE:
        return (f"cannot open {bus.port}: {detail}", "check the adapter and its cable")
    speeds = {"sds011": "9600", "nmea": "9600 or 4800"}.get(bus.protocol, "the sensor's")
    if errors or dropped:
        return (f"bytes arrive but no valid {bus.protocol} frame ({errors} framing error(s), "
                f"{dropped} byte(s) dropped)",
                f"wrong baud rate ({bus.baudrate} configured; {speeds} is usual) or wrong "
                "protocol; electrical noise on a long cable")
    return (f"silent: no byte from {bus.port}",
            "check the sensor's power and that its TX goes to the adapter's RX; an SDS011 "
            "may be asleep or in query mode")


async def _check_serial(bus: SerialBus, answer_timeout: float
                        ) -> tuple[CheckResult, dt.datetime | None]:
    t = _Timer()
    key, title = f"serial:{bus.name}", f"serial {bus.name}"
    settings = serial_settings(bus)
    values: dict[str, Value] = {}
    statuses: list[tuple[LinkState, str]] = []
    fixes: list[dt.datetime] = []
    fix_seen = asyncio.Event()

    def on_samples(batch: list[Sample]) -> None:
        for s in batch:
            if s.quality is Quality.GOOD and s.value is not None:
                values[s.point] = s.value

    def on_fix(utc: dt.datetime) -> None:
        fixes.append(utc)
        fix_seen.set()

    wait = max(answer_timeout, min(bus.period * 2.5, 120.0))
    reader = SerialReader(settings, on_samples=on_samples,
                          on_status=lambda st, d: statuses.append((st, d)), on_time_fix=on_fix)
    try:
        async with reader:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    reader.wait_for_state(LinkState.ONLINE, LinkState.CLOSED), wait)
            if reader.state is LinkState.ONLINE and bus.protocol == "nmea":
                with contextlib.suppress(TimeoutError):   # a time fix comes with the next RMC
                    await asyncio.wait_for(fix_seen.wait(), min(wait, bus.period * 2.5))
            stats = reader.stats()
            state = reader.state
    except ValueError as err:      # a setting the port refuses: permanent, the reader stops
        return t.result(key, title, Status.FAIL, str(err),
                        hint="check baudrate, bytesize, parity and stopbits of this bus "
                             "against the sensor's data sheet"), None
    where = f"{bus.port} ({bus.protocol}, {bus.baudrate} baud)"
    data: dict[str, Any] = {"frames": stats.frames, "framing_errors": stats.error_count,
                            "dropped_bytes": stats.dropped_bytes}
    fix = fixes[-1] if fixes else None
    if state is LinkState.ONLINE or stats.frames:
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in list(values.items())[:4])
        noise = (f"; {stats.error_count} framing error(s)" if stats.error_count else "")
        status = Status.WARN if stats.error_count > stats.frames else Status.PASS
        return t.result(key, title, status,
                        f"{where}: {stats.frames} frame(s): {shown or 'no values yet'}{noise}"
                        + (f"; GPS time {fix:%H:%M:%S} UTC" if fix else ""),
                        hint="more errors than frames: check the cable and its shielding"
                        if status is Status.WARN else None,
                        data={**data, "values": values}), fix
    last = next((d for s, d in reversed(statuses) if s is LinkState.UNAVAILABLE), "")
    detail, hint = _serial_failure(bus, LinkState.UNAVAILABLE if last else state, last,
                                   stats.error_count, stats.dropped_bytes)
    return t.result(key, title, Status.FAIL, f"{detail} (waited {wait:g} s)", hint=hint,
                    data=data), None


# ---------------------------------------------------------------------------------- clock
def system_ntp_status() -> str | None:
    """How this machine knows its clock is synchronised, or None if it does not."""
    exe = shutil.which("timedatectl")
    if exe is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3, check=False)
            if out.returncode == 0 and out.stdout.strip() == "yes":
                return "NTP synchronised (timedatectl)"
    if Path("/run/systemd/timesync/synchronized").exists():
        return "NTP synchronised (systemd-timesyncd)"
    from gateway.clock import ntp_synchronized

    if ntp_synchronized():
        return "NTP synchronised (kernel clock discipline)"
    return None


def _check_clock(cfg: Config, options: CheckOptions,
                 gps: Sequence[tuple[str, dt.datetime]]) -> CheckResult:
    t = _Timer()
    now = dt.datetime.now(dt.UTC)
    title = "clock trusted"
    shown = f"the clock says {now:%Y-%m-%d %H:%M:%S} UTC"
    if now < CLOCK_EPOCH:
        return t.result("clock", title, Status.FAIL, f"{shown}: it has never been set",
                        hint="set it (sudo timedatectl set-time 'YYYY-MM-DD HH:MM:SS') and "
                             "give it a source: NTP on the network, a GPS, or an RTC")
    probe = options.ntp_probe or system_ntp_status
    ntp = probe()
    sources = []
    if ntp:
        sources.append(ntp)
    if cfg.gateway.has_rtc:
        sources.append("battery-backed RTC (gateway.has_rtc)")
    for bus, fix in gps:
        skew = abs((now - fix).total_seconds())
        sources.append(f"GPS time on {bus} (clock {skew:.1f} s from it)")
        if skew > 5.0:
            return t.result("clock", title, Status.FAIL,
                            f"{shown}, but the GPS on {bus} says {fix:%H:%M:%S} UTC "
                            f"({skew:.0f} s apart)",
                            hint="the agent sets the clock from the GPS once it runs; if it "
                                 "does not, check that the agent may set the time")
    if sources:
        return t.result("clock", title, Status.PASS, f"{shown}; " + "; ".join(sources),
                        data={"sources": sources})
    return t.result(
        "clock", title, Status.FAIL, f"{shown}, but nothing vouches for it",
        hint="lighting runs at its failsafe level until the clock is trusted: enable NTP "
             "(sudo timedatectl set-ntp true, with an NTP server reachable), or wire a GPS "
             "(a serial bus with protocol nmea), or set gateway.has_rtc: true if the board has "
             "a battery-backed clock")


# ---------------------------------------------------------------------------------- store
def _check_store(cfg: Config) -> CheckResult:
    t = _Timer()
    path = Path(cfg.store.path)
    title = "store writable"
    probe = path.with_name(f".edgegw-check-{pysecrets.token_hex(4)}.db")
    hint = (f"make {path.parent} writable by the user that runs edgegw (sudo install -d -o "
            f"USER {path.parent}), or set store.path to a writable place")
    try:
        with Store(probe, max_mb=1) as store:
            store.kv_set("edgegw.check", b"ok")
            if store.kv_get("edgegw.check") != b"ok":
                raise StoreError(f"store {probe}: read back differs from what was written")
            store.kv_delete("edgegw.check")
    except (StoreError, OSError) as err:
        return t.result("store", title, Status.FAIL, f"{path.parent}: {err}", hint=hint)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(str(probe) + suffix).unlink()
    detail = f"{path.parent} takes a new store"
    data: dict[str, Any] = {}
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return t.result("store", title, Status.FAIL,
                            f"{path} exists but is not writable by this user", hint=hint)
        size_mb = path.stat().st_size / 1e6
        detail += f"; {path.name} holds {size_mb:.1f} MB"
        data["size_mb"] = round(size_mb, 2)
    free_mb = shutil.disk_usage(path.parent).free / 2**20
    data["free_mb"] = round(free_mb, 1)
    detail += f"; {free_mb:.0f} MB free"
    if free_mb < cfg.store.max_mb:
        return t.result("store", title, Status.WARN,
                        f"{detail}, less than store.max_mb ({cfg.store.max_mb:g} MB)",
                        hint="free space on this disk, or lower store.max_mb (an outage then "
                             "keeps less telemetry)", data=data)
    return t.result("store", title, Status.PASS, detail, data=data)


# -------------------------------------------------------------------- outputs, lamp test
class _Outputs:
    """Buses opened without polling, for reading and writing the lighting outputs."""

    def __init__(self, cfg: Config, devices: set[str], timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._bus_of: dict[str, ModbusBus] = {}
        self._buses: list[ModbusBus] = []
        by_bus: dict[str, list[DeviceCfg]] = {}
        for d in cfg.devices:
            if d.name in devices and d.enabled:
                by_bus.setdefault(d.bus, []).append(d)
        for name, devs in by_bus.items():
            bus = cfg.bus(name)
            if isinstance(bus, SerialBus):
                continue
            settings = dataclasses.replace(modbus_settings(bus),
                                           timeout=min(bus.timeout, timeout))
            mb = ModbusBus(settings, [DeviceSettings(name=d.name, unit=d.unit, poll=d.poll,
                                                     points=d.specs(), max_gap=d.max_gap)
                                      for d in devs],
                           on_samples=lambda s: None, poll=False)
            self._buses.append(mb)
            for d in devs:
                self._bus_of[d.name] = mb
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _Outputs:
        for b in self._buses:
            await self._stack.enter_async_context(b)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def spec(self, device: str, point: str) -> PointSpec | None:
        mb = self._bus_of.get(device)
        if mb is None:
            return None
        try:
            return mb.point(device, point)
        except KeyError:
            return None

    async def read(self, device: str, point: str) -> Value | None:
        return (await self._bus_of[device].read_point(device, point)).value

    async def write(self, device: str, point: str, value: Value) -> None:
        await self._bus_of[device].write_point(device, point, value)


def _level_value(spec: PointSpec, level: float) -> Value:
    """What to write for a level in percent: what the agent writes (round(level))."""
    if spec.type is DataType.BOOL:
        return level > 0
    return round(level)


async def _check_outputs(cfg: Config, rules: Any, outputs: _Outputs) -> list[CheckResult]:
    out = []
    for g in rules.groups:
        t = _Timer()
        levels: dict[str, Any] = {}
        problems: list[str] = []
        gpio = [str(o.gpio) for o in g.outputs if o.gpio is not None]
        for o in g.outputs:
            if o.gpio is not None:
                continue
            if outputs.spec(o.device, o.point) is None:
                problems.append(f"{o.key}: not a point of an enabled Modbus device")
                continue
            try:
                levels[o.key] = await outputs.read(o.device, o.point)
            except DriverError as err:
                problems.append(f"{o.key}: {err}")
        key, title = f"outputs:{g.name}", f"outputs {g.name}"
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in levels.items())
        if gpio:
            shown += ("; " if shown else "") + f"GPIO {', '.join(gpio)} not read back"
        if problems:
            out.append(t.result(key, title, Status.FAIL,
                                f"{len(problems)} output(s) do not respond: "
                                + "; ".join(problems), hint="see the device lines above: the "
                                "driver must answer before the lamp can be dimmed",
                                data={"levels": levels}))
        elif not levels:
            out.append(t.result(key, title, Status.SKIP, shown or "no Modbus outputs"))
        else:
            out.append(t.result(key, title, Status.PASS, f"levels: {shown}",
                                data={"levels": levels}))
    return out


@dataclass(frozen=True, slots=True)
class _Step:
    level: float
    power: dict[str, float | None]        # output key -> W (None: no lamp_power point)


async def _lamp_test_group(g: Any, outputs: _Outputs, options: CheckOptions) -> CheckResult:
    t = _Timer()
    key, title = f"lamp-test:{g.name}", f"lamp test {g.name}"
    outs = [o for o in g.outputs if o.gpio is None and outputs.spec(o.device, o.point)]
    if not outs:
        return t.result(key, title, Status.SKIP, "no Modbus outputs to cycle (GPIO outputs: "
                        "switch them from the agent with set_override and watch the lamps)")
    previous: dict[str, Value] = {}
    steps: list[_Step] = []
    try:
        for o in outs:
            v = await outputs.read(o.device, o.point)
            if v is None:
                raise DriverError(f"{o.key}: no level read back")
            previous[o.key] = v
        for level in options.lamp_levels:
            for o in outs:
                spec = outputs.spec(o.device, o.point)
                assert spec is not None
                await outputs.write(o.device, o.point, _level_value(spec, level))
            await asyncio.sleep(options.settle)
            power: dict[str, float | None] = {}
            for o in outs:
                if outputs.spec(o.device, "lamp_power") is None:
                    power[o.key] = None
                    continue
                v = await outputs.read(o.device, "lamp_power")
                power[o.key] = float(v) if isinstance(v, (int, float)) else None
            steps.append(_Step(level, power))
    except DriverError as err:
        failure: str | None = str(err)
    else:
        failure = None
    finally:
        restore_problems = await _restore(outputs, outs, previous)
    data = {"steps": [{"level": s.level, "power_w": s.power,
                       "total_w": _total(s.power)} for s in steps],
            "restored": {k: v for k, v in previous.items()}}
    shown = "; ".join(f"{s.level:g} % {_fmt_w(_total(s.power))}" for s in steps)
    if failure is not None:
        return t.result(key, title, Status.FAIL, f"stopped: {failure}" + (
            f" (after {shown})" if shown else ""),
            hint="the driver must answer reads and writes: see the device lines above",
            data=data)
    if restore_problems:
        return t.result(key, title, Status.FAIL, f"{shown}; could not restore: "
                        + "; ".join(restore_problems),
                        hint="the agent sets the level again when it starts; check the driver",
                        data=data)
    verdict, problems, hint = _judge(g, outs, steps)
    restored = ", ".join(f"{k}={_fmt_value(v)}" for k, v in previous.items())
    return t.result(key, title, verdict,
                    f"{shown}" + (f"; {'; '.join(problems)}" if problems else "")
                    + f"; restored {restored}",
                    hint=hint, data=data)


async def _lamp_tests(rules: Any, outputs: _Outputs, options: CheckOptions,
                      agents: tuple[Holder, ...]) -> list[CheckResult]:
    out = []
    for g in rules.groups:
        if agents:
            t = _Timer()
            out.append(t.result(
                f"lamp-test:{g.name}", f"lamp test {g.name}", Status.FAIL,
                "not run: the agent is running and would set the levels back",
                hint="sudo systemctl stop edgegw, run the lamp test, "
                     "sudo systemctl start edgegw"))
            continue
        out.append(await _lamp_test_group(g, outputs, options))
    return out


async def _restore(outputs: _Outputs, outs: Sequence[Any],
                   previous: Mapping[str, Value]) -> list[str]:
    """Put every output back to its level from before the test (shielded: a Ctrl-C during
    the test must still leave the lamps as they were)."""

    async def restore_all() -> list[str]:
        problems = []
        for o in outs:
            if o.key not in previous:
                continue
            try:
                await outputs.write(o.device, o.point, previous[o.key])
            except DriverError as err:
                problems.append(f"{o.key}: {err}")
        return problems

    return await asyncio.shield(restore_all())


def _total(power: Mapping[str, float | None]) -> float | None:
    known = [p for p in power.values() if p is not None]
    return sum(known) if known else None


def _fmt_w(w: float | None) -> str:
    return "(no power read-back)" if w is None else f"{w:.1f} W"


def _judge(g: Any, outs: Sequence[Any], steps: Sequence[_Step]
           ) -> tuple[Status, list[str], str | None]:
    """Does each lamp's power follow the level? (status, problems, hint)."""
    by_level = {s.level: s for s in steps}
    problems: list[str] = []
    hints: list[str] = []
    warn = False
    no_readback = []
    for o in outs:
        p = {lvl: s.power.get(o.key) for lvl, s in by_level.items()}
        if any(v is None for v in p.values()):
            no_readback.append(o.key)
            continue
        top = max(by_level)
        p_top = float(p[top] or 0.0)
        rated = float(o.watts or 0.0)
        lit_floor = max(1.0, 0.05 * rated)
        if p_top < lit_floor:
            problems.append(f"{o.device} draws {p_top:.1f} W at {top:g} %: the lamp does not "
                            "light")
            hints.append("check the lamp, its wiring to the driver, the driver's fault bits "
                         "(open circuit?) and its mains supply")
            continue
        if 0.0 in p and float(p[0.0] or 0.0) > max(2.0, 0.05 * max(p_top, rated)):
            problems.append(f"{o.device} draws {float(p[0.0] or 0):.1f} W when off")
            hints.append("the driver ignores the off command: check the point address and "
                         "that the driver is in Modbus (not DALI/1-10 V) control mode")
        for lvl, v in p.items():
            if 0 < lvl < top:
                ratio = float(v or 0.0) / p_top
                expected = lvl / top
                if not (expected * 0.4 <= ratio <= min(0.95, expected * 1.7)):
                    problems.append(f"{o.device} at {lvl:g} % draws {ratio:.0%} of full power")
                    hints.append("the power does not follow the level: the driver is not "
                                 "dimming (control wiring, control mode, dimming curve)")
        if rated > 0 and not 0.5 * rated <= p_top <= 1.3 * rated:
            warn = True
            problems.append(f"{o.device} draws {p_top:.0f} W at full, rated {rated:g} W")
            hints.append("check the output's `watts` in the lighting rules against the lamp")
    if no_readback:
        warn = True
        problems.append(f"no power read-back on {', '.join(no_readback)} (no lamp_power "
                        "point): watch those lamps go off, half, full")
    hard = [p for p in problems if "rated" not in p and "no power read-back" not in p]
    if hard:
        return Status.FAIL, problems, "; ".join(dict.fromkeys(hints))
    if warn:
        return Status.WARN, problems, "; ".join(dict.fromkeys(hints)) or None
    return Status.PASS, problems, None


# ------------------------------------------------------------------------------ the run
async def run_checks(config_path: str | Path, options: CheckOptions | None = None
                     ) -> CheckReport:
    """Run the checklist against the site `config_path` describes. Never raises for a failed
    check: every failure is a FAIL line with its hint."""
    options = options or CheckOptions()
    started = time.time()
    path = Path(config_path)
    results: list[CheckResult] = []
    cfg, first = _check_config(path)
    results.append(first)
    if cfg is None:
        return _report(path, None, started, results)
    lighting = _check_lighting(cfg)
    results.append(lighting)
    agents, agent_row = _check_agent(options, cfg, path)
    results.append(agent_row)
    results.extend(_check_secrets(cfg))

    # broker, Modbus buses and serial sensors do not share anything: run them together
    jobs: list[Awaitable[Any]] = [_check_broker(cfg, url, options.timeout)
                                  for url in cfg.mqtt.urls]
    modbus = [b for b in cfg.buses if isinstance(b, (ModbusRtuBus, ModbusTcpBus))]
    serial = [b for b in cfg.buses if isinstance(b, SerialBus)]
    jobs += [_check_modbus_bus(cfg, b, options.timeout) for b in modbus]
    jobs += [_check_serial(b, options.timeout) for b in serial]
    done = await asyncio.gather(*jobs)
    n_urls = len(cfg.mqtt.urls)
    brokers: list[CheckResult] = list(done[:n_urls])
    if n_urls > 1 and any(r.status is Status.PASS for r in brokers):
        brokers = [dataclasses.replace(r, status=Status.WARN, hint=(
            f"another broker URL works, so the gateway still connects; {r.hint}"))
            if r.status is Status.FAIL else r for r in brokers]
    results.extend(brokers)
    for rows in done[n_urls:n_urls + len(modbus)]:
        results.extend(rows)
    gps: list[tuple[str, dt.datetime]] = []
    for bus, (row, fix) in zip(serial, done[n_urls + len(modbus):], strict=True):
        results.append(row)
        if fix is not None:
            gps.append((bus.name, fix))
    results.append(_check_clock(cfg, options, gps))
    results.append(await asyncio.to_thread(_check_store, cfg))

    if lighting.status in (Status.PASS, Status.WARN):
        from policies.lighting import parse_lighting

        rules = parse_lighting(cfg.lighting, location=cfg.gateway.location)
        results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=True))
    elif options.lamp_test and cfg.lighting:
        t = _Timer()
        results.append(t.result("lamp-test", "lamp test", Status.FAIL,
                                "not run: no valid lighting rules",
                                hint="fix the lighting rules first"))
    elif options.lamp_test:
        # no lighting section yet (commissioning comes before the rules): the lamps are the
        # devices whose profile has a writable dim_level
        rules = _lamps_from_profiles(cfg)
        if rules is None:
            t = _Timer()
            results.append(t.result("lamp-test", "lamp test", Status.SKIP,
                                    "no lamps: no lighting section and no device with a "
                                    "writable dim_level (an LED driver's profile)"))
        else:
            results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=False))
    return _report(path, cfg, started, results)


async def _outputs_and_lamps(cfg: Config, rules: Any, options: CheckOptions,
                             agents: tuple[Holder, ...], *, check: bool) -> list[CheckResult]:
    """The groups' outputs read back (with ``check``), and the lamp test when asked for."""
    devices = {o.device for g in rules.groups for o in g.outputs if o.device}
    out: list[CheckResult] = []
    try:
        async with _Outputs(cfg, devices, options.timeout) as outputs:
            if check:
                out.extend(await _check_outputs(cfg, rules, outputs))
            if options.lamp_test:
                out.extend(await _lamp_tests(rules, outputs, options, agents))
    except (termios.error, ValueError) as err:
        t = _Timer()
        out.append(t.result("outputs", "outputs", Status.FAIL,
                            f"cannot open the lamps' bus: {err}",
                            hint="see the device lines above"))
    return out


LAMPS_GROUP = "lamps"


def _lamps_from_profiles(cfg: Config) -> Any:
    """One group of every LED driver (a device with a writable ``dim_level``), for a lamp test
    before any lighting rules exist; None when there is none."""
    from policies.lighting import parse_lighting

    outputs = [{"device": d.name, "point": "dim_level"} for d in cfg.devices
               if d.enabled and any(p.name == "dim_level" and p.writable for p in d.points)]
    if not outputs:
        return None
    return parse_lighting({
        "programs": {"test": {"steps": [{"at": "00:00", "level": 0}]}},
        "groups": [{"name": LAMPS_GROUP, "program": "test", "outputs": outputs}]},
        location=cfg.gateway.location)


def _report(path: Path, cfg: Config | None, started: float,
            results: list[CheckResult]) -> CheckReport:
    gateway: dict[str, Any] = {}
    if cfg is not None:
        gateway = cfg.gateway.model_dump(mode="json")
    return CheckReport(config_path=str(path.resolve()), gateway=gateway,
                       config_digest=cfg.digest() if cfg is not None else None,
                       started_at=started, finished_at=time.time(), results=tuple(results),
                       versions=versions(), host=socket.gethostname())


# ---------------------------------------------------------------------------------- report
REPORT_KIND = "edgegw-commissioning-report"


def report_json(report: CheckReport) -> dict[str, Any]:
    """The commissioning report as JSON-ready data (every check, timestamps, versions)."""
    return {
        "kind": REPORT_KIND,
        "format": 1,
        "verdict": str(report.verdict),
        "gateway": dict(report.gateway),
        "config": {"path": report.config_path, "digest": report.config_digest},
        "host": report.host,
        "started_at": _iso(report.started_at),
        "finished_at": _iso(report.finished_at),
        "duration_s": round(report.finished_at - report.started_at, 3),
        "counts": report.counts(),
        "versions": dict(report.versions),
        "checks": [r.to_json() for r in report.results],
    }


_MARK = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def _wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent]


def report_text(report: CheckReport, *, width: int = 78) -> str:
    """The printable commissioning report: header, checklist with hints, sign-off lines."""
    gw = report.gateway
    loc = gw.get("location") or {}
    lines = ["EDGEGW COMMISSIONING REPORT", "=" * width]
    head = [
        ("Gateway", str(gw.get("id", "(config invalid)"))),
        ("Site", str(gw.get("site", ""))),
        ("Groups", ", ".join(gw.get("groups", []) or [])),
        ("Location", f"{loc.get('lat')}, {loc.get('lon')} ({loc.get('timezone')})"
         if loc else "(not set)"),
        ("Config", f"{report.config_path}"
         + (f" (digest {report.config_digest})" if report.config_digest else "")),
        ("Host", f"{report.host}, edgegw {report.versions.get('edgegw')}, python "
                 f"{report.versions.get('python')}, {report.versions.get('os')}"),
        ("Checked", f"{_iso(report.started_at)} .. {_iso(report.finished_at)}"),
    ]
    lines += [f"{k:<10}{v}" for k, v in head]
    c = report.counts()
    verdict = "PASS: all checks passed" if report.passed else (
        f"FAIL: {c['fail']} check(s) failed")
    lines += [f"{'Verdict':<10}{verdict} ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail,"
              f" {c['skip']} skipped)", "=" * width, ""]
    for i, r in enumerate(report.results, 1):
        lines.append(f"{i:>3}. [{_MARK[r.status]}] {r.title}")
        lines += _wrap(r.detail, width, " " * 10)
        if r.hint and r.status in (Status.FAIL, Status.WARN):
            lines += _wrap(f"what to do: {r.hint}", width, " " * 10)
        table = lamp_watts(r)
        if table:
            levels, rows = table
            lines.append(" " * 10 + f"{'lamp':<24}" + "".join(f"{f'{lv:g} %':>10}"
                                                              for lv in levels))
            for name, watts in rows:
                lines.append(" " * 10 + f"{name:<24}" + "".join(
                    f"{_fmt_w(w):>10}" for w in watts))
    lines += ["", "-" * width, "Versions: " + ", ".join(f"{k} {v}" for k, v in
                                                         report.versions.items()), "",
              "Technician: ______________________   Signature: ______________________",
              "",
              "Date: ____________   Cabinet sealed: [ ] yes   Report handed in: [ ] yes", ""]
    return "\n".join(lines)


def lamp_watts(r: CheckResult) -> tuple[list[float], list[tuple[str, list[float | None]]]] \
        | None:
    """A lamp test's power per lamp at each level: (levels, [(lamp, [watts...])]); None for
    any other check (or a test that read no power)."""
    if not r.key.startswith("lamp-test") or not isinstance(r.data, Mapping):
        return None
    steps = r.data.get("steps") or []
    if not steps:
        return None
    levels = [float(s["level"]) for s in steps]
    lamps = sorted({k for s in steps for k in (s.get("power_w") or {})})
    if not lamps:
        return None
    rows = [(lamp.removesuffix("/dim_level"), [(s.get("power_w") or {}).get(lamp)
                                                for s in steps]) for lamp in lamps]
    return levels, rows


def report_html(report: CheckReport) -> str:
    """The same report as a printable HTML page (A4, no network: styles inline)."""
    from html import escape as h

    gw = report.gateway
    loc = gw.get("location") or {}
    c = report.counts()
    verdict = "PASS: all checks passed" if report.passed else f"FAIL: {c['fail']} failed"
    colour = {Status.PASS: "#1c7c1c", Status.WARN: "#a66400", Status.FAIL: "#b01c1c",
              Status.SKIP: "#666"}
    head = [("Gateway", gw.get("id", "(config invalid)")), ("Site", gw.get("site", "")),
            ("Groups", ", ".join(gw.get("groups", []) or [])),
            ("Location", f"{loc.get('lat')}, {loc.get('lon')} ({loc.get('timezone')})"
             if loc else "(not set)"),
            ("Config", report.config_path + (f" (digest {report.config_digest})"
                                             if report.config_digest else "")),
            ("Checked", f"{_iso(report.started_at)} .. {_iso(report.finished_at)}")]
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>Commissioning report {h(str(gw.get('id', '')))}</title><style>",
           "body{font-family:sans-serif;font-size:11pt;margin:2em;max-width:50em}",
           "table{border-collapse:collapse;margin:.4em 0}td,th{padding:.2em .6em;"
           "text-align:left;vertical-align:top}.w td,.w th{border:1px solid #ccc;"
           "text-align:right}.w td:first-child{text-align:left}.hint{color:#555}"
           "@page{size:A4;margin:1.5cm}</style></head><body>",
           "<h1>edgegw commissioning report</h1><table>"]
    out += [f"<tr><th>{h(k)}</th><td>{h(str(v))}</td></tr>" for k, v in head]
    out.append(f"<tr><th>Verdict</th><td><b>{h(verdict)}</b> ({c['pass']} pass, "
               f"{c['warn']} warn, {c['fail']} fail, {c['skip']} skipped)</td></tr></table>")
    out.append("<table>")
    for i, r in enumerate(report.results, 1):
        out.append(f"<tr><td>{i}.</td><td style='color:{colour[r.status]}'><b>"
                   f"{_MARK[r.status]}</b></td><td><b>{h(r.title)}</b><br>{h(r.detail)}")
        if r.hint and r.status in (Status.FAIL, Status.WARN):
            out.append(f"<br><span class='hint'>what to do: {h(r.hint)}</span>")
        table = lamp_watts(r)
        if table:
            levels, rows = table
            out.append("<table class='w'><tr><th>lamp</th>"
                       + "".join(f"<th>{lv:g} %</th>" for lv in levels) + "</tr>")
            out += ["<tr><td>" + h(name) + "</td>" + "".join(
                f"<td>{h(_fmt_w(w))}</td>" for w in watts) + "</tr>" for name, watts in rows]
            out.append("</table>")
        out.append("</td></tr>")
    out.append("</table><p>Versions: " + h(", ".join(f"{k} {v}" for k, v in
                                                      report.versions.items())) + "</p>")
    out.append("<p style='margin-top:3em'>Technician: ______________________ &nbsp; "
               "Signature: ______________________</p><p>Date: ____________ &nbsp; Cabinet "
               "sealed: &#9744; yes &nbsp; Report handed in: &#9744; yes</p></body></html>\n")
    return "\n".join(out)


def report_paths(file: str | Path) -> tuple[Path, Path]:
    """(JSON path, text path) for ``--report FILE``: FILE, and FILE with a .txt suffix (the
    printable HTML page goes beside them, FILE with .html)."""
    p = Path(file)
    txt = p.with_suffix(".txt")
    if txt == p or p.with_suffix(".html") == p:
        raise ValueError(f"{p}: the report's JSON goes to FILE, its text to FILE.txt and its "
                         "page to FILE.html; give a name like report.json")
    return p, txt


def write_report(report: CheckReport, file: str | Path) -> tuple[Path, Path]:
    """Write the report atomically: JSON, text and a printable HTML page; returns the paths
    of the first two (the page is beside them, with .html)."""
    json_path, txt_path = report_paths(file)
    write_atomic(json_path, (json.dumps(report_json(report), indent=2, default=str) + "\n"
                             ).encode(), mode=PUBLIC_MODE)
    write_atomic(txt_path, report_text(report).encode(), mode=PUBLIC_MODE)
    write_atomic(json_path.with_suffix(".html"), report_html(report).encode(),
                 mode=PUBLIC_MODE)
    return json_path, txt_path


__all__ = [
    "CheckOptions",
    "CheckReport",
    "CheckResult",
    "Status",
    "lamp_watts",
    "report_html",
    "report_json",
    "report_paths",
    "report_text",
    "run_checks",
    "system_ntp_status",
    "versions",
    "write_report",
]
