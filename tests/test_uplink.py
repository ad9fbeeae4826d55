"""The uplink end to end: simulated Modbus devices -> agent -> private Mosquitto -> platform
decoder; outages, kill -9, a full store, TLS with client certificates."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drivers.sample import Quality, Sample
from gateway.runtime import Agent
from gateway.store import Store
from simulators.broker import MosquittoBroker
from simulators.runner import open_spec
from tests.helpers import Platform, gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"


def unique_seqs(seqs: list[int]) -> list[int]:
    """First arrival of each seq, in arrival order (QoS 1 may repeat a batch)."""
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


async def test_samples_reach_the_platform_decoded(broker: MosquittoBroker,
                                                  tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim, Platform(broker.url) as platform:
        for d in sim.devices.values():     # pin values: the platform must see exactly these
            d.refresh(force=True)
            for name in d.points:
                d.set(name, d.peek(name))
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db")
        async with Agent(cfg) as agent:
            await platform.until(lambda: len(platform.of("telemetry")) >= 3)
            assert agent.pipeline is not None
        await platform.until(lambda: any(m["kind"] == "state" and not m["online"]
                                         for m in platform.messages))
    state = platform.of("state")[0]
    assert state["online"] is True and state["gateway"] == "gw-t"
    assert state["detail"]["catalogue"]["points"]
    events = [m["type"] for m in platform.of("event")]
    assert events[0] == "agent_start" and "agent_stop" in events
    seen: dict[tuple[str, str], object] = {}
    for batch in platform.of("telemetry"):
        for p in batch["points"]:
            seen[(p["device"], p["point"])] = p["value"]
            assert isinstance(p["ts"], int)
    for name, dev in sim.devices.items():
        for point in dev.points:
            assert seen[(name, point)] == dev.peek(point), (name, point)
    seqs = platform.seqs()
    assert seqs == list(range(1, len(seqs) + 1))
    assert platform.messages[-1] == {"kind": "state", "gateway": "gw-t", "online": False,
                                     "detail": {}}


async def test_a_point_first_seen_while_running_joins_the_catalogue(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """A sample of a point the catalogue lacks (a reader's point not in the config): its batch
    is encoded after the point is added, and the platform decodes it with the new state."""
    async with open_spec(SPEC, ephemeral=True) as sim, Platform(broker.url) as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db")
        async with Agent(cfg) as agent:
            await platform.until(lambda: len(platform.of("telemetry")) >= 1)
            before = agent.outbox.catalogue
            assert before is not None and before.id_of("probe-9", "depth") is None
            agent._samples([Sample("probe-9", "depth", int(time.time() * 1000), 417)])
            await platform.until(lambda: any(
                (p["device"], p["point"], p["value"]) == ("probe-9", "depth", 417)
                for b in platform.of("telemetry") for p in b["points"]))
            after = agent.outbox.catalogue
            assert after is not None and after.version == before.version + 1
            assert after.id_of("probe-9", "depth") is not None
    assert any(pt[:2] == ["probe-9", "depth"] for m in platform.of("state")
               for pt in m["detail"].get("catalogue", {}).get("points", []))


async def test_broker_outage_loses_nothing_and_keeps_order(broker: MosquittoBroker,
                                                           tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="platform-outage") as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db", poll=0.2)
        async with Agent(cfg) as agent:
            assert agent.pipeline is not None and agent.link is not None
            await platform.until(lambda: len(platform.seqs()) >= 3)
            await broker.stop()
            await asyncio.sleep(20)                       # the 20 s outage
            stored_during = agent.outbox.counts.batches if agent.outbox else 0
            assert stored_during > 20                     # the backlog built up on disk
            await broker.start()
            await asyncio.wait_for(agent.link.connected.wait(), 15)
            await platform.until(lambda: len(platform.seqs()) > 0
                                 and max(platform.seqs()) >= agent.pipeline.stats.batches
                                 - 2, within=30)
        # the agent drained and stored the rest on the way out; wait for the very last batch
        last = agent.pipeline.stats.batches
        await platform.until(lambda: last in platform.seqs(), within=15)
    firsts = unique_seqs(platform.seqs())
    assert firsts == list(range(1, last + 1)), "gap or reordering in seq"
    points = {}
    for m in platform.of("telemetry"):
        points[m["seq"]] = len(m["points"])
    assert sum(points.values()) == agent.pipeline.stats.points_batched


async def test_store_full_drops_oldest_and_says_so(broker: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="platform-full") as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db", poll=0.1,
                             batch_interval=0.1, extra={"store": {"max_mb": 0.005}})
        await broker.stop()
        async with Agent(cfg) as agent:
            assert agent.pipeline is not None and agent.link is not None
            await asyncio.sleep(6)
            await broker.start()
            await asyncio.wait_for(agent.link.connected.wait(), 15)
            await platform.until(lambda: any(m.get("type") == "store_dropped"
                                             for m in platform.of("event")))
            dropped = [m for m in platform.of("event") if m["type"] == "store_dropped"]
            assert sum(m["detail"]["points"] for m in dropped) > 0
            # what survived arrives in order, the newest batch last
            await platform.until(lambda: len(platform.seqs()) > 5)
            seqs = unique_seqs(platform.seqs())
            assert seqs == sorted(seqs)
            assert seqs[0] > 1                            # the oldest went first


def run_agent(config: Path) -> subprocess.Popen[bytes]:
    """The agent as a real process (its log next to the config, for post-mortems)."""
    with (config.parent / "agent.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config",
                                 str(config), "--no-log-samples"],
                                stdout=subprocess.DEVNULL, stderr=log)


async def test_kill_9_loses_nothing_that_was_stored(broker: MosquittoBroker,
                                                    tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="platform-kill") as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=store_path, poll=0.1,
                             batch_interval=0.1)
        cfg_file = tmp_path / "gw.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"source"})))
        await broker.stop()              # let a backlog build, then kill the agent mid-run
        proc = run_agent(cfg_file)
        await asyncio.sleep(4)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        with Store(store_path) as st:
            st.integrity_check()
            stored = [r.seq for r in st.peek("telemetry", 100_000)]
        assert len(stored) > 10
        await broker.start()
        proc = run_agent(cfg_file)
        try:
            await platform.until(lambda: set(stored) <= set(platform.seqs()), within=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0, (tmp_path / "agent.log").read_text()
    firsts = unique_seqs(platform.seqs())
    assert firsts[: len(stored)] == stored            # the backlog first, in order
    assert firsts == list(range(1, len(firsts) + 1))  # seq continues after the restart


def _quality_values(platform: Platform) -> set[str]:
    return {p.get("quality", Quality.GOOD.value) for m in platform.of("telemetry")
            for p in m["points"]}


async def test_offline_device_event_and_quality(broker: MosquittoBroker,
                                                tmp_path: Path) -> None:
    from simulators.devices import Fault

    async with open_spec(SPEC, ephemeral=True) as sim, Platform(broker.url) as platform:
        sim.devices["lamp-2"].fault = Fault.silent()
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db")
        async with Agent(cfg):
            await platform.until(lambda: any(m.get("type") == "device_offline"
                                             for m in platform.of("event")))
            await platform.until(lambda: "timeout" in _quality_values(platform))
        ev = next(m for m in platform.of("event") if m["type"] == "device_offline")
        assert ev["device"] == "lamp-2" and ev["severity"] == "warning"


@pytest.mark.skipif(os.geteuid() != 0 and not Path("/usr/sbin/mosquitto").exists(),
                    reason="needs mosquitto")
async def test_sigterm_stops_cleanly_and_flushes(broker: MosquittoBroker,
                                                 tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim, Platform(broker.url) as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db",
                             batch_interval=30)   # nothing is sent before the stop
        cfg_file = tmp_path / "gw.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"source"})))
        proc = run_agent(cfg_file)
        await platform.until(lambda: any(m["kind"] == "state" and m["online"]
                                         for m in platform.messages))
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0
        await platform.until(lambda: len(platform.of("telemetry")) >= 1)
        await platform.until(lambda: not platform.messages[-1].get("online", True))


@pytest.mark.parametrize("ack_delay", [None, 0.0])      # None: the default
async def test_deletions_ride_with_the_next_batch_commit(ack_delay: float | None,
                                                         broker: MosquittoBroker,
                                                         tmp_path: Path) -> None:
    """store.ack_delay: what the broker acknowledged is deleted with the next batch's commit
    (one fsync per batch, not two) and is not counted as backlog meanwhile; 0 deletes at once."""
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id=f"platform-acks-{ack_delay}") as platform:
        store = {} if ack_delay is None else {"ack_delay": ack_delay}
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db", poll=0.1,
                             batch_interval=0.2, extra={"store": store})
        async with Agent(cfg) as agent:
            outbox = agent.outbox
            assert outbox is not None
            await platform.until(lambda: len(platform.of("telemetry")) >= 3)
            c0, n0 = outbox.commits, len(platform.of("telemetry"))
            held_rows = shown = 0
            for _ in range(40):                   # 4 s: ~20 batches
                await asyncio.sleep(0.1)
                held_rows = max(held_rows, outbox.counts.batches)
                shown = max(shown, agent.state_snapshot()["backlog"]["batches"])
            commits = outbox.commits - c0
            batches = len(platform.of("telemetry")) - n0
    assert batches >= 10
    if ack_delay is None:
        assert commits <= batches + 3, (commits, batches)    # the deletions rode along
        assert held_rows >= 1                      # the last delivered row waits in the store
    else:
        assert commits >= 1.5 * batches, (commits, batches)  # a commit for each deletion
    assert shown <= 1                              # never counted as backlog (one in flight)
    seqs = unique_seqs(platform.seqs())
    assert seqs == list(range(1, len(seqs) + 1))
