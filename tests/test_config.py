"""Config loading: the example is valid; wrong configs are refused naming file, line, field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import config_schema, load_config, parse_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "street.yaml"

BASE = """\
gateway: {id: gw-1, site: s}
buses:
  - {name: lan, type: modbus-tcp, host: 127.0.0.1, port: 5020}
devices:
  - {name: lamp-1, bus: lan, unit: 1, profile: "builtin:led-driver"}
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="site.yaml")
    return str(info.value)


def test_example_config_is_valid_and_resolves_profiles() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.gateway.id == "gw-d1-0042"
    lamp3 = cfg.device("lamp-3")
    names = [p.name for p in lamp3.points]
    assert "dim_level" in names and "serial_number" in names   # profile + inline extension
    meter = cfg.device("meter-1")
    energy = next(p for p in meter.points if p.name == "energy")
    assert (energy.address, str(energy.type)) == (342, "float32")


def test_inline_point_overrides_profile_point_by_name() -> None:
    text = BASE.replace('profile: "builtin:led-driver"}',
                        'profile: "builtin:led-driver", points: '
                        '[{name: dim_level, table: holding, address: 7, type: uint16, '
                        'writable: true}]}')
    cfg = parse_config(text)
    dims = [p for p in cfg.device("lamp-1").points if p.name == "dim_level"]
    assert len(dims) == 1 and dims[0].address == 7


def test_misspelt_type_names_the_field_and_the_choices() -> None:
    text = BASE + ("  - {name: x, bus: lan, unit: 2, points: "
                   "[{name: a, table: input, address: 0, type: flaot32}]}\n")
    msg = problems(text)
    assert ("site.yaml: line 6: devices[1].points[0].type: "
            "'flaot32' is not one of bool, int16") in msg


def test_unknown_key_is_refused() -> None:
    msg = problems(BASE.replace("site: s", "site: s, sight: t"))
    assert "gateway.sight: unknown key" in msg


def test_device_on_an_unknown_bus() -> None:
    msg = problems(BASE.replace("bus: lan, unit: 1", "bus: rs485-9, unit: 1"))
    assert "devices[0].bus: no bus named 'rs485-9' (buses: lan)" in msg
    assert "line 5" in msg


def test_duplicate_unit_on_a_bus() -> None:
    msg = problems(BASE + '  - {name: lamp-2, bus: lan, unit: 1, profile: "builtin:led-driver"}\n')
    assert "devices[1].unit: unit 1 on bus lan is already used by lamp-1" in msg


def test_unknown_builtin_profile_lists_the_builtins() -> None:
    msg = problems(BASE.replace("builtin:led-driver", "builtin:led-drvier"))
    assert "unknown builtin profile 'led-drvier'" in msg and "energy-meter" in msg


def test_bad_bus_type_and_missing_keys() -> None:
    msg = problems(BASE.replace("type: modbus-tcp, host: 127.0.0.1, ", "type: modbus-udp, "))
    assert "buses[0]" in msg and "modbus-udp" in msg
    msg = problems("gateway: {site: s}\n")
    assert "gateway.id: required key is missing" in msg


def test_inconsistent_points_are_refused() -> None:
    for point, expected in [
        ("{name: a, table: coil, address: 0, type: uint16}", "must have type bool"),
        ("{name: a, table: input, address: 0, type: uint16, writable: true}", "cannot be writable"),
        ("{name: a, table: holding, address: 0, type: string}", "needs `length`"),
        ("{name: a, table: holding, address: 0, type: uint16, scale: 0}", "scale must not be 0"),
        ("{name: a, table: holding, address: 65535, type: float32}", "runs past register 65535"),
    ]:
        text = BASE + f"  - {{name: x, bus: lan, unit: 2, points: [{point}]}}\n"
        assert expected in problems(text), point


def test_not_yaml_and_not_a_mapping() -> None:
    assert "not valid YAML" in problems("gateway: [unclosed\n")
    assert "expected the config to be a YAML mapping" in problems("- a\n- b\n")


def test_unknown_time_zone() -> None:
    msg = problems(BASE.replace("site: s", "site: s, location: {lat: 1, lon: 2, "
                                "timezone: Mars/Olympus}"))
    assert "unknown time zone 'Mars/Olympus'" in msg


def test_schema_describes_the_contract_keys() -> None:
    schema = config_schema()
    props = schema["properties"]
    for key in ("gateway", "mqtt", "telemetry", "store", "buses", "devices", "lighting"):
        assert key in props
    assert "source" not in props


