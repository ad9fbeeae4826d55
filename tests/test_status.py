"""One status for every reader (get_state, `edgegw status`, systemd's line, health telemetry),
one event catalogue (the enum and docs/protocol.md), and a broker that refuses the gateway."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from gateway.codec import CommandRequest
from gateway.control import ControlServer, fetch_status, status_line
from gateway.events import SEVERITY, EventType
from gateway.link import LinkState
from gateway.platform.client import Broker, send
from gateway.runtime import Agent
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec
from tests.helpers import gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
VOLATILE = {"now", "uptime_s"}


def _stable(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without what moves between two reads a moment apart."""
    out = {k: v for k, v in snap.items() if k not in VOLATILE}
    for key in ("devices", "buses", "commands", "components", "lighting", "store"):
        out.pop(key, None)
    out["device_names"] = sorted(snap.get("devices") or {})
    out["components"] = sorted(snap.get("components") or {})
    out["store_state"] = (snap.get("store") or {}).get("state")
    return out


async def test_get_state_edgegw_status_and_the_status_line_agree(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db")
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            await agent.wait_first_cycle()
            sock = tmp_path / "ctl" / "control.sock"
            async with ControlServer(sock, agent.state_snapshot):
                local = await asyncio.to_thread(fetch_status, sock)
            got = await send(Broker(broker.url), CommandRequest(id="s-1", cmd="get_state",
                                                                args={}), gateway="gw-t",
                             wait=5)
            remote = got[0]["result"]
            status = agent.status()
    assert _stable(local) == _stable(remote)
    assert local["schema"] == 1 and set(local) >= {"store", "components", "link", "backlog"}
    assert status.devices_total == len(local["devices"]) == local["devices_total"]
    line = status_line(local)
    assert line.startswith("mqtt connected · backlog ") and "FAULT" not in line
    assert f"devices {local['devices_online']}/{local['devices_total']} up" in line
    counters = status.health_counters()
    assert counters["store_backlog_points"] == status.backlog["points"]  # type: ignore[index]
    assert counters["mqtt_reconnects"] == local["link"]["reconnects"]
    assert counters["modbus_errors"] == sum(b["timeouts"] + b["exceptions"] + b["errors"]
                                            for b in local["buses"])
    json.dumps(local)


def test_the_event_catalogue_in_the_docs_is_the_enum() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc[doc.index("The events a gateway sends:"):doc.index("## 6. Commands")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented: dict[str, str] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([a-z_]+)`", cells[0])
        severities = [s.strip() for s in cells[-1].split("/")]
        for i, name in enumerate(names):
            documented[name] = severities[min(i, len(severities) - 1)]
    assert set(documented) == {t.value for t in EventType}
    for t in EventType:
        assert documented[t.value] == SEVERITY[t].value, t


async def test_a_broker_that_refuses_the_gateway_is_a_state_not_a_hammering(
        tmp_path: Path) -> None:
    async with MosquittoBroker(tmp_path / "broker", anonymous=False) as broker:
        cfg = gateway_config_no_devices(broker.url, tmp_path)
        agent = Agent(cfg)
        seen: list[str] = []
        agent.on_event(lambda e: seen.append(e.type))
        async with agent:
            assert agent.link is not None
            async with asyncio.timeout(10):
                while agent.link.state is not LinkState.REFUSED:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.sleep(3)                   # reconnect_min is 0.1 s in this config
            assert agent.link.refusals == 1          # retried in minutes, not in 0.1 s
            snap = agent.state_snapshot()
            assert snap["link"]["state"] == "refused"
            assert "BROKER REFUSES THE GATEWAY" in status_line(snap)
            assert seen.count("link_refused") == 1   # and it waits in the store


def gateway_config_no_devices(url: str, tmp: Path) -> Any:
    from gateway.config import parse_config

    return parse_config(json.dumps({
        "gateway": {"id": "gw-refused"},
        "mqtt": {"url": url, "reconnect_min": 0.1, "reconnect_max": 0.5,
                 "connect_timeout": 2},
        "store": {"path": str(tmp / "s.db")},
        "service": {"connect_jitter": 0}}), source="test")


