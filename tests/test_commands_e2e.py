"""Commands end to end: the platform tools -> private Mosquitto -> running agents -> simulated
devices, and back. Each command, group commands, idempotency across a restart, signing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.codec import CommandRequest
from gateway.platform.client import Broker, send
from gateway.runtime import Agent
from gateway.signing import generate_keypair
from simulators.broker import MosquittoBroker
from simulators.runner import SimHandle, open_spec
from tests.helpers import gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
LIGHTING: dict[str, Any] = {
    "programs": {"night": {"steps": [{"at": "18:00", "level": 100},
                                     {"at": "06:00", "level": "off"}]}},
    "groups": [{"name": "main-street", "program": "night",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60}]}],
}


def cfg_for(sim: SimHandle, broker: MosquittoBroker, tmp: Path, gw: str,
            commands: dict[str, Any] | None = None) -> Any:
    extra: dict[str, Any] = {"gateway": {"id": gw, "groups": ["district-1"], "location": PARIS,
                                         "has_rtc": True},
                             "lighting": LIGHTING}
    if commands:
        extra["commands"] = commands
    return gateway_config(sim, broker_url=broker.url, store=tmp / gw / "store.db",
                          gateway_id=gw, extra=extra)


async def ask(broker: MosquittoBroker, cmd: str, args: dict[str, Any] | None = None, *,
              gateway: str | None = "gw-a", group: str | None = None, rid: str | None = None,
              expect: int | None = None) -> list[dict[str, Any]]:
    req = CommandRequest(id=rid or f"t-{time.monotonic_ns()}", cmd=cmd, args=args or {})
    return await send(Broker(broker.url), req, gateway=None if group else gateway, group=group,
                      wait=5, expect=expect)


async def test_every_command_end_to_end(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        async with Agent(cfg_for(sim, broker, tmp_path, "gw-a")) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            [pong] = await ask(broker, "ping")
            assert pong["ok"] and pong["result"]["pong"] is True and pong["gateway"] == "gw-a"

            [state] = await ask(broker, "get_state")
            assert state["ok"]
            assert set(state["result"]["devices"]) >= {"lamp-1", "env-1", "meter-1"}
            assert "main-street" in state["result"]["lighting"]["groups"]

            lamp = sim.devices["lamp-2"]
            [w] = await ask(broker, "write_point",
                            {"device": "lamp-2", "point": "dim_level", "value": 35})
            assert w["ok"], w
            assert lamp.peek("dim_level") == 35
            [r] = await ask(broker, "read_point", {"device": "lamp-2", "point": "dim_level"})
            assert r["ok"] and r["result"]["value"] == 35

            [bad] = await ask(broker, "write_point",
                              {"device": "lamp-2", "point": "dim_level", "value": 150})
            assert not bad["ok"] and bad["error"]["code"] == "rejected"
            [ro] = await ask(broker, "write_point",
                             {"device": "lamp-2", "point": "lamp_power", "value": 1})
            assert not ro["ok"] and "not writable" in ro["error"]["message"]
            [nf] = await ask(broker, "read_point", {"device": "lamp-99", "point": "x"})
            assert not nf["ok"] and nf["error"]["code"] == "not_found"

            [ov] = await ask(broker, "set_override", {"group": "main-street", "level": 100,
                                                      "duration_s": 3600, "priority": 50})
            assert ov["ok"], ov
            assert agent.lighting is not None
            await agent.lighting.step()
            assert sim.devices["lamp-1"].peek("dim_level") == 100
            [cl] = await ask(broker, "clear_override", {"group": "main-street"})
            assert cl["ok"], cl

            [rules] = await ask(broker, "get_rules")
            old_version = rules["result"]["version"]
            broken = json.loads(json.dumps(LIGHTING))
            broken["groups"][0]["outputs"][0]["device"] = "lamp-77"
            [rej] = await ask(broker, "set_rules", {"lighting": broken})
            assert not rej["ok"] and rej["error"]["code"] == "invalid_rules"
            assert "lamp-77" in rej["error"]["message"]
            [same] = await ask(broker, "get_rules")
            assert same["result"]["version"] == old_version

            better = json.loads(json.dumps(LIGHTING))
            better["programs"]["night"]["steps"][0]["level"] = 70
            [ok] = await ask(broker, "set_rules", {"lighting": better})
            assert ok["ok"] and ok["result"]["version"] != old_version

            [t] = await ask(broker, "sync_time", {"epoch_ms": int(time.time() * 1000)})
            assert t["ok"] and t["result"]["clock_trusted"] is True

            [unknown] = await ask(broker, "reboot_everything")
            assert not unknown["ok"] and unknown["error"]["code"] == "unknown_command"
            [typed] = await ask(broker, "set_override", {"group": "main-street",
                                                         "level": "bright"})
            assert not typed["ok"] and typed["error"]["code"] == "bad_args"
            assert "level" in typed["error"]["message"]


async def test_malformed_request_gets_a_null_id_answer(broker: MosquittoBroker,
                                                       tmp_path: Path) -> None:
    import aiomqtt

    async with open_spec(SPEC, ephemeral=True) as sim:
        async with Agent(cfg_for(sim, broker, tmp_path, "gw-a")) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.subscribe("city/v1/gw-a/cmd/res", qos=1)
                await c.publish("city/v1/gw-a/cmd/req", b"{not json", qos=1)
                async with asyncio.timeout(5):
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        answer = json.loads(m.payload)
                        break
            assert answer["id"] is None and answer["ok"] is False
            assert answer["error"]["code"] == "malformed"
            [pong] = await ask(broker, "ping")            # and the agent is still fine
            assert pong["ok"]


async def test_group_command_reaches_every_gateway(broker: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        async with Agent(cfg_for(sim, broker, tmp_path, "gw-a")) as a, \
                Agent(cfg_for(sim, broker, tmp_path, "gw-b")) as b:
            assert a.link is not None and b.link is not None
            await asyncio.wait_for(a.link.connected.wait(), 10)
            await asyncio.wait_for(b.link.connected.wait(), 10)
            answers = await ask(broker, "ping", group="district-1", expect=2)
            assert sorted(x["gateway"] for x in answers) == ["gw-a", "gw-b"]
            assert all(x["ok"] for x in answers)


async def test_repeated_id_is_not_executed_twice_even_after_a_restart(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        lamp = sim.devices["lamp-3"]
        args = {"device": "lamp-3", "point": "dim_level", "value": 42}
        cfg = cfg_for(sim, broker, tmp_path, "gw-a")
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            [first] = await ask(broker, "write_point", args, rid="once-1")
            assert first["ok"]
        writes = len(lamp.writes)
        lamp.set("dim_level", 7)
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            [again] = await ask(broker, "write_point", args, rid="once-1")
        assert again == first                         # the first response, again
        assert len(lamp.writes) == writes             # not written a second time
        assert lamp.peek("dim_level") == 7


async def test_signed_commands_when_signatures_are_required(broker: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    private, public = tmp_path / "platform.key", tmp_path / "platform.pub"
    generate_keypair(private, public)
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = cfg_for(sim, broker, tmp_path, "gw-a", commands={
            "require_signature": True,
            "signing": {"scheme": "ed25519", "public_key_file": str(public)}})
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            base = [sys.executable, "-m", "gateway.cli", "platform", "send", "--url",
                    broker.url, "--gateway", "gw-a", "--wait", "5"]
            signed = await asyncio.to_thread(
                subprocess.run, [*base, "--sign-key", str(private), "ping"],
                capture_output=True, text=True, timeout=30)
            assert signed.returncode == 0, signed.stderr
            assert json.loads(signed.stdout)["ok"] is True
            unsigned = await asyncio.to_thread(
                subprocess.run, [*base, "ping"], capture_output=True, text=True, timeout=30)
            assert unsigned.returncode == 1
            assert json.loads(unsigned.stdout)["error"]["code"] == "unsigned"


RULES_FILE = """\
# as an operator writes it: unquoted dates, `off`
lighting:
  holidays:
    - 2026-12-24
    - {from: 2027-02-16, to: 2027-02-20}
  programs:
    night:
      steps:
        - {at: "18:00", level: 100}
        - {at: "23:00", level: 60%}
        - {at: "06:00", level: off}
  groups:
    - name: main-street
      program: night
      outputs: [{device: lamp-1, point: dim_level, watts: 60}]
