"""``mqtt.format: thingsboard``: the agent speaks ThingsBoard's gateway MQTT API to a real
Mosquitto, and a platform stand-in checks every message against the shapes ThingsBoard's
documentation gives (https://thingsboard.io/docs/reference/gateway-mqtt-api/), the values
against what the agent polled, and that RPCs and shared attributes reach the simulated devices.

ThingsBoard's own Python client (tb-mqtt-client) cannot be installed beside aiomqtt (it ships a
fork of paho under the same module name), so the shapes are checked from the documentation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.runtime import Agent
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


def tb_config(sim: SimHandle, broker: MosquittoBroker, tmp: Path, **mqtt: Any) -> Any:
    return gateway_config(sim, broker_url=broker.url, store=tmp / "store.db", gateway_id="gw-tb",
                          extra={"mqtt": {"format": "thingsboard", **mqtt},
                                 "gateway": {"id": "gw-tb", "location": PARIS,
                                             "has_rtc": True},
                                 "lighting": LIGHTING})


class TbPlatform:
    """ThingsBoard's side of the connection: every message the gateway sends, decoded. A
    persistent session, reconnecting, so nothing is missed across a broker restart."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.messages: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TbPlatform]:
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
                async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="tb-platform",
                                          clean_session=False) as client:
                    self.client = client
                    await client.subscribe("v1/#", qos=1)
                    self.ready.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append((str(m.topic), json.loads(m.payload)))
                        self.changed.set()
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.2)

    def on(self, topic: str) -> list[Any]:
        return [obj for t, obj in self.messages if t == topic]

    async def until(self, predicate: Any, within: float = 15.0) -> Any:
        async with asyncio.timeout(within):
            while True:
                got = predicate()
                if got:
                    return got
                self.changed.clear()
                await self.changed.wait()

    async def publish(self, topic: str, obj: Any) -> None:
        assert self.client is not None
        await self.client.publish(topic, json.dumps(obj).encode(), qos=1)


# --- the documented shapes -------------------------------------------------------------------
def check_ts_values(entry: Any) -> None:
    assert isinstance(entry, dict) and set(entry) == {"ts", "values"}, entry
    assert isinstance(entry["ts"], int) and entry["ts"] > 1_500_000_000_000
    assert isinstance(entry["values"], dict) and entry["values"]
    for k, v in entry["values"].items():
        assert isinstance(k, str) and k
        assert isinstance(v, (int, float, str, bool)), (k, v)


def check_shape(topic: str, obj: Any) -> None:
    """What ThingsBoard's gateway API documents for each topic the gateway publishes."""
    if topic in ("v1/gateway/connect", "v1/gateway/disconnect"):
        assert isinstance(obj, dict) and isinstance(obj["device"], str)
        assert set(obj) <= {"device", "type"}
    elif topic == "v1/gateway/telemetry":
        assert isinstance(obj, dict) and obj
        for name, rows in obj.items():
            assert isinstance(name, str) and isinstance(rows, list) and rows
            for r in rows:
                check_ts_values(r)
    elif topic == "v1/gateway/attributes":
        assert isinstance(obj, dict) and obj
        if "device" in obj and "data" in obj:
            return                                   # the platform's own update, echoed
        for name, attrs in obj.items():
            assert isinstance(name, str) and isinstance(attrs, dict) and attrs
    elif topic == "v1/gateway/rpc":
        assert isinstance(obj, dict) and isinstance(obj["device"], str)
        if "data" in obj and "id" in obj:            # the gateway's reply
            assert isinstance(obj["data"], dict)
    elif topic == "v1/devices/me/telemetry":
        for e in obj if isinstance(obj, list) else [obj]:
            check_ts_values(e)
    elif topic == "v1/devices/me/attributes":
        assert isinstance(obj, dict) and obj
    elif topic.startswith("v1/devices/me/rpc/response/"):
        assert isinstance(obj, dict)
    elif topic.startswith("v1/devices/me/attributes/request/"):
        assert isinstance(obj, dict) and set(obj) <= {"clientKeys", "sharedKeys"}


def values_of(platform: TbPlatform, name: str, point: str) -> list[tuple[int, Any]]:
    return sorted((r["ts"], r["values"][point]) for obj in platform.on("v1/gateway/telemetry")
                  for r in obj.get(name, []) if point in r["values"])


