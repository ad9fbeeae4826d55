"""The technician's page under test: the example street's simulators, an agent with the page
on a free loopback port (self-signed certificate made at start), two accounts, and an HTTPS
client that trusts exactly that certificate (no check switched off)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.runtime import Agent
from gateway.web.accounts import Role, set_account
from gateway.web.tls import tls_files
from simulators.runner import SimHandle, open_spec
from tests.helpers import gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
TECH, TECH_PW = "alice", "lamp-post-42!"
VIEWER, VIEWER_PW = "victor", "only-looking-7"
RULES: dict[str, Any] = {
    "failsafe": {"entry_delay_s": 0},
    "programs": {"night": {"steps": [{"at": "18:00", "level": 100}, {"at": "23:00", "level": 60},
                                     {"at": "06:00", "level": "off"}]}},
    "groups": [{"name": "street", "program": "night",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60},
                            {"device": "lamp-2", "point": "dim_level", "watts": 60}]}],
}


def clock_at(local: str) -> Callable[[], float]:
    from zoneinfo import ZoneInfo

    start = dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris"))
    t0 = time.time()
    return lambda: start.timestamp() + (time.time() - t0)


@dataclass
class Site:
    sim: SimHandle
    agent: Agent
    url: str
    ssl: ssl.SSLContext
    cert: Path


def accounts(path: Path) -> Path:
    set_account(path, TECH, Role.TECHNICIAN, TECH_PW)
    set_account(path, VIEWER, Role.VIEWER, VIEWER_PW)
    return path


@contextlib.asynccontextmanager
async def web_site(tmp_path: Path, *, web: dict[str, Any] | None = None,
                   broker_url: str = "mqtt://127.0.0.1:1", uplink: bool = False,
                   poll: float = 0.2) -> AsyncIterator[Site]:
    users = accounts(tmp_path / "web-users")
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = gateway_config(sim, broker_url=broker_url, store=tmp_path / "store.db",
                             poll=poll, extra={
                                 "gateway": {"id": "gw-web", "site": "rue-de-test",
                                             "location": PARIS, "has_rtc": True,
                                             "trust_ntp": False},
                                 "lighting": RULES,
                                 "web": {"listen": "127.0.0.1:0", "users": str(users),
                                         **(web or {})}})
        async with Agent(cfg, uplink=uplink, wall_clock=clock_at("2026-12-01T23:30")) as agent:
            assert agent.web is not None
            async with _until(lambda: bool(agent.web and agent.web.bound_ports())):
                pass
            port = agent.web.bound_ports()[0]
            cert, _key, _ = tls_files(cfg)
            ctx = ssl.create_default_context(cafile=str(cert))
            yield Site(sim, agent, f"https://localhost:{port}", ctx, cert)


@contextlib.asynccontextmanager
async def _until(predicate: Callable[[], bool], within: float = 10.0) -> AsyncIterator[None]:
    import asyncio

    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    yield


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)
