"""`edgegw check` against a simulated site and a private Mosquitto: all green gives exit 0; a
silent device, a broker that is down, a busy serial port, an untrusted clock, a key readable by
others each fail with what to do; the lamp test reads power that follows the level and puts
the lamps back; the commissioning report is written as JSON and text; TLS end to end with a
certificate installed by `edgegw provision`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drivers.sample import Sample
from drivers.serial.reader import LinkState, SerialProtocol, SerialReader, SerialSettings
from gateway.config import load_config
from provisioning.check import CheckOptions, CheckReport, Status, run_checks
from provisioning.check.site import ServiceSandbox, _check_store, user_may_write
from provisioning.cli import app
from provisioning.identity import CSR_FILE
from provisioning.provision import ProvisionRequest, provision
from simulators.broker import BrokerTls, MosquittoBroker, find_mosquitto, free_port
from simulators.devices import Fault
from simulators.runner import SimHandle, open_spec
from simulators.serial_sim import Sds011Simulator
from tests.test_provisioning import Pki

runner = CliRunner()

SPEC = {"servers": [
    {"type": "tcp", "port": 0, "devices": [
        {"unit": 1, "profile": "led-driver", "name": "lamp-1"},
        {"unit": 2, "profile": "led-driver", "name": "lamp-2"}]},
    {"type": "rtu", "devices": [{"unit": 1, "profile": "env-sensor", "name": "env-1"}]},
]}
LIGHTING = {
    "programs": {"night": {"steps": [{"at": "sunset", "level": 100},
                                     {"at": "sunrise", "level": "off"}]}},
    "groups": [{"name": "street", "program": "night",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60},
                            {"device": "lamp-2", "point": "dim_level", "watts": 60}]}],
}
LOCATION = {"lat": 10.7769, "lon": 106.7009, "timezone": "Asia/Ho_Chi_Minh"}
FAST = CheckOptions(timeout=1.0, settle=0.05, ntp_probe=lambda: None, agent_probe=lambda: ())


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def site_config(tmp_path: Path, sim: SimHandle, dust: Sds011Simulator, *, broker_url: str,
                **extra: Any) -> Path:
    section = sim.gateway_section(poll=5)
    section["buses"].append({"name": "dust", "type": "serial", "port": dust.path,
                             "protocol": "sds011", "device": "dust-1", "period": 0.05})
    raw: dict[str, Any] = {
        "gateway": {"id": "gw-check", "site": "district-t", "groups": ["district-t"],
                    "has_rtc": True, "location": LOCATION},
        "mqtt": {"url": broker_url, "connect_timeout": 3},
        "store": {"path": str(tmp_path / "var" / "store.db")},
        **section,
        "lighting": LIGHTING,
    }
    raw.update(extra)
    return write_config(tmp_path, raw)


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[tuple[SimHandle, Sds011Simulator]]:
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Sds011Simulator(pm25=8.4, pm10=17.9, period=0.05, seed=1) as dust:
        yield sim, dust


def by_key(report: CheckReport) -> dict[str, Any]:
    return {r.key: r for r in report.results}


def statuses(report: CheckReport) -> dict[str, Status]:
    return {r.key: r.status for r in report.results}


# ----------------------------------------------------------------------------- the checks
async def test_a_healthy_site_passes_every_check(tmp_path: Path,
                                                 broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        path = site_config(tmp_path, sim, dust, broker_url=broker.url)
        report = await run_checks(path, FAST)
    st = statuses(report)
    assert report.passed, [(r.key, r.detail, r.hint) for r in report.failed]
    assert st["config"] is Status.PASS
    assert st["lighting"] in (Status.PASS, Status.WARN)
    assert st[f"broker:{broker.url}"] is Status.PASS
    for key in ("device:lamp-1", "device:lamp-2", "device:env-1", "serial:dust", "clock",
                "store", "outputs:street", "agent"):
        assert st[key] is Status.PASS, by_key(report)[key]
    assert st["certificate"] is Status.WARN          # plain mqtt://: passes, but says so
    rows = by_key(report)
    assert "pm25=8.4" in rows["serial:dust"].detail
    assert rows["device:lamp-1"].data["values"]["dim_level"] == 100
    assert "RTC" in rows["clock"].detail
    assert not list((tmp_path / "var").glob(".edgegw-check-*"))     # the probe store is gone


async def test_a_silent_device_fails_with_what_to_do(tmp_path: Path,
                                                     broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        sim.devices["env-1"].fault = Fault.silent()
        path = site_config(tmp_path, sim, dust, broker_url=broker.url)
        report = await run_checks(path, dataclass_replace(FAST, timeout=0.3))
    assert not report.passed
    (failed,) = report.failed
    assert failed.key == "device:env-1"
    assert "unit 1: no answer" in failed.detail
    assert failed.hint is not None
    assert f"edgegw scan --config {path} --bus sim-rtu-1" in failed.hint
    assert "A/B" in failed.hint and "--auto-baud" in failed.hint
    assert statuses(report)["device:lamp-1"] is Status.PASS


async def test_broker_down_and_a_dead_modbus_tcp_bus_fail(tmp_path: Path,
                                                          broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        section = sim.gateway_section(poll=5)
        (tcp,) = [b for b in section["buses"] if b["type"] == "modbus-tcp"]
        tcp["port"] = free_port()                           # nothing listens there
        path = site_config(tmp_path, sim, dust, broker_url=broker.url,
                           buses=section["buses"] + [{"name": "dust", "type": "serial",
                                                      "port": dust.path, "protocol": "sds011",
                                                      "period": 0.05}])
        await broker.stop()
        report = await run_checks(path, FAST)
    rows = by_key(report)
    assert rows["config"].status is Status.PASS, rows["config"].detail
    b = rows[f"broker:{broker.url}"]
    assert b.status is Status.FAIL
    assert b.hint is not None and "nothing listens" in b.hint
    lamp = rows["device:lamp-1"]
    assert lamp.status is Status.FAIL and "cannot connect" in lamp.detail
    assert lamp.hint is not None and "ping" in lamp.hint
    assert rows["device:env-1"].status is Status.PASS


async def test_a_serial_port_held_by_another_reader_shows_as_busy(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        path = site_config(tmp_path, sim, dust, broker_url=broker.url)
        held = SerialSettings(name="agent", port=dust.path, protocol=SerialProtocol.SDS011,
                              device="d", period=0.05)

        def ignore(batch: list[Sample]) -> None:
            return None

        async with SerialReader(held, on_samples=ignore) as agent:
            await asyncio.wait_for(agent.wait_for_state(LinkState.ONLINE), 5)
            report = await run_checks(path, dataclass_replace(FAST, timeout=0.5))
    row = by_key(report)["serial:dust"]
    assert row.status is Status.FAIL
    assert "busy" in row.detail
    assert row.hint is not None and "systemctl stop edgegw" in row.hint


async def test_a_missing_serial_port_says_where_to_look(tmp_path: Path,
                                                       broker: MosquittoBroker) -> None:
    path = write_config(tmp_path, {
        "gateway": {"id": "gw-serial", "has_rtc": True}, "mqtt": {"url": broker.url},
        "store": {"path": str(tmp_path / "store.db")},
        "buses": [{"name": "gps", "type": "serial", "port": str(tmp_path / "ttyGPS"),
                   "protocol": "nmea", "period": 0.1}]})
    report = await run_checks(path, dataclass_replace(FAST, timeout=0.3))
    row = by_key(report)["serial:gps"]
    assert row.status is Status.FAIL
    assert "does not exist" in row.detail
    assert row.hint is not None and "--list-ports" in row.hint


async def test_an_untrusted_clock_fails_and_ntp_makes_it_trusted(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    path = write_config(tmp_path, {
        "gateway": {"id": "gw-clock"}, "mqtt": {"url": broker.url},
        "store": {"path": str(tmp_path / "store.db")}})
    report = await run_checks(path, FAST)
    clock = by_key(report)["clock"]
    assert clock.status is Status.FAIL
    assert clock.hint is not None and "timedatectl set-ntp true" in clock.hint
    assert "has_rtc" in clock.hint and "nmea" in clock.hint

    synced = dataclass_replace(FAST, ntp_probe=lambda: "NTP synchronised (test)")
    report = await run_checks(path, synced)
    assert report.passed, report.failed
    assert "NTP synchronised (test)" in by_key(report)["clock"].detail


async def test_an_invalid_config_fails_first_and_alone(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"gateway": {"id": "gw-x"},
                                   "buses": [{"name": "b", "type": "modbus-rtu"}]})
    report = await run_checks(path, FAST)
    assert [(r.key, r.status) for r in report.results] == [("config", Status.FAIL)]
    row = report.results[0]
    assert "buses[0].port" in row.detail
    assert row.hint is not None and "edgegw config validate" in row.hint
    result = await asyncio.to_thread(runner.invoke, app, ["check", "--config", str(path)])
    assert result.exit_code == 2


# ------------------------------------------------------------------------------ lamp test
async def test_lamp_test_reads_power_that_follows_the_level_and_restores_it(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        sim.devices["lamp-1"].set("dim_level", 40)
        path = site_config(tmp_path, sim, dust, broker_url=broker.url)
        report = await run_checks(path, dataclass_replace(FAST, lamp_test=True))
        after = [sim.devices[n].get("dim_level") for n in ("lamp-1", "lamp-2")]

        sim.devices["lamp-2"].lamp_failed = True
        broken = await run_checks(path, dataclass_replace(FAST, lamp_test=True))
    row = by_key(report)["lamp-test:street"]
    assert row.status is Status.PASS, (row.detail, row.hint)
    steps = {s["level"]: s for s in row.data["steps"]}
    assert sorted(steps) == [0.0, 50.0, 100.0]
    for key in ("lamp-1/dim_level", "lamp-2/dim_level"):
        assert steps[0.0]["power_w"][key] == pytest.approx(0.0, abs=0.5)
        assert steps[50.0]["power_w"][key] == pytest.approx(30.0, rel=0.05)
        assert steps[100.0]["power_w"][key] == pytest.approx(60.0, rel=0.05)
    assert steps[100.0]["total_w"] == pytest.approx(120.0, rel=0.05)
    assert after == [40, 100]                        # each lamp back at its level

    bad = by_key(broken)["lamp-test:street"]
    assert bad.status is Status.FAIL
    assert "lamp-2 draws 0.0 W at 100 %" in bad.detail
    assert bad.hint is not None and "fault bits" in bad.hint
    assert not broken.passed


async def test_lamp_test_without_lighting_rules_uses_the_led_drivers_and_fails_a_dead_one(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    """Commissioning comes before the rules: the lamps are found by their profiles."""
    from simulators.devices import Fault

    async with site() as (sim, dust):
        path = site_config(tmp_path, sim, dust, broker_url=broker.url, lighting=None)
        lamps = sorted(n for n in sim.devices if n.startswith("lamp-"))
        report = await run_checks(path, dataclass_replace(FAST, lamp_test=True))
        sim.devices[lamps[-1]].fault = Fault.silent()
        dead = await run_checks(path, dataclass_replace(FAST, lamp_test=True))
    assert len(lamps) >= 2
    row = by_key(report)["lamp-test:lamps"]
    assert row.status is Status.PASS, (row.detail, row.hint)
    steps = {s["level"]: s for s in row.data["steps"]}
    assert set(steps[100.0]["power_w"]) == {f"{n}/dim_level" for n in lamps}
    failed = by_key(dead)["lamp-test:lamps"]
    assert failed.status is Status.FAIL and lamps[-1] in failed.detail
    assert not dead.passed


# --------------------------------------------------------------------------- CLI, report
async def test_cli_check_exit_codes_and_commissioning_report(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    async with site() as (sim, dust):
        path = site_config(tmp_path, sim, dust, broker_url=broker.url)
        report = tmp_path / "out" / "commissioning.json"
        args = ["check", "--config", str(path), "--timeout", "1", "--report", str(report),
                "--lamp-test", "--settle", "0.05"]
        ok = await asyncio.to_thread(runner.invoke, app, args)
        sim.devices["lamp-2"].fault = Fault.silent()
        failing = await asyncio.to_thread(
            runner.invoke, app, ["check", "--config", str(path), "--timeout", "0.3"])
        bad_name = await asyncio.to_thread(
            runner.invoke, app, ["check", "--config", str(path), "--report", "x.txt"])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "is ready" in ok.output
    data = json.loads(report.read_text())
    assert data["kind"] == "edgegw-commissioning-report"
    assert data["verdict"] == "pass"
    assert data["gateway"]["id"] == "gw-check"
    assert data["versions"]["edgegw"] and data["versions"]["pymodbus"]
    assert data["started_at"] <= data["finished_at"]
    keys = [c["key"] for c in data["checks"]]
    assert keys[0] == "config" and "device:env-1" in keys and "serial:dust" in keys
    assert all(c["started_at"] and c["status"] for c in data["checks"])
    text = report.with_suffix(".txt").read_text()
    assert "EDGEGW COMMISSIONING REPORT" in text
    assert "Verdict   PASS" in text and "gw-check" in text and "Signature" in text
    assert f"Config    {path.resolve()}" in text                     # absolute, as the doc says
    # every lamp with its watts at each level
    lamp_lines = [line.split() for line in text.splitlines()
                  if line.strip().startswith(("lamp-1 ", "lamp-2 "))]
    assert len(lamp_lines) == 2 and all(len(parts) == 7 for parts in lamp_lines)   # 3 x "N W"
    page = report.with_suffix(".html").read_text()
    assert page.startswith("<!doctype html>") and "gw-check" in page
    assert "<th>100 %</th>" in page and "<td>lamp-1</td>" in page and "Signature" in page

    assert failing.exit_code == 1
    assert "FAIL" in failing.output and "What to do" in failing.output
    assert "lamp-2" in failing.output
    assert bad_name.exit_code == 2


# ------------------------------------------------------------------------- TLS end to end
async def test_tls_end_to_end_with_the_provisioned_identity(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it from Debian's packages)")
    pki = Pki()
    (tmp_path / "ca.crt").write_bytes(pki.ca_pem)
    server_cert, server_key = pki.server(tmp_path / "broker-tls")
    tls = BrokerTls(ca=tmp_path / "ca.crt", cert=server_cert, key=server_key)
    async with MosquittoBroker(tmp_path / "broker", tls=tls) as tls_broker:
        out = tmp_path / "etc"
        provision(ProvisionRequest(out_dir=out, gateway_id="gw-tls", site="district-t",
                                   broker=tls_broker.url, store_path=str(tmp_path / "s.db")))
        (tmp_path / "gw.crt").write_bytes(pki.sign_csr((out / CSR_FILE).read_bytes()))
        provision(ProvisionRequest(out_dir=out, cert=tmp_path / "gw.crt",
                                   ca=tmp_path / "ca.crt"))
        synced = dataclass_replace(FAST, ntp_probe=lambda: "NTP synchronised (test)")
        report = await run_checks(out / "config.yaml", synced)
        assert report.passed, [(r.key, r.detail) for r in report.failed]
        rows = by_key(report)
        assert "client certificate accepted" in rows[f"broker:{tls_broker.url}"].detail
        assert rows["certificate"].status is Status.PASS
        assert "CN=gw-tls" in rows["certificate"].detail
        assert rows["secret:mqtt.tls.key"].status is Status.PASS

        (out / "gateway.key").chmod(0o644)
        loose = await run_checks(out / "config.yaml", synced)
    secret = by_key(loose)["secret:mqtt.tls.key"]
    assert secret.status is Status.FAIL
    assert secret.hint is not None and f"chmod 600 {out / 'gateway.key'}" in secret.hint
    assert by_key(loose)[f"broker:{tls_broker.url}"].status is Status.FAIL


def dataclass_replace(options: CheckOptions, **changes: Any) -> CheckOptions:
    return dataclasses.replace(options, **changes)


async def test_the_agent_check_looks_for_the_agent_of_this_config(tmp_path: Path) -> None:
    """Not any `edgegw run` on the machine: the one answering on this config's socket."""
    from gateway.config import load_config
    from gateway.runtime import Agent
    from provisioning.ports import agents_of

    path = write_config(tmp_path, {
        "gateway": {"id": "gw-own"}, "mqtt": {"url": "mqtt://127.0.0.1:9", "connect_timeout": 1},
        "store": {"path": str(tmp_path / "store.db")},
        "service": {"control_socket": str(tmp_path / "run" / "c.sock"), "connect_jitter": 0}})
    cfg = load_config(path)
    sock = cfg.service.control_socket
    assert await asyncio.to_thread(agents_of, path, sock) == ()
    async with Agent(cfg, control=True):
        async with asyncio.timeout(10):
            while not os.path.exists(sock):  # noqa: ASYNC110, ASYNC240
                await asyncio.sleep(0.02)
        found = await asyncio.to_thread(agents_of, path, sock)
        other = await asyncio.to_thread(agents_of, tmp_path / "other.yaml",
                                         tmp_path / "none.sock")
    assert [h.pid for h in found] == [os.getpid()]
    assert other == ()