# --- the tests -------------------------------------------------------------------------------
async def test_connect_telemetry_and_attributes_as_thingsboard_documents(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    platform = TbPlatform(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, platform.running():
        async with Agent(tb_config(sim, broker, tmp_path)) as agent:
            await platform.until(lambda: len(values_of(platform, "gw-tb.env-1",
                                                       "illuminance")) >= 5, within=30)
            await platform.until(lambda: platform.on("v1/devices/me/telemetry"), within=30)
            latest = {k: v for k, v in agent.latest.items()}
        # a clean stop says goodbye for each device
        await platform.until(lambda: len(platform.on("v1/gateway/disconnect")) == 6, within=30)
    for topic, obj in platform.messages:
        check_shape(topic, obj)
    names = {c["device"] for c in platform.on("v1/gateway/connect")}
    assert names == {f"gw-tb.{d}" for d in ("env-1", "water-1", "meter-1", "lamp-1", "lamp-2",
                                            "lamp-3")}
    types = {c["device"]: c["type"] for c in platform.on("v1/gateway/connect")}
    assert types["gw-tb.lamp-1"] == "led-driver" and types["gw-tb.env-1"] == "env-sensor"
    statics = platform.on("v1/gateway/attributes")[0]
    assert statics["gw-tb.lamp-3"]["edgegw_device"] == "lamp-3"
    assert "dim_level" in statics["gw-tb.lamp-3"]["writable"]
    assert statics["gw-tb.env-1"]["units"]["temperature"] == "degC"
    own = platform.on("v1/devices/me/attributes")[0]
    assert own["gateway"] == "gw-tb" and own["config_hash"]

    # each device's newest value is what the agent read last, at the same timestamp
    compared = 0
    for (device, point), last in latest.items():
        if device in ("gateway", "lighting") or last.quality != "good":
            continue
        sent = values_of(platform, f"gw-tb.{device}", point)
        at_ts = [v for ts, v in sent if ts == last.ts]
        if at_ts:
            assert at_ts[-1] == last.value, (device, point)
            compared += 1
    assert compared >= 10
    # the string point travels as text, the counters as numbers
    assert values_of(platform, "gw-tb.lamp-3", "serial_number")[-1][1] == "LD3-0042"
    # the gateway's own points: health on its own telemetry, the lighting group's level too
    own_keys = {k for e in platform.on("v1/devices/me/telemetry")
                for entry in (e if isinstance(e, list) else [e]) for k in entry["values"]}
    assert "lighting.main-street.level" in own_keys or "cpu_percent" in own_keys


async def test_rpc_and_shared_attributes_reach_the_devices(broker: MosquittoBroker,
                                                           tmp_path: Path) -> None:
    platform = TbPlatform(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, platform.running():
        async with Agent(tb_config(sim, broker, tmp_path)) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            await platform.until(lambda: platform.on("v1/gateway/connect"))

            # RPC to the gateway itself: an override, answered on the response topic
            await platform.publish("v1/devices/me/rpc/request/41", {
                "method": "set_override",
                "params": {"group": "main-street", "level": 35, "duration_s": 600,
                           "priority": 50}})
            [ok] = await platform.until(lambda: platform.on("v1/devices/me/rpc/response/41"))
            assert "error" not in ok, ok
            assert agent.lighting is not None
            await agent.lighting.step()
            assert sim.devices["lamp-1"].peek("dim_level") == 35
            # the very same RPC again (ThingsBoard retries): answered, not run twice
            await platform.publish("v1/devices/me/rpc/request/41", {
                "method": "set_override",
                "params": {"group": "main-street", "level": 35, "duration_s": 600,
                           "priority": 50}})
            await platform.until(lambda: len(platform.on("v1/devices/me/rpc/response/41")) == 2)
            again = platform.on("v1/devices/me/rpc/response/41")[1]
            assert again == ok

            await platform.publish("v1/devices/me/rpc/request/42", {"method": "reboot",
                                                                    "params": {}})
            [bad] = await platform.until(lambda: platform.on("v1/devices/me/rpc/response/42"))
            assert bad["error"]["code"] == "unknown_command"

            # RPC to a device: our command names, the device filled in
            await platform.publish("v1/gateway/rpc", {
                "device": "gw-tb.lamp-2",
                "data": {"id": 7, "method": "write_point",
                         "params": {"point": "dim_level", "value": 42}}})
            reply = await platform.until(lambda: [r for r in platform.on("v1/gateway/rpc")
                                                  if r.get("id") == 7])
            assert reply[0]["device"] == "gw-tb.lamp-2" and "error" not in reply[0]["data"]
            assert sim.devices["lamp-2"].peek("dim_level") == 42
            await platform.publish("v1/gateway/rpc", {
                "device": "gw-tb.lamp-2",
                "data": {"id": 8, "method": "read_point", "params": {"point": "dim_level"}}})
            reply = await platform.until(lambda: [r for r in platform.on("v1/gateway/rpc")
                                                  if r.get("id") == 8])
            assert reply[0]["data"]["value"] == 42
            await platform.publish("v1/gateway/rpc", {
                "device": "gw-tb.nothing", "data": {"id": 9, "method": "read_point",
                                                    "params": {"point": "x"}}})
            reply = await platform.until(lambda: [r for r in platform.on("v1/gateway/rpc")
                                                  if r.get("id") == 9])
            assert reply[0]["data"]["error"]["code"] == "not_found"

            # a device's shared attribute named like a writable point writes it
            await platform.publish("v1/gateway/attributes", {"device": "gw-tb.lamp-3",
                                                             "data": {"dim_level": 12}})
            await platform.until(lambda: sim.devices["lamp-3"].peek("dim_level") == 12 or None)

            # the gateway's shared attribute lighting_rules: new rules, or a refusal
            better = json.loads(json.dumps(LIGHTING))
            better["programs"]["night"]["steps"][0]["level"] = 70
            await platform.publish("v1/devices/me/attributes", {"lighting_rules": better})
            status = await platform.until(lambda: [a["lighting_rules_status"] for a in
                                                   platform.on("v1/devices/me/attributes")
                                                   if "lighting_rules_status" in a])
            assert status[-1]["ok"] is True and status[-1]["version"]
            assert agent.lighting.rules_raw["programs"]["night"]["steps"][0]["level"] == 70
            broken = json.loads(json.dumps(LIGHTING))
            broken["groups"][0]["outputs"][0]["device"] = "lamp-77"
            await platform.publish("v1/devices/me/attributes", {"lighting_rules": broken})
            status = await platform.until(lambda: [a["lighting_rules_status"] for a in
                                                   platform.on("v1/devices/me/attributes")
                                                   if "lighting_rules_status" in a
                                                   and not a["lighting_rules_status"]["ok"]])
            assert "lamp-77" in status[-1]["error"]["message"]
            assert agent.lighting.rules_raw["programs"]["night"]["steps"][0]["level"] == 70
    for topic, obj in platform.messages:
        check_shape(topic, obj)


async def test_nothing_lost_across_a_broker_outage(broker: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    platform = TbPlatform(broker)
    async with open_spec(SPEC, ephemeral=True) as sim, platform.running():
        async with Agent(tb_config(sim, broker, tmp_path)) as agent:
            assert agent.link is not None
            await platform.until(lambda: len(values_of(platform, "gw-tb.lamp-2",
                                                       "dim_level")) >= 3)
            await broker.stop()
            await asyncio.sleep(2.5)                 # polled and stored meanwhile
            assert agent.outbox is not None and agent.outbox.counts.batches > 3
            await broker.start()
            await asyncio.wait_for(agent.link.connected.wait(), 15)
            before = len(values_of(platform, "gw-tb.lamp-2", "dim_level"))
            await platform.until(lambda: len(values_of(platform, "gw-tb.lamp-2",
                                                       "dim_level")) >= before + 20)
    stamps = [ts for ts, _ in values_of(platform, "gw-tb.lamp-2", "dim_level")]
    # the outage's readings arrived after it, with no hole wider than a few polls
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 1500, gaps


def test_a_device_name_template_without_the_device_is_refused() -> None:
    base = "gateway: {id: gw1}\nmqtt: {format: thingsboard, thingsboard: {device_name: '%s'}}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(base % "{gateway}-lamp", source="tb.yaml")
    assert "mqtt.thingsboard.device_name" in str(e.value) and "{device}" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(base % "{site}.{device}", source="tb.yaml")
    assert "placeholders" in str(e.value)
    ok = parse_config(base % "{device}@{gateway}", source="tb.yaml")
    assert ok.mqtt.thingsboard is not None and ok.mqtt.format == "thingsboard"