def test_cli_refuses_a_bad_config_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("unit: 1", "unit: 300"))
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate",
                           "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}: line 5: devices[0].unit" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate",
                         "--config", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


# ============================================================ what `run` would refuse, now
def test_a_key_given_twice_is_refused_with_both_lines() -> None:
    msg = problems(BASE + "store: {path: /tmp/a.db}\nstore: {path: /tmp/b.db}\n")
    assert "key 'store' appears twice (first on line 6)" in msg and "line 7" in msg


def test_unit_0_on_rs485_is_the_broadcast_address() -> None:
    text = """\
gateway: {id: gw-1}
buses:
  - {name: rs485-1, type: modbus-rtu, port: /dev/ttyUSB0}
devices:
  - {name: env-1, bus: rs485-1, unit: 0, profile: "builtin:env-sensor"}
"""
    msg = problems(text)
    assert "line 5: devices[0].unit: unit 0 is the RS-485 broadcast address" in msg


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate",
                           "--config", str(path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_validate_checks_the_files_run_would_read(tmp_path: Path) -> None:
    from tests.certs import TestPki

    (tmp_path / "pki").mkdir()
    pki = TestPki(tmp_path / "pki")
    client = pki.client("gw-1")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(BASE + "mqtt: {url: 'mqtts://127.0.0.1:8883', tls: {ca: pki/missing.pem, "
                   f"cert: {client.cert}, key: {client.key}}}}}\n"
                   "store: {path: /etc/passwd/store.db}\n")
    os.chmod(client.key, 0o644)
    proc = _validate(cfg)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert f"mqtt.tls.ca: {tmp_path}/pki/missing.pem: no such file" in err   # relative: the
    assert "mqtt.tls.key: " in err and "readable by others (mode 644)" in err  # config's dir
    assert "store.path: /etc/passwd is a file" in err
    os.chmod(client.key, 0o600)
    cfg.write_text(BASE + "mqtt: {url: 'mqtts://127.0.0.1:8883', tls: {ca: pki/ca.pem, "
                   f"cert: {client.cert}, key: {client.key}}}}}\n")
    ok = _validate(cfg)
    assert ok.returncode == 0, ok.stderr


def test_an_absolute_signing_key_path_is_kept(tmp_path: Path) -> None:
    """docs/security.md's example (/etc/edgegw/platform.pub): absolute paths work."""
    from gateway.signing import generate_keypair

    keys = tmp_path / "abs"
    keys.mkdir()
    pub = keys / "platform.pub"
    generate_keypair(keys / "platform.key", pub)
    cfg = tmp_path / "conf" / "site.yaml"
    cfg.parent.mkdir()
    cfg.write_text(BASE + f"commands: {{signing: {{scheme: ed25519, public_key_file: {pub}}}}}\n")
    loaded = load_config(cfg)
    assert loaded.commands.signing is not None
    assert loaded.commands.signing.public_key_file == str(pub)
    assert loaded.commands.signing.verifier().key_ids
    cfg.write_text(BASE + "commands: {signing: {scheme: ed25519, public_key_file: nope.pub}}\n")
    proc = _validate(cfg)
    assert proc.returncode == 2 and "commands.signing" in proc.stderr
    assert str(cfg.parent / "nope.pub") in proc.stderr


def test_an_impossible_date_and_a_number_for_a_time_are_located() -> None:
    msg = problems("gateway: {id: g}\nlighting:\n  holidays: [2027-02-30]\n")
    assert "site.yaml: line 3: not valid YAML: '2027-02-30' is not a date" in msg
    msg = problems("gateway: {id: g}\nlighting:\n  programs:\n    p:\n      steps:\n"
                   "        - {at: 23.00, level: 50}\n  groups: [{name: g, program: p}]\n")
    assert "23.0 is not a time: write it as text with a colon" in msg


def test_hostile_yaml_is_refused_with_a_reason() -> None:
    deep = "gateway: {id: gw1}\nx: " + "[" * 2000 + "]" * 2000 + "\n"
    assert "nested too deeply" in problems(deep)
    assert "None: unknown key" in problems(BASE + "null: x\n")
    assert "1.5: unknown key" in problems(BASE + "1.5: x\n")
    tb = BASE + "mqtt: {format: thingsboard, thingsboard: {device_name: '{device:>999999999}'}}\n"
    assert "placeholders take no format (write {device})" in problems(tb)
