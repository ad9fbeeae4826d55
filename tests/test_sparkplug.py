"""``mqtt.format: sparkplug``: the agent as a Sparkplug B edge node on a real Mosquitto.

A host stand-in subscribes to ``spBv1.0/#`` and checks the specification's rules (births first,
``seq`` 0-255 over the session, ``bdSeq`` of the will and the NBIRTH, names and aliases in the
births, aliases only in the data, timestamps on every metric, QoS and retain flags), the values
against what the agent polled, and that commands reach the simulated devices. Every payload is
also decoded by Eclipse Tahu's own JavaScript library (npm ``sparkplug-payload``, installed by
``make test``) and must agree with ours, metric for metric."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from gateway.northbound.sparkplug_pb import DataType, Payload
from gateway.runtime import Agent
from simulators.broker import MosquittoBroker
from simulators.devices import Fault
from simulators.runner import SimHandle, open_spec
from tests.helpers import gateway_config
from tests.test_uplink import run_agent

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
TAHU = ROOT / "tests" / "sparkplug_js"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
LIGHTING: dict[str, Any] = {
    "programs": {"night": {"steps": [{"at": "18:00", "level": 100},
                                     {"at": "06:00", "level": "off"}]}},
    "groups": [{"name": "main-street", "program": "night",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60}]}],
}
NODE = "spBv1.0/city-d1/{verb}/gw-sp"


def sp_config(sim: SimHandle, broker: MosquittoBroker, tmp: Path, *,
              bus_timeout: float | None = None, **sparkplug: Any) -> Any:
    extra: dict[str, Any] = {"mqtt": {"format": "sparkplug",
                                      "sparkplug": {"group_id": "city-d1", **sparkplug}},
                             "gateway": {"id": "gw-sp", "location": PARIS, "has_rtc": True},
                             "lighting": LIGHTING}
    if bus_timeout is not None:       # a dead device is probed again sooner
        extra["buses"] = [{**b, "timeout": bus_timeout}
                          for b in sim.gateway_section(poll=0.2)["buses"]]
    return gateway_config(sim, broker_url=broker.url, store=tmp / "store.db", gateway_id="gw-sp",
                          extra=extra)


@dataclass
class Msg:
    topic: str
    raw: bytes
    payload: Any
    qos: int
    retain: bool

    @property
    def verb(self) -> str:
        return self.topic.split("/")[2]

    @property
    def device(self) -> str | None:
        parts = self.topic.split("/")
        return parts[4] if len(parts) > 4 else None

    def metric(self, name: str) -> Any:
        return next(m for m in self.payload.metrics if m.name == name)


class Host:
    """A Sparkplug host application's view: every message under spBv1.0, parsed."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.messages: list[Msg] = []
        self.changed = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        self._seen: set[tuple[str, bytes]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Host]:
        task = asyncio.create_task(self._run())
        try:
            async with asyncio.timeout(10):
                await self.ready.wait()
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="sp-host",
                                          clean_session=False) as client:
                    self.client = client
                    await client.subscribe("spBv1.0/city-d1/#", qos=1)
                    self.ready.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        if str(m.topic).split("/")[2] in ("NCMD", "DCMD"):
                            continue                  # the host's own commands
                        if (str(m.topic), m.payload) in self._seen:
                            continue     # redelivered (QoS 1 across the broker's restart)
                        self._seen.add((str(m.topic), m.payload))
                        self.messages.append(Msg(str(m.topic), m.payload,
                                                 Payload.FromString(m.payload), m.qos,
                                                 bool(m.retain)))
                        self.changed.set()
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.2)

    def of(self, verb: str, device: str | None = None) -> list[Msg]:
        return [m for m in self.messages if m.verb == verb
                and (device is None or m.device == device)]

    async def until(self, predicate: Any, within: float = 15.0) -> Any:
        async with asyncio.timeout(within):
            while True:
                got = predicate()
                if got:
                    return got
                self.changed.clear()
                await self.changed.wait()

    async def command(self, verb: str, metrics: list[dict[str, Any]],
                      device: str | None = None) -> None:
        p = Payload()
        p.timestamp = int(time.time() * 1000)
        for spec in metrics:
            m = p.metrics.add()
            if "name" in spec:
                m.name = spec["name"]
            if "alias" in spec:
                m.alias = spec["alias"]
            m.timestamp = p.timestamp
            m.datatype = spec["type"]
            if spec["type"] == DataType.BOOLEAN:
                m.boolean_value = spec["value"]
            elif spec["type"] == DataType.STRING:
                m.string_value = spec["value"]
            else:
                m.int_value = spec["value"]
        topic = NODE.format(verb=verb) + (f"/{device}" if device else "")
        assert self.client is not None
        await self.client.publish(topic, p.SerializeToString(), qos=1)

    def responses(self) -> list[dict[str, Any]]:
        """The `Command Response` values, by alias (declared in the last NBIRTH)."""
        alias = self.of("NBIRTH")[-1].metric("Command Response").alias
        return [json.loads(m.string_value) for x in self.of("NDATA")
                for m in x.payload.metrics if m.alias == alias]


