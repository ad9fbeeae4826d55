"""Remote configuration end to end: the agent as a real process (`edgegw run`), signed
`set_config` from `edgegw platform send --sign-key`, a config that comes up (applied) and one
that does not (rolled back by itself), `get_config` without secrets."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.signing import generate_keypair
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec
from tests.helpers import Platform, gateway_config
from tests.test_uplink import run_agent

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"


async def send(broker: MosquittoBroker, cmd: str, args: dict[str, Any] | None = None, *,
               key: Path | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "gateway.cli", "platform", "send", "--url", broker.url,
            "--gateway", "gw-rc", "--wait", "8"]
    if key is not None:
        argv += ["--sign-key", str(key)]
    argv += [cmd] + ([json.dumps(args)] if args is not None else [])
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                   timeout=60, cwd=ROOT)
    assert done.stdout, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def events(platform: Platform, type_: str) -> list[dict[str, Any]]:
    return [m for m in platform.of("event") if m["type"] == type_]


async def test_set_config_applies_or_rolls_back(broker: MosquittoBroker, tmp_path: Path) -> None:
    private, public = tmp_path / "platform.key", tmp_path / "platform.pub"
    generate_keypair(private, public)
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="platform-rc") as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db",
                             gateway_id="gw-rc", poll=0.2, extra={"commands": {
                                 "signing": {"scheme": "ed25519",
                                             "public_key_file": str(public)},
                                 "remote_config": True, "config_probation_s": 20}})
        raw = cfg.model_dump(mode="json", exclude={"source"})
        cfg_file = tmp_path / "gw.yaml"
        cfg_file.write_text(yaml.safe_dump(raw))
        cfg_file.chmod(0o640)
        original = cfg_file.read_text()
        proc = run_agent(cfg_file)
        try:
            await platform.until(lambda: platform.of("state"), within=20)

            # unsigned: refused before anything is looked at
            refused = await send(broker, "set_config", {"config": raw})
            assert refused["error"]["code"] == "unsigned"
            # a config that does not validate: refused, the file untouched
            broken = {**raw, "telemetry": {"batch_interval": -1}}
            bad = await send(broker, "set_config", {"config": broken}, key=private)
            assert bad["error"]["code"] == "bad_args"
            assert "telemetry.batch_interval" in bad["error"]["message"]
            other = {**raw, "gateway": {**raw["gateway"], "id": "gw-other"}}
            bad = await send(broker, "set_config", {"config": other}, key=private)
            assert bad["error"]["code"] == "bad_args" and "gw-other" in bad["error"]["message"]
            assert cfg_file.read_text() == original

            # a good change: applied once the agent is healthy on it
            good = {**raw, "telemetry": {**raw["telemetry"], "batch_interval": 0.5}}
            ok = await send(broker, "set_config", {"config": good}, key=private)
            assert ok["ok"] and ok["result"]["restarting"] is True, ok
            new_digest = ok["result"]["digest"]
            await platform.until(lambda: events(platform, "config_applied"), within=40)
            assert events(platform, "config_received")[0]["detail"]["digest"] == new_digest
            assert yaml.safe_load(cfg_file.read_text())["telemetry"]["batch_interval"] == 0.5
            assert (cfg_file.stat().st_mode & 0o777) == 0o640       # its permissions kept
            got = await send(broker, "get_config")
            assert got["result"]["digest"] == new_digest and got["result"]["probation"] is None
            assert got["result"]["config"]["telemetry"]["batch_interval"] == 0.5

            # a config that never comes up (the broker is not there): put back by itself
            lost = {**good, "mqtt": {**good["mqtt"], "url": "mqtt://127.0.0.1:1"}}
            sent = await send(broker, "set_config", {"config": lost, "probation_s": 5},
                              key=private)
            assert sent["ok"], sent
            await platform.until(lambda: events(platform, "config_rolled_back"), within=60)
            back = events(platform, "config_rolled_back")[0]["detail"]
            assert back["restored"] == new_digest and "uplink never connected" in back["reason"]
            assert yaml.safe_load(cfg_file.read_text())["mqtt"]["url"] == broker.url
            got = await send(broker, "get_config")
            assert got["result"]["digest"] == new_digest
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
        assert proc.returncode == 0, (tmp_path / "agent.log").read_text()[-3000:]
