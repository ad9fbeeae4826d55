"""The MQTT link: one connection to the broker, kept up by its own task.

aiomqtt does not reconnect by itself. The link task runs the loop explicitly::

    DISCONNECTED --connect--> CONNECTED --error/broker gone--> BACKOFF --delay--> DISCONNECTED
                   └──refused: bad credentials, not authorised, bad certificate──> REFUSED
                                              (a long delay, then DISCONNECTED)

Each attempt uses a fresh client (no session state hidden in paho), tries the configured broker
URLs in turn, and waits a jittered, capped, exponential delay between failures, so that a
district of gateways coming back from a power cut does not reconnect in lockstep. The first
attempt after start is jittered too. A refusal that retrying cannot cure is a state of its own,
reported once (``on_refused``) and retried only every few minutes, never hammered.
`publish()` returns only when the broker acknowledged the message (PUBACK for QoS 1), which is
what the store waits for before deleting anything.

Incoming messages (commands) are each handled in a task of their own, at most
``max_handlers`` at a time: a slow command (a silent device) never holds up the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from drivers.backoff import Backoff
from gateway.config import MqttCfg
from gateway.errors import ConfigError, LinkError

log = logging.getLogger("edgegw.link")

OnConnect = Callable[["MqttLink"], Awaitable[None]]
OnMessage = Callable[[str, bytes], Awaitable[None]]
OnRefused = Callable[[str, str], None]          # (url, reason)

# CONNACK refusals that a retry cannot cure: MQTT 3.1.1 return codes, and the MQTT 5 reason
# codes paho 2 reports them as (unsupported protocol, bad client id, bad credentials, not
# authorised, banned, bad authentication method)
_PERMANENT_RC = frozenset({1, 2, 4, 5, 132, 133, 134, 135, 138, 140})


class LinkState(Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    REFUSED = "refused"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


def check_secret_file(path: str | Path, *, what: str) -> Path:
    """A key must exist and be readable by its owner only (0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise ConfigError(str(p), [("", f"{what}: cannot read: {err.strerror}")]) from err
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(p), [("", (
            f"{what} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {p}"))])
    return p


def tls_context(cfg: MqttCfg) -> ssl.SSLContext | None:
    """Certificate checks always on; a client certificate when configured."""
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls.ca) if cfg.tls.ca else (
        ssl.create_default_context())
    if cfg.tls.cert or cfg.tls.key:
        if not (cfg.tls.cert and cfg.tls.key):
            raise ConfigError("mqtt.tls", [("mqtt.tls", "give both `cert` and `key`")])
        key = check_secret_file(cfg.tls.key, what="mqtt.tls.key")
        ctx.load_cert_chain(cfg.tls.cert, str(key))
    return ctx


def _password(cfg: MqttCfg) -> str | None:
    if not cfg.password_file:
        return None
    p = check_secret_file(cfg.password_file, what="mqtt.password_file")
    return p.read_text().strip()


