"""Every command through each foreign format: Sparkplug B (``NCMD Commands/<name>``, answered
in the node's ``Command Response`` metric) and ThingsBoard (gateway RPC on
``v1/devices/me/rpc/request/{id}``), against a real agent polling the simulated street on a real
Mosquitto. Each command must do what it does in our own format (tests/test_commands_e2e.py):
the same results, the same typed refusals, signatures checked (a signed request carried whole),
``set_config`` refused unsigned. A command added to the dispatcher without a case here fails
the test."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import CommandRequest
from gateway.commands.dispatcher import COMMANDS
from gateway.runtime import Agent
from gateway.signing import SigningKey, generate_keypair, load_signing_key, sign_request
from simulators.broker import MosquittoBroker
from simulators.runner import SimHandle, open_spec
from tests.test_sparkplug import SPEC, Host, sp_config
from tests.test_sparkplug import DataType as SpType
from tests.test_thingsboard import LIGHTING, TbPlatform, tb_config

Ask = Callable[[str, dict[str, Any] | None, bytes | None], Awaitable[dict[str, Any]]]
"""Send one command (plain arguments, or a signed request whole) and return our response
shape: ``{"ok": bool, "result"|"error": ...}``."""

_ids = itertools.count(1)


def signing(tmp: Path) -> tuple[SigningKey, dict[str, Any]]:
    generate_keypair(tmp / "platform.key", tmp / "platform.pub")
    return load_signing_key(tmp / "platform.key"), {
        "require_signature": False,
        "signing": {"scheme": "ed25519", "public_key_file": str(tmp / "platform.pub")}}


async def every_command(ask: Ask, agent: Agent, sim: SimHandle, key: SigningKey,
                        gateway: str) -> set[str]:
    """Run each command once (and the refusals that matter); return the commands run."""
    ran: set[str] = set()

    async def run(cmd: str, args: dict[str, Any] | None = None, *,
                  signed: bool = False) -> dict[str, Any]:
        ran.add(cmd)
        request = None
        if signed:
            request = sign_request(CommandRequest(id=f"s-{next(_ids)}", cmd=cmd,
                                                  args=args or {}), key=key, to=gateway)
        return await ask(cmd, args, request)

    def ok(r: dict[str, Any]) -> Any:
        assert r["ok"] is True, r
        return r.get("result")

    pong = ok(await run("ping"))
    assert pong["pong"] is True and pong["gateway"] == gateway
    state = ok(await run("get_state"))
    assert "main-street" in json.dumps(state)
    rules = ok(await run("get_rules"))
    assert rules["lighting"]["groups"][0]["name"] == "main-street"

    sim.devices["lamp-2"].set("dim_level", 17)
    read = ok(await run("read_point", {"device": "lamp-2", "point": "dim_level"}))
    assert read["value"] == 17
    ok(await run("write_point", {"device": "lamp-2", "point": "dim_level", "value": 42}))
    assert sim.devices["lamp-2"].peek("dim_level") == 42
    nope = await run("write_point", {"device": "lamp-2", "point": "nothing", "value": 1})
    assert nope["ok"] is False and nope["error"]["code"] == "not_found", nope

    better = json.loads(json.dumps(LIGHTING))
    better["programs"]["night"]["steps"][0]["level"] = 70
    ok(await run("set_rules", {"lighting": better}))
    assert agent.lighting is not None
    assert agent.lighting.rules_raw["programs"]["night"]["steps"][0]["level"] == 70
    bad = await run("set_rules", {"lighting": {**better, "groups": [
        {**better["groups"][0], "outputs": [{"device": "lamp-77", "point": "dim_level"}]}]}})
    assert bad["ok"] is False and "lamp-77" in bad["error"]["message"], bad

    # an override, signed: carried whole, checked, run
    ok(await run("set_override", {"group": "main-street", "level": 35, "duration_s": 600,
                                  "priority": 50}, signed=True))
    await agent.lighting.step()
    assert sim.devices["lamp-1"].peek("dim_level") == 35
    ok(await run("clear_override", {"group": "main-street"}))
    await agent.lighting.step()
    assert sim.devices["lamp-1"].peek("dim_level") != 35        # the program's level again
    out_of_range = await run("set_override", {"group": "main-street", "level": 135,
                                              "duration_s": 600})
    assert out_of_range["ok"] is False and out_of_range["error"]["code"] == "bad_args"

    ok(await run("sync_time", {"epoch_ms": int(time.time() * 1000)}))
    config = ok(await run("get_config"))
    assert config["config"]["gateway"]["id"] == gateway and config["digest"]

    unsigned = await run("set_config", {"config": {"gateway": {"id": gateway}}})
    assert unsigned["ok"] is False and unsigned["error"]["code"] == "unsigned", unsigned
    # signed, it reaches the agent, which says why not (this agent was not started from a file)
    signed = await run("set_config", {"config": {"gateway": {"id": gateway}}}, signed=True)
    assert signed["ok"] is False and signed["error"]["code"] == "unsupported", signed

    forged = sign_request(CommandRequest(id=f"f-{next(_ids)}", cmd="set_override",
                                         args={"group": "main-street", "level": 1,
                                               "duration_s": 60}), key=key, to="gw-other")
    wrong = await ask("set_override", None, forged)
    assert wrong["ok"] is False and wrong["error"]["code"] == "bad_signature", wrong
    return ran


def _normal(r: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": r["error"]} if "error" in r else {"ok": True, "result": r}


@pytest.mark.parametrize("fmt", ["sparkplug", "thingsboard"])
async def test_every_command_through_the_format(fmt: str, broker: MosquittoBroker,
                                                tmp_path: Path) -> None:
    key, commands = signing(tmp_path)
    async with open_spec(SPEC, ephemeral=True) as sim:
        if fmt == "sparkplug":
            host = Host(broker)
            cfg = sp_config(sim, broker, tmp_path)
            cfg = cfg.model_copy(update={"commands": cfg.commands.model_validate(
                {**cfg.commands.model_dump(), **commands})})
            async with host.running(), Agent(cfg) as agent:
                await host.until(lambda: host.of("NBIRTH"))

                async def ask(cmd: str, args: dict[str, Any] | None,
                              request: bytes | None) -> dict[str, Any]:
                    rid = f"r-{next(_ids)}"
                    body = (json.loads(request) if request is not None
                            else {"id": rid, "args": args or {}})
                    want = body["id"]
                    await host.command("NCMD", [{"name": f"Commands/{cmd}",
                                                 "type": SpType.STRING,
                                                 "value": json.dumps(body)}])
                    [r] = await host.until(lambda: [x for x in host.responses()
                                                    if x.get("id") == want])
                    assert r["cmd"] == cmd
                    return r

                ran = await every_command(ask, agent, sim, key, "gw-sp")
        else:
            platform = TbPlatform(broker)
            cfg = tb_config(sim, broker, tmp_path)
            cfg = cfg.model_copy(update={"commands": cfg.commands.model_validate(
                {**cfg.commands.model_dump(), **commands})})
            async with platform.running(), Agent(cfg) as agent:
                assert agent.link is not None
                await platform.until(lambda: platform.on("v1/gateway/connect"), within=30)

                async def ask(cmd: str, args: dict[str, Any] | None,
                              request: bytes | None) -> dict[str, Any]:
                    n = next(_ids)
                    params = json.loads(request) if request is not None else (args or {})
                    await platform.publish(f"v1/devices/me/rpc/request/{n}",
                                           {"method": cmd, "params": params})
                    [r] = await platform.until(
                        lambda: platform.on(f"v1/devices/me/rpc/response/{n}"))
                    return _normal(r)

                ran = await every_command(ask, agent, sim, key, "gw-tb")
    assert ran == set(COMMANDS), f"commands without a case here: {set(COMMANDS) - ran}"