# the real unit, as `systemctl show edgegw -p ...` prints it once deploy/edgegw.service is installed
SHOWN = """LoadState=loaded
ProtectSystem=strict
ReadWritePaths=/var/lib/edgegw
StateDirectory=edgegw
RuntimeDirectory=edgegw
User=edgegw
"""


def test_the_service_sandbox_is_read_from_systemd() -> None:
    box = ServiceSandbox.parse(SHOWN)
    assert box is not None and box.protect == "strict" and box.user == "edgegw"
    assert box.may_write(Path("/var/lib/edgegw/store.db"))
    assert box.may_write(Path("/var/lib/edgegw/sub/store.db"))
    assert not box.may_write(Path("/data/edgegw/store.db"))
    assert not box.may_write(Path("/var/lib/edgegw-other/store.db"))
    added = ServiceSandbox.parse(SHOWN.replace("=/var/lib/edgegw\n", "=/var/lib/edgegw -/data\n"))
    assert added is not None and added.may_write(Path("/data/edgegw/store.db"))
    full = ServiceSandbox.parse(SHOWN.replace("strict", "full"))
    assert full is not None and full.may_write(Path("/data/store.db"))
    assert not full.may_write(Path("/etc/edgegw/store.db"))
    assert ServiceSandbox.parse("LoadState=not-found\n") is None