def value_of(m: Any, dtype: int | None = None) -> Any:
    which = m.WhichOneof("value")
    v = getattr(m, which) if which else None
    dtype = m.datatype or dtype
    if dtype in (DataType.INT8, DataType.INT16, DataType.INT32) and v >= 1 << 31:
        v -= 1 << 32
    if dtype == DataType.INT64 and v >= 1 << 63:
        v -= 1 << 64
    return v


def check_session(msgs: list[Msg], *, late_ok: bool = False) -> None:
    """The specification's rules over one node's messages, in arrival order. ``late_ok``: a
    broker restart may deliver the end of a session after its will; such messages continue
    that session's ``seq`` and are let through."""
    ended: int | None = None
    seq: int | None = None
    born: set[str] = set()
    node_born = False
    bdseq: int | None = None
    for m in msgs:
        assert not m.retain, m.topic
        p = m.payload
        if m.verb == "NDEATH":
            assert not p.HasField("seq") and [x.name for x in p.metrics] == ["bdSeq"]
            if value_of(p.metrics[0]) != bdseq:
                continue         # an older session's will (the specification: ignore it)
            node_born, ended, seq, born = False, seq, None, set()
            continue
        assert p.HasField("seq") and p.HasField("timestamp"), m.topic
        if m.verb == "NBIRTH":
            assert p.seq == 0 and m.qos == 0
            names = {x.name for x in p.metrics}
            assert {"bdSeq", "Node Control/Rebirth"} <= names
            assert value_of(m.metric("Node Control/Rebirth")) is False
            assert not m.metric("Node Control/Rebirth").HasField("alias")
            bdseq = value_of(m.metric("bdSeq"))
            for x in p.metrics:
                assert x.name and x.datatype and x.HasField("timestamp")
            aliases = [x.alias for x in p.metrics if x.HasField("alias")]
            assert len(aliases) == len(set(aliases))
            node_born, seq, born = True, 0, set()
            continue
        if not node_born and late_ok and ended is not None and p.seq == (ended + 1) % 256:
            ended = p.seq
            continue
        assert node_born, f"{m.topic} before the NBIRTH"
        assert seq is not None and p.seq == (seq + 1) % 256, (m.topic, p.seq, seq)
        seq = p.seq
        if m.verb == "DBIRTH":
            assert m.qos == 0
            for x in p.metrics:
                assert x.name and x.HasField("alias") and x.datatype
                assert x.HasField("timestamp")
            assert m.device is not None
            born.add(m.device)
        elif m.verb == "DDEATH":
            born.discard(m.device or "")
        elif m.verb in ("DDATA", "NDATA"):
            if m.verb == "DDATA":
                assert m.device in born, f"DDATA for {m.device} without its DBIRTH"
            for x in p.metrics:
                assert not x.name and x.HasField("alias") and x.HasField("timestamp")
                assert not x.datatype


def tahu_decode(msgs: list[Msg]) -> list[dict[str, Any]]:
    """Eclipse Tahu's JavaScript decoding of the same payloads."""
    stdin = "".join(json.dumps({"topic": m.topic,
                                "payload_b64": base64.b64encode(m.raw).decode()}) + "\n"
                    for m in msgs)
    done = subprocess.run(["node", str(TAHU / "decode.cjs")], input=stdin, text=True,
                          capture_output=True, timeout=60, check=True)
    return [json.loads(x) for x in done.stdout.splitlines()]


