"""Test helpers: gateway configs pointed at simulators and a private broker, a platform
listener that collects decoded messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Config, parse_config
from gateway.platform.client import Broker, listen
from simulators.runner import SimHandle


def gateway_config(sim: SimHandle, *, broker_url: str, store: Path, gateway_id: str = "gw-t",
                   prefix: str = "city/v1", poll: float = 0.2, batch_interval: float = 0.2,
                   extra: dict[str, Any] | None = None) -> Config:
    section = sim.gateway_section(poll=poll)
    raw: dict[str, Any] = {
        "gateway": {"id": gateway_id, "site": "test", "groups": ["district-t"]},
        "mqtt": {"url": broker_url, "topic_prefix": prefix, "reconnect_min": 0.1,
                 "reconnect_max": 1.0, "connect_timeout": 3},
        "telemetry": {"batch_interval": batch_interval},
        "store": {"path": str(store)},
        "service": {"control_socket": str(store.parent / "control.sock"), "connect_jitter": 0},
        **section,
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(yaml.safe_dump(raw), source="test-config")


class Platform:
    """A platform consumer in the background: every decoded message, in arrival order."""

    def __init__(self, url: str, *, prefix: str = "city/v1", client_id: str | None = None,
                 ca: str | None = None, cert: str | None = None, key: str | None = None
                 ) -> None:
        self.broker = Broker(url, ca=ca, cert=cert, key=key)
        self.prefix = prefix
        self.client_id = client_id
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Platform:
        self._task = asyncio.create_task(self._run(), name="platform-listener")
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async for msg in listen(self.broker, prefix=self.prefix, client_id=self.client_id,
                                on_ready=self.ready.set):
            self.messages.append(msg)
            self.changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["kind"] == kind]

    def seqs(self) -> list[int]:
        return [int(m["seq"]) for m in self.of("telemetry")]

    async def until(self, predicate: Any, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield None
