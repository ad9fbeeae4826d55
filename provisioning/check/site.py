"""The checks of the site: config, lighting rules, the agent, secrets, certificate, broker,
Modbus devices, serial sensors, clock, store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import pwd
import secrets as pysecrets
import shutil
import ssl
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from stat import filemode as stat_mode
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from drivers.modbus.bus import BusEvent, DeviceSettings, ModbusBus
from drivers.modbus.planner import plan_device
from drivers.modbus.registers import Value
from drivers.sample import Quality, Sample
from drivers.serial.reader import LinkState, SerialReader
from gateway.config import (
    Config,
    DeviceCfg,
    ModbusRtuBus,
    ModbusTcpBus,
    SerialBus,
    parse_config,
)
from gateway.errors import ConfigError, StoreError
from gateway.link import check_secret_file, tls_context
from gateway.store import Store
from gateway.wiring import modbus_settings, serial_settings
from provisioning.check.model import (
    CERT_WARN_DAYS,
    CLOCK_EPOCH,
    SERVICE_USER,
    CheckOptions,
    CheckResult,
    Status,
    _fmt_value,
    _Timer,
)
from provisioning.identity import IdentityError, load_key, verify_certificate
from provisioning.ports import Holder, agents_of, port_holders


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
_SANDBOX_PROPS = ("LoadState", "ProtectSystem", "ReadWritePaths", "StateDirectory",
                  "RuntimeDirectory", "User")
_READ_ONLY = {"yes": ("/usr", "/boot", "/efi"), "full": ("/usr", "/boot", "/efi", "/etc")}


@dataclasses.dataclass(frozen=True)
class ServiceSandbox:
    """Where the installed edgegw service may write (systemd's ProtectSystem and its
    exceptions), so that a check run as root does not pass a store path the service cannot
    use: with deploy/edgegw.service only /var/lib/edgegw and /run/edgegw."""

    protect: str                       # ProtectSystem: no, yes, full or strict
    writable: tuple[str, ...]          # ReadWritePaths, StateDirectory, RuntimeDirectory
    user: str
    managed: tuple[str, ...] = ()      # StateDirectory, RuntimeDirectory: systemd chowns them

    @classmethod
    def parse(cls, show: str) -> ServiceSandbox | None:
        """From ``systemctl show edgegw -p ...``; None when no edgegw unit is installed."""
        props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        if props.get("LoadState") != "loaded":
            return None
        paths = [p.lstrip("-+") for p in props.get("ReadWritePaths", "").split()]
        managed = [f"/var/lib/{d}" for d in props.get("StateDirectory", "").split()]
        managed += [f"/run/{d}" for d in props.get("RuntimeDirectory", "").split()]
        return cls(props.get("ProtectSystem", "no") or "no", tuple(dict.fromkeys(paths + managed)),
                   props.get("User", "") or "root", tuple(managed))

    @classmethod
    def installed(cls) -> ServiceSandbox | None:
        try:
            out = subprocess.run(
                ["systemctl", "show", "edgegw", *(f"--property={p}" for p in _SANDBOX_PROPS)],
                capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None                 # no systemd here (a bench, a container)
        return cls.parse(out.stdout) if out.returncode == 0 else None

    def may_write(self, path: Path) -> bool:
        """The sandbox lets the service write ``path`` (file permissions aside)."""
        if _under(path, self.writable):
            return True
        if self.protect == "strict":
            return False
        return not _under(path, _READ_ONLY.get(self.protect, ()))


def _under(path: Path, roots: Sequence[str]) -> bool:
    p = Path(os.path.abspath(path))
    return any(p.is_relative_to(r) for r in roots)


def user_may_write(directory: Path, user: str) -> bool | None:
    """Whether ``user`` may create files in ``directory`` by its owner, group and mode (ACLs
    aside); None when the user or the directory does not exist."""
    try:
        pw = pwd.getpwnam(user)
        st = directory.stat()
    except (KeyError, OSError):
        return None
    if pw.pw_uid == 0:
        return True
    if st.st_uid == pw.pw_uid:
        need = 0o300
    elif st.st_gid in os.getgrouplist(user, pw.pw_gid):
        need = 0o030
    else:
        need = 0o003
    return st.st_mode & need == need


def _check_store(
    cfg: Config, sandbox: Callable[[], ServiceSandbox | None] = ServiceSandbox.installed,
) -> CheckResult:
    t = _Timer()
    path = Path(cfg.store.path)
    title = "store writable"
    probe = path.with_name(f".edgegw-check-{pysecrets.token_hex(4)}.db")
    hint = (f"make {path.parent} writable by the user that runs edgegw (sudo install -d -o "
            f"USER {path.parent}), or set store.path to a writable place")
    box = sandbox()
    # the check may run as root and write where the service cannot: it would fail at start
    if box is not None and not box.may_write(path):
        return t.result(
            "store", title, Status.FAIL,
            f"{path}: the edgegw service (user {box.user}, ProtectSystem={box.protect}) may "
            f"write only {', '.join(box.writable) or 'nothing'}",
            hint="set store.path under /var/lib/edgegw, or let the service write there: "
                 f"sudo systemctl edit edgegw, add [Service] ReadWritePaths={path.parent}")
    if (box is not None and not _under(path, box.managed)
            and user_may_write(path.parent, box.user) is False):
        st = path.parent.stat()
        return t.result(
            "store", title, Status.FAIL,
            f"{path.parent} is not writable by the service's user {box.user} (owner uid "
            f"{st.st_uid}, mode {stat_mode(st.st_mode)})",
            hint=f"sudo chown {box.user}:{box.user} {path.parent}; sudo chmod 0700 "
                 f"{path.parent}")
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
