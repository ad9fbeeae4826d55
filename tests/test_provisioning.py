"""Provisioning and bus scans: identity files written atomically with the right modes, a config
that loads, existing identities protected, certificates checked before they are installed;
scans of simulated RTU and TCP buses finding present units, proposing the builtin profiles
that fit, and hunting the line settings of a bus that answers at 19200 baud only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import stat
import termios
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from drivers.modbus.bus import BusKind, BusSettings
from gateway.config import load_config, parse_config
from gateway.files import write_atomic
from gateway.link import tls_context
from provisioning.cli import app, register
from provisioning.identity import CA_FILE, CERT_FILE, CSR_FILE, KEY_FILE, csr_subject, load_csr
from provisioning.ports import list_serial_ports
from provisioning.provision import (
    BadAnswer,
    IdentityConflict,
    MissingAnswers,
    ProvisionRequest,
    provision,
)
from provisioning.scan import (
    LineSettings,
    builtin_profile_specs,
    find_line,
    implausible,
    parse_units,
    proposed_devices,
    render_yaml,
    scan_bus,
)
from simulators.broker import free_port
from simulators.devices import SimulatedDevice
from simulators.modbus_server import ModbusRtuSim
from simulators.runner import open_spec

runner = CliRunner()


# ------------------------------------------------------------------------------ a test PKI
class Pki:
    """A throwaway certificate authority, as the city's PKI would be."""

    def __init__(self, name: str = "City Test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self, subject: x509.Name, public_key: Any, *, san: x509.GeneralName,
               days: int = 365) -> bytes:
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def sign_csr(self, csr_pem: bytes, *, days: int = 365) -> bytes:
        """What the PKI does with the gateway's CSR."""
        csr = x509.load_pem_x509_csr(csr_pem)
        cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return self._issue(csr.subject, csr.public_key(), san=x509.DNSName(str(cn)), days=days)

    def server(self, directory: Path) -> tuple[Path, Path]:
        """A broker certificate for 127.0.0.1, written to `directory` (cert, key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = self._issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                          key.public_key(),
                          san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "server.crt", directory / "server.key"
        cert_path.write_bytes(pem)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


def request(out_dir: Path, **kw: Any) -> ProvisionRequest:
    base: dict[str, Any] = {"out_dir": out_dir, "gateway_id": "gw-d1-0042", "site": "district-1",
                            "groups": ("district-1", "main-street"), "lat": 10.7769,
                            "lon": 106.7009, "timezone": "Asia/Ho_Chi_Minh",
                            "broker": "mqtts://broker.city.example:8883",
                            "store_path": str(out_dir / "store.db")}
    return ProvisionRequest(**(base | kw))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------- provision
def test_provision_from_flags_writes_identity_and_a_config_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    old_umask = os.umask(0)          # modes come from the open() itself, not from the umask
    try:
        result = provision(request(out))
    finally:
        os.umask(old_umask)
    assert mode(out / KEY_FILE) == 0o600
    assert mode(out / CSR_FILE) == 0o644
    assert mode(out / "config.yaml") == 0o644
    assert not list(out.glob(".*.tmp"))
    assert (out / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    csr = load_csr((out / CSR_FILE).read_bytes())
    assert csr.is_signature_valid
    assert csr_subject(csr) == ("gw-d1-0042", "district-1")
    cfg = load_config(out / "config.yaml")
    assert cfg.gateway.id == "gw-d1-0042"
    assert cfg.gateway.site == "district-1"
    assert cfg.gateway.groups == ["district-1", "main-street"]
    assert cfg.gateway.location is not None
    assert cfg.gateway.location.timezone == "Asia/Ho_Chi_Minh"
    assert cfg.mqtt.url == "mqtts://broker.city.example:8883"
    assert cfg.mqtt.tls is None                   # no CA and no certificate yet
    assert cfg.store.path == str(out / "store.db")
    assert result.needs_certificate
    assert {c.path.name: c.action.value for c in result.changes} == {
        KEY_FILE: "created", CSR_FILE: "created", "config.yaml": "created"}


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "d" / "secret"
    write_atomic(target, b"first", mode=0o600)
    write_atomic(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret"]


def test_refuses_another_identity_without_force_and_keeps_it_aside_with(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    provision(request(out))
    key_before = (out / KEY_FILE).read_bytes()
    config_before = (out / "config.yaml").read_bytes()
    with pytest.raises(IdentityConflict, match="gw-d1-0042") as info:
        provision(request(out, gateway_id="gw-d1-0099"))
    assert info.value.hint is not None and "--force" in info.value.hint
    assert (out / KEY_FILE).read_bytes() == key_before
    assert (out / "config.yaml").read_bytes() == config_before

    result = provision(request(out, gateway_id="gw-d1-0099", force=True))
    assert result.gateway_id == "gw-d1-0099"
    assert (out / KEY_FILE).read_bytes() != key_before
    aside = list(out.glob("gateway.replaced-*.key"))
    assert len(aside) == 1 and aside[0].read_bytes() == key_before
    assert mode(aside[0]) == 0o600
    assert load_config(out / "config.yaml").gateway.id == "gw-d1-0099"
    assert csr_subject(load_csr((out / CSR_FILE).read_bytes()))[0] == "gw-d1-0099"


def test_a_lone_key_of_unknown_identity_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    out.mkdir()
    (out / KEY_FILE).write_bytes(b"somebody's key")
    with pytest.raises(IdentityConflict, match="whose it is"):
        provision(request(out))
    assert (out / KEY_FILE).read_bytes() == b"somebody's key"


def test_reprovisioning_the_same_id_keeps_key_and_devices(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    provision(request(out))
    key_before = (out / KEY_FILE).read_bytes()
    csr_before = (out / CSR_FILE).read_bytes()
    raw = yaml.safe_load((out / "config.yaml").read_text())
    raw["buses"] = [{"name": "lan", "type": "modbus-tcp", "host": "127.0.0.1", "port": 5020}]
    raw["devices"] = [{"name": "lamp-1", "bus": "lan", "unit": 1,
                       "profile": "builtin:led-driver"}]
    (out / "config.yaml").write_text(yaml.safe_dump(raw))

    again = provision(request(out))                 # the same answers: nothing changes
    assert all(c.action.value == "kept" for c in again.changes)

    result = provision(ProvisionRequest(out_dir=out, broker="mqtts://other.example:8883"))
    assert (out / KEY_FILE).read_bytes() == key_before
    assert (out / CSR_FILE).read_bytes() == csr_before
    cfg = load_config(out / "config.yaml")
    assert cfg.mqtt.url == "mqtts://other.example:8883"
    assert cfg.gateway.location is not None and cfg.gateway.location.lat == 10.7769
    assert [d.name for d in cfg.devices] == ["lamp-1"]
    assert set(result.kept_sections) >= {"buses", "devices"}
    assert (out / "config.yaml.prev").exists()


def test_missing_answers_are_named(tmp_path: Path) -> None:
    with pytest.raises(MissingAnswers) as info:
        provision(ProvisionRequest(out_dir=tmp_path / "etc", gateway_id="gw-1"))
    assert info.value.missing == ["--site", "--broker"]
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize(("kw", "message"), [
    ({"gateway_id": "gw 1"}, "not a gateway id"),
    ({"broker": "http://x"}, "not a broker URL"),
    ({"lat": 95.0}, "outside -90..90"),
    ({"lon": None}, "both --lat and --lon"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
])
def test_bad_answers_write_nothing(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(BadAnswer, match=message):
        provision(request(tmp_path / "etc", **kw))
    assert not (tmp_path / "etc" / KEY_FILE).exists()


def test_installs_a_certificate_and_ca_issued_for_the_csr(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    provision(request(out))
    pki = Pki()
    (tmp_path / "gw.crt").write_bytes(pki.sign_csr((out / CSR_FILE).read_bytes()))
    (tmp_path / "ca.crt").write_bytes(pki.ca_pem)

    result = provision(ProvisionRequest(out_dir=out, cert=tmp_path / "gw.crt",
                                        ca=tmp_path / "ca.crt"))
    assert result.cert is not None and result.cert.subject_cn == "gw-d1-0042"
    assert not result.needs_certificate
    assert mode(out / CERT_FILE) == 0o644 and mode(out / CA_FILE) == 0o644
    cfg = load_config(out / "config.yaml")
    assert cfg.mqtt.tls is not None
    assert cfg.mqtt.tls.ca == str(out / CA_FILE)
    assert cfg.mqtt.tls.cert == str(out / CERT_FILE)
    assert cfg.mqtt.tls.key == str(out / KEY_FILE)
    assert tls_context(cfg.mqtt) is not None      # key, certificate and CA load together

    # running it again (the certificate now installed) keeps everything as it is
    assert all(c.action.value == "kept" for c in provision(ProvisionRequest(out_dir=out)).changes)


def test_refuses_a_certificate_of_another_key_or_another_ca(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    provision(request(out))
    pki = Pki()
    stranger = out.parent / "other"
    provision(request(stranger))                     # same id, another key pair
    (tmp_path / "wrong-key.crt").write_bytes(pki.sign_csr((stranger / CSR_FILE).read_bytes()))
    (tmp_path / "ca.crt").write_bytes(pki.ca_pem)
    with pytest.raises(BadAnswer, match="does not belong to this gateway's key"):
        provision(ProvisionRequest(out_dir=out, cert=tmp_path / "wrong-key.crt",
                                   ca=tmp_path / "ca.crt"))

    (tmp_path / "gw.crt").write_bytes(Pki("Rogue CA").sign_csr((out / CSR_FILE).read_bytes()))
    with pytest.raises(BadAnswer, match="not issued by the CA given"):
        provision(ProvisionRequest(out_dir=out, cert=tmp_path / "gw.crt",
                                   ca=tmp_path / "ca.crt"))
    assert not (out / CERT_FILE).exists()
    assert not (out / CA_FILE).exists()


def test_cli_provision_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    ok = runner.invoke(app, ["provision", "--out-dir", str(out), "--id", "gw-7",
                             "--site", "district-2", "--broker", "mqtts://b.example:8883",
                             "--store-path", str(tmp_path / "s.db")])
    assert ok.exit_code == 0, ok.output
    assert "gateway.csr" in ok.output and "Next steps" in ok.output
    assert "edgegw provision --out-dir" in ok.output        # how to install the certificate

    missing = runner.invoke(app, ["provision", "--out-dir", str(tmp_path / "x"), "--id", "gw-8"])
    assert missing.exit_code == 2
    assert "missing: --site, --broker" in missing.output

    conflict = runner.invoke(app, ["provision", "--out-dir", str(out), "--id", "gw-9"])
    assert conflict.exit_code == 1
    assert "refusing to replace" in conflict.output and "hint:" in conflict.output

    bad = runner.invoke(app, ["provision", "--out-dir", str(out), "--id", "gw-7",
                              "--lat", "10"])
    assert bad.exit_code == 2 and "both --lat and --lon" in bad.output


def test_register_adds_the_commands_to_the_main_app() -> None:
    main = typer.Typer()

    @main.command()
    def version() -> None:
        """Print the version."""

    register(main)
    for command in ("provision", "scan", "check"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, result.output
    assert "--lamp-test" in runner.invoke(main, ["check", "--help"]).output


def test_the_cli_default_out_dir_is_provisionings() -> None:
    from provisioning import cli
    from provisioning.provision import DEFAULT_OUT_DIR

    assert cli.DEFAULT_OUT_DIR == DEFAULT_OUT_DIR


# ------------------------------------------------------------------------------------ scan
def test_parse_units() -> None:
    assert parse_units("1-3, 7,3") == [1, 2, 3, 7]
    with pytest.raises(ValueError, match="outside"):
        parse_units("0-3")
    with pytest.raises(ValueError, match="not a unit id"):
        parse_units("a")


def test_implausible_values_are_told_apart() -> None:
    specs = builtin_profile_specs()
    env = {p.name: p for p in specs["builtin:env-sensor"]}
    meter = {p.name: p for p in specs["builtin:energy-meter"]}
    assert implausible(env["temperature"], 23.4) is None
    assert implausible(env["temperature"], 1725.3) is not None
    assert implausible(env["humidity"], 200.0) is not None
    assert implausible(meter["voltage"], 231.0) is None
    assert implausible(meter["voltage"], 1.6e-37) is not None      # integers read as a float
    assert implausible(meter["voltage"], float("nan")) is not None


SPEC = {"servers": [
    {"type": "tcp", "port": 0, "devices": [
        {"unit": 1, "profile": "led-driver", "name": "lamp-1"},
        {"unit": 2, "profile": "env-sensor", "name": "env-1"}]},
    {"type": "rtu", "devices": [
        {"unit": 1, "profile": "env-sensor", "name": "env-9"},
        {"unit": 3, "profile": "water-level", "name": "water-9"}]},
]}


async def test_scan_finds_units_and_proposes_the_profiles_that_fit() -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        # daylight on env-9: read as a LED driver, its illuminance's low word lands in the
        # high word of burning_hours (implausible); at night (0-3 lx) it would look plausible
        sim.devices["env-9"].set("illuminance", 20_000)
        tcp = BusSettings(name="lan", kind=BusKind.TCP, port=sim.tcp[0].port)
        lan = await scan_bus(tcp, [1, 2, 3], unit_timeout=0.3, known={1: ("lamp-1", None)})
        rtu = BusSettings(name="rs485-1", kind=BusKind.RTU,
                          serial_port=sim.rtu[0].client_path)
        rs = await scan_bus(rtu, [1, 2, 3], unit_timeout=0.3)
    assert [u.unit for u in lan.units] == [1, 2]              # unit 3 is absent
    found = {u.unit: u.proposal.profile if u.proposal else None for u in lan.units}
    assert found == {1: "builtin:led-driver", 2: "builtin:env-sensor"}
    assert lan.units[0].configured_as == "lamp-1"
    assert [u.unit for u in rs.units] == [1, 3]
    assert {u.unit: u.proposal.profile if u.proposal else None for u in rs.units} == {
        1: "builtin:env-sensor", 3: "builtin:water-level"}
    env = rs.units[0]
    rejected = {f.profile: f.problem for f in env.fits if not f.fits}
    assert "plausible" in (rejected["builtin:led-driver"] or "")

    # proposals: only units not in the config; they paste into a config that validates
    entries = proposed_devices([lan, rs])
    assert [(e["name"], e["bus"], e["unit"]) for e in entries] == [
        ("env-2", "lan", 2), ("env-1", "rs485-1", 1), ("water-3", "rs485-1", 3)]
    snippet = render_yaml("devices", entries)
    text = yaml.safe_dump({"gateway": {"id": "gw-1"}, "buses": [
        {"name": "lan", "type": "modbus-tcp", "host": "127.0.0.1", "port": 1},
        {"name": "rs485-1", "type": "modbus-rtu", "port": "/dev/null"}]}) + snippet
    cfg = parse_config(text)
    assert [d.name for d in cfg.devices] == ["env-2", "env-1", "water-3"]


async def test_a_device_that_refuses_unmapped_registers_is_matched_at_once() -> None:
    dev = SimulatedDevice.from_profile("env-sensor", unit=5, strict_addresses=True)
    async with ModbusRtuSim([dev]) as sim:
        settings = BusSettings(name="rs", kind=BusKind.RTU, serial_port=sim.client_path)
        scan = await scan_bus(settings, [5], unit_timeout=0.3)
    (unit,) = scan.units
    assert unit.proposal is not None and unit.proposal.profile == "builtin:env-sensor"
    problems = {f.profile: f.problem for f in unit.fits}
    assert "illegal data address" in (problems["builtin:led-driver"] or "")
    assert "integer registers read as a float" in (problems["builtin:energy-meter"] or "")


def _crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


@contextlib.asynccontextmanager
async def picky_rtu_device(*, unit: int, baud: int) -> AsyncIterator[str]:
    """A pty with one Modbus RTU unit that answers only when the line is set to `baud`
    (a pty carries the speed the client sets, not the bits: the device checks it)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    speed = getattr(termios, f"B{baud}")
    buf = bytearray()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            buf.extend(os.read(master, 256))
        except OSError:
            return
        while len(buf) >= 8:
            frame, rest = bytes(buf[:8]), buf[8:]
            buf[:] = rest
            if frame[0] != unit or _crc16(frame[:6]) != frame[6:]:
                continue
            if termios.tcgetattr(slave)[4] != speed or frame[1] not in (3, 4):
                continue                    # at the wrong speed the device hears noise
            count = int.from_bytes(frame[4:6], "big")
            body = bytes([unit, frame[1], 2 * count]) + bytes(2 * count)
            os.write(master, body + _crc16(body))

    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_auto_baud_finds_the_line_settings_the_units_answer_at() -> None:
    async with picky_rtu_device(unit=2, baud=19200) as port:
        settings = BusSettings(name="rs", kind=BusKind.RTU, serial_port=port)
        line, attempts = await find_line(settings, [1, 2], unit_timeout=0.15)
        # (a pty refuses parity E: that attempt fails to open, and the hunt goes on)
        assert line == LineSettings(19200, "N", 1)
        assert [str(a) for a, _ in attempts] == ["9600 8N1", "9600 8E1", "9600 8O1",
                                                  "19200 8N1"]
        assert [ok for _, ok in attempts] == [False, False, False, True]
        scan = await scan_bus(settings, [1, 2], unit_timeout=0.15, auto_baud=True, match=False)
    assert scan.line == LineSettings(19200, "N", 1) and scan.line_differs
    assert [u.unit for u in scan.units] == [2]