alerts:
  rules:
    - {name: flood_warning, kind: threshold, severity: warning,
       point: water-1/water_level, above: 25, clear: 20}
"""


async def test_an_operator_pushes_lighting_and_alert_rules_from_a_yaml_file(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_FILE)
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = cfg_for(sim, broker, tmp_path, "gw-a")
        cfg = cfg.model_copy(update={"alerts": {"rules": [
            {"name": "heat", "kind": "threshold", "point": "env-1/temperature", "above": 40,
             "clear": 38}]}})
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            base = [sys.executable, "-m", "gateway.cli", "platform", "send", "--url",
                    broker.url, "--gateway", "gw-a", "--wait", "5"]
            sent = await asyncio.to_thread(
                subprocess.run, [*base, "set_rules", f"@{rules}"], capture_output=True,
                text=True, timeout=30)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            answer = json.loads(sent.stdout)
            assert answer["ok"] is True, answer
            [got] = await ask(broker, "get_rules")
            result = got["result"]
            assert result["version"] == answer["result"]["version"]
            steps = result["lighting"]["programs"]["night"]["steps"]
            assert [s["level"] for s in steps] == [100, 60, 0]     # numbers, `off` is 0
            assert result["lighting"]["holidays"][0] == "2026-12-24"
            assert result["alerts"]["rules"][0]["name"] == "flood_warning"
            # a bad file: refused whole, each problem at its path from the root, once
            bad = tmp_path / "bad.yaml"
            bad.write_text(RULES_FILE.replace("device: lamp-1", "device: lamp-9"))
            refused = await asyncio.to_thread(
                subprocess.run, [*base, "set_rules", f"@{bad}"], capture_output=True,
                text=True, timeout=30)
            error = json.loads(refused.stdout)["error"]
            assert error["code"] == "invalid_rules"
            assert "lighting.groups[0].outputs[0]: no point lamp-9.dim_level" in error["message"]
            assert "lighting.lighting" not in error["message"]
            [still] = await ask(broker, "get_rules")
            assert still["result"]["version"] == answer["result"]["version"]
