"""The demo's fallback broker (amqtt, in-process) where Mosquitto is not installed."""

from __future__ import annotations

import asyncio

import aiomqtt

from gateway.config import MqttCfg
from gateway.link import MqttLink
from simulators.broker import EmbeddedBroker


async def test_the_agent_link_works_against_the_embedded_broker() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.url.startswith("mqtt://127.0.0.1:")
        got: list[bytes] = []
        ready = asyncio.Event()

        async def listen() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.subscribe("t/x", qos=1)
                ready.set()
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    got.append(m.payload)
                    if len(got) == 3:
                        return

        task = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 10)
        async with MqttLink(MqttCfg(url=broker.url), client_id="gw-e") as link:
            await asyncio.wait_for(link.connected.wait(), 10)
            for i in range(3):
                await link.publish("t/x", f"m{i}".encode())
        await asyncio.wait_for(task, 10)
        assert got == [b"m0", b"m1", b"m2"]
