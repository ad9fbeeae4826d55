"""Users' journeys through several commands, as docs/field-guide.md tells them.

The technician's: provision the identity -> add the bus by hand -> `scan --write` proposes and
adds the devices -> `check --lamp-test --report` passes and writes the report. (The operator's
journey: tests/test_commands_e2e.py::test_an_operator_pushes_lighting_and_alert_rules_from_a_
yaml_file and tests/test_lighting_preview.py; the platform engineer's:
tests/test_platform_journey.py; the newcomer's: tests/test_demo.py.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import load_config
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
runner = CliRunner()


async def test_the_technicians_commissioning_journey(broker: MosquittoBroker,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "etc"
    # 2. provision the identity (docs/field-guide.md section 2)
    made = await asyncio.to_thread(runner.invoke, app, [
        "provision", "--out-dir", str(out), "--id", "gw-j1", "--site", "district-9",
        "--broker", broker.url, "--store-path", str(tmp_path / "var" / "store.db"),
        "--lat", "10.7769", "--lon", "106.7009", "--timezone", "Asia/Ho_Chi_Minh",
        "--no-input"])
    assert made.exit_code == 0, made.output
    config = out / "config.yaml"
    assert config.exists()
    async with open_spec(SPEC, ephemeral=True) as sim:
        # 5. the bus, by hand; the cabinet has a battery-backed clock
        text = config.read_text().replace("gateway:\n", "gateway:\n  has_rtc: true\n", 1)
        text += ("service: {control_socket: " + str(tmp_path / "run" / "c.sock") + "}\n"
                 "buses:\n  - {name: lan, type: modbus-tcp, host: 127.0.0.1, "
                 f"port: {sim.tcp[0].port}, timeout: 0.5}}\n")
        config.write_text(text)
        # 6-7. scan and let it write the devices in
        scanned = await asyncio.to_thread(runner.invoke, app, [
            "scan", "--config", str(config), "--bus", "lan", "--units", "1-3", "--write"])
        assert scanned.exit_code == 0, scanned.output
        assert "added 3 device(s)" in scanned.output
        cfg = load_config(config)
        assert len(cfg.devices) == 3
        assert all(d.profile == "builtin:led-driver" for d in cfg.devices)
        # 8-10. check the site, cycle the lamps, write the report
        report = tmp_path / "usb" / "commissioning-gw-j1.json"
        checked = await asyncio.to_thread(runner.invoke, app, [
            "check", "--config", str(config), "--lamp-test", "--settle", "0.05",
            "--timeout", "1", "--report", str(report)])
    assert checked.exit_code == 0, checked.output
    data = json.loads(report.read_text())
    assert data["verdict"] == "pass" and data["gateway"]["id"] == "gw-j1"
    rows = {c["key"]: c for c in data["checks"]}
    assert rows["lamp-test:lamps"]["status"] == "pass"
    assert rows["agent"]["status"] == "pass"
    assert data["config"]["path"] == str(config.resolve())
    page = report.with_suffix(".html").read_text()
    assert page.count("<td>") > 10 and "gw-j1" in page