class MqttLink:
    """Keeps one MQTT connection up; publish waits for the broker's acknowledgement."""

    def __init__(
        self,
        cfg: MqttCfg,
        *,
        client_id: str,
        will: Will | Callable[[], Will | None] | None = None,
        subscriptions: list[str] | None = None,
        on_connect: OnConnect | None = None,
        on_message: OnMessage | None = None,
        on_refused: OnRefused | None = None,
        first_attempt_jitter: float = 0.0,
        max_handlers: int = 16,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.will = will                       # a Will, or asked for one at each attempt
        self._will: Will | None = None          # the current connection's
        self.subscriptions = list(subscriptions or [])
        self._on_connect = on_connect
        self._on_message = on_message
        self._on_refused = on_refused
        self._first_jitter = first_attempt_jitter
        self._slots = asyncio.Semaphore(max(1, max_handlers))
        self._handlers: set[asyncio.Task[None]] = set()
        self.refusals = 0
        self._progress: Callable[[], None] = lambda: None
        self.state = LinkState.DISCONNECTED
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.url_index = 0
        self.last_error: str | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._tls = tls_context(cfg)
        self._password = _password(cfg)
        self._closed = False
        self._lost = asyncio.Event()

    @property
    def url(self) -> str:
        return self.cfg.urls[self.url_index % len(self.cfg.urls)]

    async def __aenter__(self) -> MqttLink:
        self._task = asyncio.create_task(self.serve(), name="mqtt-link")
        return self

    def set_progress(self, beat: Callable[[], None]) -> None:
        self._progress = beat

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, *, goodbye: bytes | None = None) -> None:
        """Disconnect; with `goodbye`, first publish it on the will topic (a clean offline)."""
        if self._closed:
            return
        will = self._will
        if goodbye is not None and will is not None and self.connected.is_set():
            with contextlib.suppress(LinkError, TimeoutError):
                await asyncio.wait_for(self.publish(will.topic, goodbye, retain=will.retain),
                                       2.0)
        self._closed = True
        self.state = LinkState.CLOSED
        self._lost.set()
        handlers = list(self._handlers)
        for h in handlers:
            h.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=2.0)
        if self._task is not None:
            # a cancellation can be swallowed inside aiomqtt/paho (Python 3.11's wait_for):
            # waking the serve loop as well makes it see `_closed` and end by itself
            self._lost.set()
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=5.0)
            if not done:
                log.warning("mqtt: the link task did not stop within 5 s; leaving it")
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.warning("mqtt: link task ended with %r", self._task.exception())
        self.connected.clear()

    def reconnect(self, reason: str = "asked to reconnect") -> None:
        """Drop the connection now; the link starts over (with the next URL when several
        are configured), after the usual short delay."""
        if self.connected.is_set():
            log.info("mqtt: %s", reason)
            self._lost.set()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish and wait for PUBACK; LinkError if the link is down or drops meanwhile."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkError("mqtt: not connected")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain,
                                 timeout=self.cfg.connect_timeout)
        except aiomqtt.MqttError as err:
            self._lost.set()
            raise LinkError(f"mqtt {self.url}: publish to {topic} failed: {err}") from err

    def _make_client(self, url: str) -> aiomqtt.Client:
        u = urlparse(url)
        host = u.hostname or "127.0.0.1"
        port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        tls = self._tls if u.scheme == "mqtts" else None
        if u.scheme == "mqtts" and tls is None:
            tls = ssl.create_default_context()
        w = self.will() if callable(self.will) else self.will
        self._will = w
        will = None
        if w is not None:
            will = aiomqtt.Will(w.topic, w.payload, qos=1, retain=w.retain)
        client = aiomqtt.Client(
            host, port, identifier=self.client_id, username=self.cfg.username,
            password=self._password, will=will, clean_session=True,
            keepalive=self.cfg.keepalive, timeout=self.cfg.connect_timeout,
            max_inflight_messages=self.cfg.max_inflight, tls_context=tls,
            protocol=aiomqtt.ProtocolVersion.V311,
            logger=logging.getLogger("edgegw.link.paho"),
            # without it Nagle meets delayed ACKs: ~44 ms per QoS 1 exchange
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # the uplink keeps up to max_inflight publishes pending on purpose: no warning for it
        client.pending_calls_threshold = self.cfg.max_inflight + 10
        return client

    async def serve(self) -> None:
        """Keep the connection up until :meth:`close` (or cancellation)."""
        backoff = Backoff(first=self.cfg.reconnect_min,
                          cap=max(self.cfg.reconnect_min, self.cfg.reconnect_max))
        # a refusal is retried far less often: each attempt is logged by the broker too
        refused_backoff = Backoff(first=max(30.0, self.cfg.reconnect_max),
                                  cap=max(600.0, self.cfg.reconnect_max))
        failures = 0
        if self._first_jitter > 0:
            await asyncio.sleep(random.uniform(0, self._first_jitter))
        while not self._closed:
            self._progress()
            url = self.url
            self.state = LinkState.CONNECTING
            client = self._make_client(url)
            try:
                async with client:
                    self._client = client
                    self._lost.clear()
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.state = LinkState.CONNECTED
                    if failures or self.reconnects:
                        log.info("mqtt: connected to %s", url)
                    else:
                        log.info("mqtt: connected to %s as %s", url, self.client_id)
                    failures = 0
                    backoff.reset()
                    refused_backoff.reset()
                    self.last_error = None
                    self.connected.set()
                    if self._on_connect is not None:
                        await self._on_connect(self)
                    await self._serve(client)
            except aiomqtt.MqttError as err:
                self.last_error = str(err)
                if self.state is LinkState.CONNECTED:
                    log.warning("mqtt: connection to %s lost: %s", url, err)
                elif _permanent(err):
                    self.state = LinkState.REFUSED
                    self.refusals += 1
                    log.error("mqtt: %s refused this gateway: %s (check the credentials, the "
                              "certificate and the broker's ACL; retrying in minutes)", url, err)
                    if self._on_refused is not None:
                        self._on_refused(url, str(err))
                elif failures == 0:
                    log.warning("mqtt: cannot connect to %s: %s", url, err)
            except LinkError as err:
                self.last_error = str(err)
                log.warning("%s", err)
            finally:
                was_connected = self.state is LinkState.CONNECTED
                self.connected.clear()
                self._client = None
            if self._closed:
                break
            if was_connected:
                self.reconnects += 1
            failures += 1
            if len(self.cfg.urls) > 1:
                self.url_index += 1
            if self.state is LinkState.REFUSED:
                delay = refused_backoff.next()
            else:
                self.state = LinkState.BACKOFF
                delay = backoff.next()
            await asyncio.sleep(delay)
        self.state = LinkState.CLOSED

    async def _handle(self, topic: str, payload: bytes) -> None:
        assert self._on_message is not None
        try:
            await self._on_message(topic, payload)
        except asyncio.CancelledError:
            raise
        except Exception:   # a handler bug must not take the link down
            log.exception("mqtt: handler for %s failed", topic)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._slots.release()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Deliver incoming messages until the connection drops."""
        messages = client.messages
        lost = asyncio.create_task(self._lost.wait(), name="mqtt-link-lost")
        nxt: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                self._progress()
                nxt = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait({nxt, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    if self._closed:
                        return               # close() woke us: leave quietly
                    raise LinkError(f"mqtt {self.url}: link lost while publishing")
                msg = nxt.result()
                if self._on_message is not None:
                    payload = msg.payload if isinstance(msg.payload, bytes) else (
                        str(msg.payload).encode())
                    # waits only when max_handlers commands are running already
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(str(msg.topic), payload),
                                               name=f"mqtt-handler-{msg.topic}")
                    self._handlers.add(task)
                    task.add_done_callback(self._handler_done)
        finally:
            # bounded: the helpers' own cancellation may be swallowed in aiomqtt
            helpers: list[asyncio.Future[Any]] = [lost] if nxt is None else [lost, nxt]
            pending = [f for f in helpers if not f.done()]
            for f in pending:
                f.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for f in helpers:
                if f.done() and not f.cancelled():
                    f.exception()        # retrieved: no "exception never retrieved" noise



def _permanent(err: aiomqtt.MqttError) -> bool:
    """A refusal that retrying cannot cure (credentials, authorisation, certificate)."""
    rc = getattr(err, "rc", None)
    value = getattr(rc, "value", rc)
    if isinstance(value, int) and value in _PERMANENT_RC:
        return True
    text = str(err).lower()
    return "certificate verify failed" in text or "not authori" in text
