"""The platform side over MQTT: listen to gateways and send them commands.

What `edgegw platform listen` and `edgegw platform send` run; importable by a platform's own
tools. `listen` with a client id keeps a persistent QoS 1 session (clean_session false), so the
broker queues what arrives while the listener is away, across its reconnects and a broker
restart with persistence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from drivers.backoff import jittered
from gateway.codec import CommandRequest, Encoding, Topics, encode_request
from gateway.platform.decoder import Decoder, subscriptions

log = logging.getLogger("edgegw.platform")

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the platform connects: an mqtt:// or mqtts:// URL and optional TLS files."""

    url: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def client(self, *, identifier: str | None = None, clean_session: bool | None = None,
               timeout: float = 10.0) -> aiomqtt.Client:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"{self.url!r} is not an mqtt://host:port or mqtts://host:port URL")
        tls = None
        if u.scheme == "mqtts":
            tls = ssl.create_default_context(cafile=self.ca) if self.ca else (
                ssl.create_default_context())
            if self.cert:
                tls.load_cert_chain(self.cert, self.key)
        return aiomqtt.Client(u.hostname, u.port or (8883 if tls else 1883),
                              identifier=identifier, clean_session=clean_session,
                              tls_context=tls, timeout=timeout,
                              protocol=aiomqtt.ProtocolVersion.V311,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))


async def listen(broker: Broker, *, prefix: str = "city/v1", client_id: str | None = None,
                 share: str | None = None, on_ready: Callable[[], None] | None = None,
                 reconnect: bool = True) -> AsyncIterator[Message]:
    """Every message of every gateway under `prefix`, decoded (DESIGN.md 4.4), forever.

    Reconnects by itself (jittered backoff). With `client_id` the session is persistent.
    """
    async for msg, _size in listen_sized(broker, prefix=prefix, client_id=client_id,
                                         share=share, on_ready=on_ready, reconnect=reconnect):
        yield msg


async def listen_sized(broker: Broker, *, prefix: str = "city/v1",
                       client_id: str | None = None, share: str | None = None,
                       on_ready: Callable[[], None] | None = None,
                       reconnect: bool = True) -> AsyncIterator[tuple[Message, int]]:
    """Like :func:`listen`, with each message's size on the wire (bytes of payload)."""
    decoder = Decoder(prefix=prefix)
    async for topic, payload in listen_raw(broker, prefix=prefix, client_id=client_id,
                                           share=share, on_ready=on_ready,
                                           reconnect=reconnect):
        for out in decoder.feed(topic, payload):
            yield out, len(payload)


async def listen_raw(broker: Broker, *, prefix: str = "city/v1",
                     client_id: str | None = None, share: str | None = None,
                     on_ready: Callable[[], None] | None = None,
                     reconnect: bool = True) -> AsyncIterator[tuple[str, bytes]]:
    """Every message under `prefix` as it came: (topic, payload). Reconnects by itself."""
    delay = 0.2
    ready_sent = False
    while True:
        client = broker.client(identifier=client_id,
                               clean_session=not client_id)
        try:
            async with client:
                for f in subscriptions(prefix, share=share):
                    await client.subscribe(f, qos=1)
                delay = 0.2
                if on_ready is not None and not ready_sent:
                    ready_sent = True
                    on_ready()
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else (
                        str(m.payload or "").encode())
                    yield str(m.topic), payload
        except aiomqtt.MqttError as err:
            if not reconnect:
                raise
            log.warning("listen: %s; reconnecting", err)
            await asyncio.sleep(jittered(delay))
            delay = min(delay * 2, 10.0)


def capture_line(topic: str, payload: bytes) -> str:
    """One line of a raw capture, as `edgegw platform decode` reads it."""
    return json.dumps({"topic": topic, "payload_b64": base64.b64encode(payload).decode()},
                      separators=(",", ":"))


def new_request_id() -> str:
    return "c-" + secrets.token_hex(6)


async def send(broker: Broker, request: CommandRequest, *, prefix: str = "city/v1",
               gateway: str | None = None, group: str | None = None,
               wait: float = 10.0, expect: int | None = None,
               encoding: Encoding = Encoding.JSON,
               payload: bytes | None = None) -> list[Message]:
    """Publish a command and collect the responses with its id.

    To one gateway: returns after its response or `wait` seconds. To a group: collects until
    `expect` responses arrived or `wait` seconds went by. `payload` overrides the encoded
    request (for signed requests).
    """
    if (gateway is None) == (group is None):
        raise ValueError("give exactly one of gateway or group")
    decoder = Decoder(prefix=prefix)
    want = 1 if gateway is not None else expect
    res_topic = Topics(prefix, gateway).cmd_res if gateway else f"{prefix}/+/cmd/res"
    req_topic = (Topics(prefix, gateway).cmd_req if gateway
                 else Topics(prefix, "-").group_cmd_req(group or ""))
    out: list[Message] = []
    async with broker.client() as client:
        await client.subscribe(res_topic, qos=1)
        await client.publish(req_topic, payload or encode_request(request, encoding=encoding),
                             qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for m in client.messages:
                    raw = m.payload if isinstance(m.payload, bytes) else b""
                    msg = decoder.decode(str(m.topic), raw)
                    if msg.get("kind") == "response" and msg.get("id") == request.id:
                        out.append(msg)
                        if want is not None and len(out) >= want:
                            break
    return out
