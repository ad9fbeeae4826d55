"""The MQTT link against a real Mosquitto: PUBACK before success, reconnect after a restart,
the will on an abrupt loss, several URLs tried in turn, key permissions checked."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import MqttCfg, TlsCfg
from gateway.errors import ConfigError, LinkError
from gateway.link import MqttLink, Will, check_secret_file
from simulators.broker import MosquittoBroker, free_port


def cfg(url: str | list[str]) -> MqttCfg:
    return MqttCfg(url=url, reconnect_min=0.05, reconnect_max=0.3, connect_timeout=2)


async def collect(url: str, topic: str, n: int, ready: asyncio.Event) -> list[bytes]:
    host, port = url.removeprefix("mqtt://").split(":")
    out: list[bytes] = []
    async with aiomqtt.Client(host, int(port)) as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            out.append(m.payload)
            if len(out) >= n:
                return out
    return out


async def test_publish_returns_after_the_broker_has_it(broker: MosquittoBroker,
                                                       unique_prefix: str) -> None:
    ready = asyncio.Event()
    listener = asyncio.create_task(collect(broker.url, f"{unique_prefix}/x", 3, ready))
    await ready.wait()
    async with MqttLink(cfg(broker.url), client_id="gw-a") as link:
        await asyncio.wait_for(link.connected.wait(), 5)
        for i in range(3):
            await link.publish(f"{unique_prefix}/x", f"m{i}".encode())
    assert await asyncio.wait_for(listener, 5) == [b"m0", b"m1", b"m2"]


async def test_publish_while_down_raises_and_link_recovers(broker: MosquittoBroker,
                                                           unique_prefix: str) -> None:
    connects = 0

    async def on_connect(link: MqttLink) -> None:
        nonlocal connects
        connects += 1

    async with MqttLink(cfg(broker.url), client_id="gw-b", on_connect=on_connect) as link:
        await asyncio.wait_for(link.connected.wait(), 5)
        await broker.stop()
        for _ in range(100):
            if not link.connected.is_set():
                break
            await asyncio.sleep(0.05)
        with pytest.raises(LinkError):
            await link.publish(f"{unique_prefix}/x", b"lost?")
        await broker.start()
        await asyncio.wait_for(link.connected.wait(), 10)
        await link.publish(f"{unique_prefix}/x", b"after restart")
        assert connects == 2
        assert link.reconnects == 1


async def test_will_is_published_when_the_link_dies(broker: MosquittoBroker,
                                                    unique_prefix: str) -> None:
    topic = f"{unique_prefix}/state"
    ready = asyncio.Event()
    listener = asyncio.create_task(collect(broker.url, topic, 1, ready))
    await ready.wait()
    link = MqttLink(MqttCfg(url=broker.url, keepalive=5), client_id="gw-c",
                    will=Will(topic, b'{"online": false}'))
    await link.__aenter__()
    await asyncio.wait_for(link.connected.wait(), 5)
    # an abrupt death: the socket closes without DISCONNECT, so the broker sends the will
    assert link._client is not None
    sock = link._client._client.socket()   # paho's socket
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)
    assert await asyncio.wait_for(listener, 10) == [b'{"online": false}']
    await link.close()


async def test_second_url_is_used_when_the_first_is_dead(broker: MosquittoBroker) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    async with MqttLink(cfg([dead, broker.url]), client_id="gw-d") as link:
        await asyncio.wait_for(link.connected.wait(), 10)
        assert link.url == broker.url


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "gw.key"
    key.write_text("secret")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600"):
        check_secret_file(key, what="mqtt.tls.key")
    os.chmod(key, 0o600)
    assert check_secret_file(key, what="mqtt.tls.key") == key
    with pytest.raises(ConfigError, match="readable by others"):
        os.chmod(key, 0o640)
        MqttLink(MqttCfg(url="mqtts://127.0.0.1:8883",
                         tls=TlsCfg(cert=str(tmp_path / "c.pem"), key=str(key))),
                 client_id="x")