def test_list_ports_names_config_ports_and_their_stable_names(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        pty = os.ttyname(slave)
        by_id = tmp_path / "by-id"
        by_id.mkdir()
        (by_id / "usb-FTDI_RS485_A10K-if00-port0").symlink_to(pty)
        ports = list_serial_ports(config_ports=[("rs485-1", pty)], by_id_dir=by_id)
    finally:
        os.close(master)
        os.close(slave)
    (mine,) = [p for p in ports if p.device == pty]
    assert mine.used_by == ("rs485-1",)
    assert mine.by_id == (str(by_id / "usb-FTDI_RS485_A10K-if00-port0"),)


def _scan_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "gateway": {"id": "gw-s"},
        "buses": [{"name": "lan", "type": "modbus-tcp", "host": "127.0.0.1", "port": port,
                   "timeout": 0.3}],
        "devices": [{"name": "lamp-1", "bus": "lan", "unit": 1,
                     "profile": "builtin:led-driver"}]}))
    return path


async def test_cli_scan_prints_table_snippet_and_json(tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        config = _scan_config(tmp_path, sim.tcp[0].port)
        args = ["scan", "--config", str(config), "--bus", "lan", "--units", "1-3"]
        # the command runs its own event loop: give it a thread, the simulators keep ours
        human = await asyncio.to_thread(runner.invoke, app, args)
        as_json = await asyncio.to_thread(runner.invoke, app, [*args, "--json"])
        none = await asyncio.to_thread(runner.invoke, app, [*args[:-1], "5-6"])
        bad = await asyncio.to_thread(runner.invoke, app, [*args[:4], "nope"])
    assert human.exit_code == 0, human.output
    assert "2 of 3 unit id(s) answered" in human.output
    assert "lamp-1" in human.output and "builtin:env-sensor" in human.output
    assert "devices:\n  - {name: env-2, bus: lan, unit: 2" in human.output
    data = json.loads(as_json.stdout)
    (lan,) = data["buses"]
    assert [(u["unit"], u["configured_as"], u["profile"]) for u in lan["units"]] == [
        (1, "lamp-1", "builtin:led-driver"), (2, None, "builtin:env-sensor")]
    assert [d["name"] for d in data["proposed_devices"]] == ["env-2"]
    assert none.exit_code == 1 and "0 of 2 unit id(s) answered" in none.output
    assert bad.exit_code == 2 and "no bus named 'nope'" in bad.output


async def test_cli_scan_write_adds_the_devices_keeping_comments(tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        config = tmp_path / "config.yaml"
        text = ("# cabinet 42, Main Street\n"
                "gateway: {id: gw-s}   # from provisioning\n"
                f"buses:\n  - {{name: lan, type: modbus-tcp, host: 127.0.0.1, "
                f"port: {sim.tcp[0].port}, timeout: 0.3}}\n"
                "devices:\n"
                "  # the lamps\n"
                "  - {name: lamp-1, bus: lan, unit: 1, profile: 'builtin:led-driver'}\n")
        config.write_text(text)
        args = ["scan", "--config", str(config), "--bus", "lan", "--units", "1-3", "--write"]
        wrote = await asyncio.to_thread(runner.invoke, app, args)
        again = await asyncio.to_thread(runner.invoke, app, args)
        # a layout it will not edit: `devices:` followed by another section
        other = tmp_path / "other.yaml"
        other.write_text(text + "store: {path: /tmp/x.db}\n")
        beside = await asyncio.to_thread(runner.invoke, app,
                                         ["scan", "--config", str(other), "--bus", "lan",
                                          "--units", "1-3", "--write"])
    assert wrote.exit_code == 0, wrote.output
    assert "added 1 device(s)" in wrote.output
    new = config.read_text()
    assert new.startswith(text)                        # comments and all, as they were
    assert new[len(text):] == "  - {name: env-2, bus: lan, unit: 2, poll: 10.0, " \
        "profile: 'builtin:env-sensor'}\n"
    assert config.with_name("config.yaml.bak").read_text() == text
    assert [d.name for d in load_config(config).devices] == ["lamp-1", "env-2"]
    assert again.exit_code == 0 and "nothing new to add" in again.output
    assert beside.exit_code == 0 and "other.scan.yaml" in beside.output
    assert other.read_text().endswith("store: {path: /tmp/x.db}\n")          # untouched
    assert "env-2" in (tmp_path / "other.scan.yaml").read_text()


def test_paste_ready_yaml_is_never_wrapped() -> None:
    from provisioning.scan import render_yaml

    long = {"name": "meter-with-a-long-name-1", "bus": "rs485-cabinet-north", "unit": 17,
            "poll": 10.0, "profile": "builtin:energy-meter", "description": "x" * 120}
    out = render_yaml("devices", [long])
    assert out.count("\n") == 2 and len(out.splitlines()[1]) > 200


async def test_cli_scan_of_a_dead_tcp_bus_says_what_to_check(tmp_path: Path) -> None:
    levels = {n: logging.getLogger(n).level for n in ("", "drivers", "pymodbus", "edgegw")}
    config = _scan_config(tmp_path, free_port())
    result = await asyncio.to_thread(runner.invoke, app,
                                     ["scan", "--config", str(config), "--units", "1"])
    assert result.exit_code == 1
    assert "cannot connect" in result.output and "hint:" in result.output
    # the command quietened the drivers' logs for its own run only
    assert {n: logging.getLogger(n).level for n in levels} == levels


# ------------------------------------------------------------------------------------ docs
GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "field-guide.md").read_text()


def test_field_guide_config_examples_validate() -> None:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", GUIDE, re.S)]
    merged: dict[str, Any] = {"gateway": {"id": "gw-d1-0042"}}
    for block in blocks:
        merged.update(block)
    assert {"buses", "devices"} <= set(merged)
    cfg = parse_config(yaml.safe_dump(merged), source="docs/field-guide.md")
    assert {d.bus for d in cfg.devices} <= {b.name for b in cfg.buses}


def test_field_guide_commands_use_flags_that_exist() -> None:
    text = GUIDE.replace("\\\n", " ")
    used: dict[str, set[str]] = {}
    for cmd, rest in re.findall(r"edgegw (provision|scan|check)\b([^`\n|]*)", text):
        used.setdefault(cmd, set()).update(re.findall(r"(--[a-z][a-z-]*)", rest))
    assert set(used) == {"provision", "scan", "check"}
    for cmd, flags in used.items():
        helptext = runner.invoke(app, [cmd, "--help"], terminal_width=200).output
        missing = sorted(f for f in flags if f not in helptext)
        assert not missing, f"edgegw {cmd}: the guide uses {missing}"


def test_the_interactive_time_zone_defaults_to_the_machines(tmp_path: Path) -> None:
    from provisioning.cli import system_timezone

    etc = tmp_path / "etc"
    etc.mkdir()
    assert system_timezone(etc) is None
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Ho_Chi_Minh")
    assert system_timezone(etc) == "Asia/Ho_Chi_Minh"
    (etc / "localtime").unlink()
    (etc / "timezone").write_text("Europe/Paris\n")
    assert system_timezone(etc) == "Europe/Paris"
    (etc / "timezone").write_text("Etc/UTC\n")
    assert system_timezone(etc) is None                # UTC is no better than the default