def test_a_store_the_service_may_not_write_fails_though_the_check_can(tmp_path: Path) -> None:
    """The technician runs the check with sudo: root can write anywhere, the service (User=edgegw,
    ProtectSystem=strict) only under /var/lib/edgegw; the check must say the store path fails."""
    path = write_config(tmp_path, {
        "gateway": {"id": "gw-store", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "store": {"path": str(tmp_path / "var" / "store.db")}})
    (tmp_path / "var").mkdir()
    (tmp_path / "var").chmod(0o777)     # whoever the unit's user is here, it may write
    cfg = load_config(path)
    box = ServiceSandbox.parse(SHOWN)
    res = _check_store(cfg, sandbox=lambda: box)
    assert res.status is Status.FAIL
    assert "may write only /var/lib/edgegw, /run/edgegw" in res.detail
    assert "ReadWritePaths=" + str(tmp_path / "var") in (res.hint or "")
    inside = ServiceSandbox.parse(SHOWN.replace("=/var/lib/edgegw\n", f"={tmp_path}\n"))
    assert _check_store(cfg, sandbox=lambda: inside).status is Status.PASS
    assert _check_store(cfg, sandbox=lambda: None).status is Status.PASS   # no service here


def test_a_store_directory_the_service_user_cannot_write_fails(tmp_path: Path) -> None:
    """Inside the sandbox but made by root (a ReadWritePaths= directory systemd does not chown):
    the check, run as root, names the owner and mode and says how to fix it."""
    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    var.chmod(0o700)
    path = write_config(tmp_path, {
        "gateway": {"id": "gw-store", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "store": {"path": str(var / "store.db")}})
    cfg = load_config(path)
    box = ServiceSandbox.parse(SHOWN.replace("=/var/lib/edgegw\n", f"={tmp_path}\n")
                               .replace("User=edgegw", "User=nobody"))
    assert user_may_write(var, "nobody") is False
    res = _check_store(cfg, sandbox=lambda: box)
    assert res.status is Status.FAIL
    assert "not writable by the service's user nobody" in res.detail and "drwx------" in res.detail
    assert f"sudo chown nobody:nobody {var}" in (res.hint or "")
    var.chmod(0o777)
    assert user_may_write(var, "nobody") is True
    assert _check_store(cfg, sandbox=lambda: box).status is Status.PASS
    assert user_may_write(var, "no-such-user-here") is None