def tahu_value(v: Any) -> Any:
    if isinstance(v, dict) and "long" in v:
        return int(v["long"])
    return v


# --- the tests -------------------------------------------------------------------------------
async def test_births_data_and_death_follow_the_specification(broker: MosquittoBroker,
                                                               tmp_path: Path) -> None:
    host = Host(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, host.running():
        async with Agent(sp_config(sim, broker, tmp_path)) as agent:
            await host.until(lambda: len(host.of("DDATA", "env-1")) >= 5)
            await host.until(lambda: host.of("NDATA"))
            latest = dict(agent.latest.items())
        await host.until(lambda: host.of("NDEATH"))
    msgs = host.messages
    check_session(msgs)
    assert msgs[0].verb == "NBIRTH" and msgs[-1].verb == "NDEATH"
    nbirth = msgs[0]
    assert value_of(nbirth.metric("bdSeq")) == value_of(msgs[-1].metric("bdSeq"))
    assert nbirth.metric("Properties/Gateway").string_value == "gw-sp"
    assert "Commands/set_override" in {x.name for x in nbirth.payload.metrics}
    assert "Lighting/main-street/Override Level" in {x.name for x in nbirth.payload.metrics}
    assert "Health/cpu_percent" in {x.name for x in nbirth.payload.metrics}
    assert {m.device for m in host.of("DBIRTH")} == {"env-1", "water-1", "meter-1", "lamp-1",
                                                      "lamp-2", "lamp-3"}
    dbirth = host.of("DBIRTH", "env-1")[0]
    t = dbirth.metric("temperature")
    assert t.datatype == DataType.DOUBLE
    assert list(t.properties.keys) == ["engUnit"] and t.properties.values[0].string_value == "degC"
    assert host.of("DBIRTH", "lamp-3")[0].metric("serial_number").datatype == DataType.STRING
    assert host.of("DBIRTH", "lamp-1")[0].metric("dim_level").datatype == DataType.UINT16

    # every DDATA value is a value the agent read: the newest equals the agent's latest
    names = {(b.device, x.alias): x.name for b in host.of("DBIRTH") for x in b.payload.metrics}
    newest: dict[tuple[str, str], tuple[int, Any]] = {}
    for m in host.of("DDATA"):
        for x in m.payload.metrics:
            key = (m.device or "", names[(m.device, x.alias)])
            if not x.is_null and x.timestamp >= newest.get(key, (0, None))[0]:
                newest[key] = (x.timestamp, value_of(x))
    compared = 0
    for key, (ts, v) in newest.items():
        last = latest.get(key)
        if last is not None and last.ts == ts:
            assert v == last.value, key
            compared += 1
    assert compared >= 10

    # Eclipse Tahu's decoder reads the same metrics (data by the births' datatypes)
    if shutil.which("node") is None or not (TAHU / "node_modules").is_dir():
        pytest.skip("node or tests/sparkplug_js/node_modules missing (make test installs them)")
    decoded = tahu_decode(msgs)
    declared = {(m.device, x.alias): x.datatype for m in msgs if m.verb in ("NBIRTH", "DBIRTH")
                for x in m.payload.metrics if x.HasField("alias")}
    checked = 0
    for ours, theirs in zip(msgs, decoded, strict=True):
        assert "error" not in theirs, theirs
        tp = theirs["payload"]
        assert int(tahu_value(tp["timestamp"])) == ours.payload.timestamp
        if ours.payload.HasField("seq"):
            assert int(tahu_value(tp["seq"])) == ours.payload.seq
        assert len(tp["metrics"]) == len(ours.payload.metrics)
        for a, b in zip(ours.payload.metrics, tp["metrics"], strict=True):
            if a.name:
                assert b["name"] == a.name
            if a.HasField("alias"):
                assert int(tahu_value(b["alias"])) == a.alias
            if not a.is_null and a.WhichOneof("value"):
                dtype = a.datatype or declared[(ours.device, a.alias)]
                assert b["type"] == DataType(dtype).name.title().replace("Uint", "UInt"), b
                assert tahu_value(b["value"]) == value_of(a, dtype), (ours.topic, a, b)
                checked += 1
    assert checked > 200


async def test_rebirth_commands_and_writes(broker: MosquittoBroker, tmp_path: Path) -> None:
    host = Host(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, host.running():
        async with Agent(sp_config(sim, broker, tmp_path)) as agent:
            await host.until(lambda: host.of("DDATA"))
            first = host.of("NBIRTH")[0]
            await host.command("NCMD", [{"name": "Node Control/Rebirth",
                                         "type": DataType.BOOLEAN, "value": True}])
            await host.until(lambda: len(host.of("NBIRTH")) == 2)
            again = host.of("NBIRTH")[1]
            assert value_of(again.metric("bdSeq")) == value_of(first.metric("bdSeq"))
            await host.until(lambda: len(host.of("DBIRTH", "lamp-3")) == 2)

            # a command by its metric, JSON arguments, answered in `Command Response`
            await host.command("NCMD", [{"name": "Commands/set_override",
                                         "type": DataType.STRING,
                                         "value": json.dumps({"group": "main-street",
                                                              "level": 35,
                                                              "duration_s": 600})}])
            [ok] = await host.until(lambda: [r for r in host.responses()
                                             if r["cmd"] == "set_override"])
            assert ok["ok"], ok
            assert agent.lighting is not None
            await agent.lighting.step()
            assert sim.devices["lamp-1"].peek("dim_level") == 35
            # by alias (as hosts send them), the lighting group's own metric
            alias = again.metric("Lighting/main-street/Override Level").alias
            await host.command("NCMD", [{"alias": alias, "type": DataType.INT32,
                                         "value": 60}])
            await host.until(lambda: len([r for r in host.responses()
                                          if r["cmd"] == "set_override"]) == 2)
            await agent.lighting.step()
            assert sim.devices["lamp-1"].peek("dim_level") == 60
            await host.command("NCMD", [{"name": "Commands/reboot", "type": DataType.STRING,
                                         "value": "{}"}])
            [bad] = await host.until(lambda: [r for r in host.responses()
                                              if r["cmd"] == "reboot"])
            assert bad["error"]["code"] == "unknown_command"

            # DCMD: a writable point, by its DBIRTH alias
            dim = host.of("DBIRTH", "lamp-2")[-1].metric("dim_level").alias
            await host.command("DCMD", [{"alias": dim, "type": DataType.UINT16, "value": 44}],
                               device="lamp-2")
            await host.until(lambda: sim.devices["lamp-2"].peek("dim_level") == 44 or None)
            power = host.of("DBIRTH", "lamp-2")[-1].metric("lamp_power").alias
            await host.command("DCMD", [{"alias": power, "type": DataType.UINT16,
                                         "value": 1}], device="lamp-2")
            [nw] = await host.until(lambda: [r for r in host.responses()
                                             if r.get("error", {}).get("code") == "not_found"])
            assert "lamp-2" in nw["error"]["message"]
            # garbage on NCMD: answered, the node carries on
            assert host.client is not None
            await host.client.publish(NODE.format(verb="NCMD"), b"\xff\x00garbage", qos=1)
            await host.until(lambda: [r for r in host.responses()
                                      if r.get("error", {}).get("code") == "malformed"])
            n = len(host.of("DDATA"))
            await host.until(lambda: len(host.of("DDATA")) > n + 2)
    check_session(host.messages)


async def test_dead_device_outage_and_historical_replay(broker: MosquittoBroker,
                                                        tmp_path: Path) -> None:
    host = Host(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, host.running():
        cfg = sp_config(sim, broker, tmp_path, historical_after=1.0, bus_timeout=0.1)
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await host.until(lambda: host.of("DDATA", "lamp-2"))
            sim.devices["lamp-2"].fault = Fault.silent()
            await host.until(lambda: host.of("DDEATH", "lamp-2"), within=20)
            sim.devices["lamp-2"].fault = Fault()
            await host.until(lambda: len(host.of("DBIRTH", "lamp-2")) == 2, within=40)

            bdseq = value_of(host.of("NBIRTH")[0].metric("bdSeq"))
            await broker.stop()
            await asyncio.sleep(3)
            await broker.start()
            await asyncio.wait_for(agent.link.connected.wait(), 15)
            await host.until(lambda: len(host.of("NBIRTH")) == 2)
            second = host.of("NBIRTH")[1]
            assert value_of(second.metric("bdSeq")) == (bdseq + 1) % 256
            start = host.messages.index(second)
            await host.until(lambda: any(x.is_historical for m in host.messages[start:]
                                         if m.verb == "DDATA" for x in m.payload.metrics))
            n = len(host.of("DDATA", "lamp-3"))
            await host.until(lambda: len(host.of("DDATA", "lamp-3")) > n + 5)
    # the broker's will for the dropped session, then the new session: each checked apart
    sessions: list[list[Msg]] = [[]]
    for m in host.messages:
        if m.verb == "NBIRTH" and sessions[-1]:
            sessions.append([])
        sessions[-1].append(m)
    for s in sessions:
        check_session(s, late_ok=True)
    # lamp-3's readings span the outage with no hole wider than a few polls
    alias = host.of("DBIRTH", "lamp-3")[0].metric("dim_level").alias
    stamps = sorted({x.timestamp for m in host.of("DDATA", "lamp-3") for x in m.payload.metrics
                     if x.alias == alias})
    assert max(b - a for a, b in itertools.pairwise(stamps)) < 1500


async def test_primary_host_holds_the_data_until_it_is_online(broker: MosquittoBroker,
                                                              tmp_path: Path) -> None:
    host = Host(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, host.running():
        async with Agent(sp_config(sim, broker, tmp_path, primary_host="scada-1")) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            await asyncio.sleep(2)
            assert host.messages == []                # nothing before the host is online
            assert agent.outbox is not None and agent.outbox.counts.batches > 2
            assert host.client is not None
            t0 = int(time.time() * 1000)
            await host.client.publish("spBv1.0/STATE/scada-1", json.dumps(
                {"online": True, "timestamp": t0}).encode(), qos=1, retain=True)
            await host.until(lambda: host.of("NBIRTH"))
            await host.until(lambda: len(host.of("DDATA", "lamp-3")) > 3)
            # the held backlog arrived after the births
            assert host.messages[0].verb == "NBIRTH"
            # an old session's offline message is ignored; a current one ends the session
            await host.client.publish("spBv1.0/STATE/scada-1", json.dumps(
                {"online": False, "timestamp": t0 - 5000}).encode(), qos=1, retain=True)
            await asyncio.sleep(1)
            assert not host.of("NDEATH")
            await host.client.publish("spBv1.0/STATE/scada-1", json.dumps(
                {"online": False, "timestamp": t0 + 1}).encode(), qos=1, retain=True)
            await host.until(lambda: host.of("NDEATH"))
            n = len(host.messages)
            await asyncio.sleep(2)
            assert len(host.of("NBIRTH")) == 1 and len(host.messages) == n
            await host.client.publish("spBv1.0/STATE/scada-1", json.dumps(
                {"online": True, "timestamp": t0 + 2}).encode(), qos=1, retain=True)
            await host.until(lambda: len(host.of("NBIRTH")) == 2)
            await host.until(lambda: host.messages[-1].verb == "DDATA")


async def test_kill_9_the_will_then_the_next_bdseq(broker: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    host = Host(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, host.running():
        cfg = sp_config(sim, broker, tmp_path)
        cfg_file = tmp_path / "gw.yaml"
        raw = cfg.model_dump(mode="json", exclude={"source"})
        raw["mqtt"]["keepalive"] = 5                   # the broker sees it dead in ~7 s
        cfg_file.write_text(yaml.safe_dump(raw))
        proc = run_agent(cfg_file)
        try:
            await host.until(lambda: host.of("DDATA"), within=20)
            bdseq = value_of(host.of("NBIRTH")[0].metric("bdSeq"))
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            [will] = await host.until(lambda: host.of("NDEATH"), within=20)
            assert value_of(will.metric("bdSeq")) == bdseq     # the will of that session
            proc = run_agent(cfg_file)
            await host.until(lambda: len(host.of("NBIRTH")) == 2, within=20)
            assert value_of(host.of("NBIRTH")[1].metric("bdSeq")) == (bdseq + 1) % 256
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0, (tmp_path / "agent.log").read_text()
