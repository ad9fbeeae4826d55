"""Faults never silence the gateway or darken the street (issue: fault isolation).

Each test runs the real agent against simulated devices (Modbus TCP and RTU on ptys), a private
Mosquitto and a platform listener, puts its store on a real filesystem in trouble (full, frozen,
read-only, damaged, deleted), and asserts what a city cares about: the lamps at the level they
should be, commands answered (and telling the truth), the fault visible at the platform and in
the status within seconds, every lost point counted, and recovery when the fault clears.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.codec import CommandRequest
from gateway.platform.client import Broker, send
from gateway.runtime import FAULT_INJECT_ENV, Agent
from gateway.store import SEQ_GUARD, Store
from simulators.broker import MosquittoBroker
from simulators.runner import SimHandle, open_spec
from tests.helpers import Platform, gateway_config
from tests.storage_faults import damage, ext4, fill, frozen, needs_mounts, remount, tmpfs
from tests.test_uplink import run_agent, unique_seqs

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
# lamps at 60 % around the clock, so a test can tell the program from an override
ALL_DAY: dict[str, Any] = {
    "programs": {"all-day": {"steps": [{"at": "00:00", "level": 60}]}},
    "groups": [{"name": "main-street", "program": "all-day",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60}]}],
}


def fault_config(sim: SimHandle, broker: MosquittoBroker, store: Path, *,
                 gateway_id: str = "gw-t", **store_extra: Any) -> Any:
    return gateway_config(
        sim, broker_url=broker.url, store=store, gateway_id=gateway_id, poll=0.2,
        batch_interval=0.2,
        extra={"gateway": {"id": gateway_id, "groups": ["district-t"], "location": PARIS,
                           "has_rtc": True},
               "lighting": ALL_DAY,
               "store": {"stall_timeout": 1.0, **store_extra}})


async def ask_in_order(broker: MosquittoBroker,
                       requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Publish requests in order on one connection (QoS 1 keeps their order), then collect
    every answer."""
    import aiomqtt

    from gateway.codec import decode_response, encode_request

    ids = [f"o-{i}-{time.monotonic_ns()}" for i in range(len(requests))]
    got: dict[str, dict[str, Any]] = {}
    host, port = broker.url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port)) as c:
        await c.subscribe("city/v1/gw-t/cmd/res", qos=1)
        for rid, (cmd, args) in zip(ids, requests, strict=True):
            await c.publish("city/v1/gw-t/cmd/req", encode_request(
                CommandRequest(id=rid, cmd=cmd, args=args)), qos=1)
        async with asyncio.timeout(10):
            async for msg in c.messages:
                r, _ = decode_response(bytes(msg.payload))   # type: ignore[arg-type]
                if r.id in ids:
                    got[str(r.id)] = {"ok": r.ok, "error": r.error}
                if len(got) == len(ids):
                    break
    return [got[i] for i in ids]


async def until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    # simulated registers and the agent's status have no change notification: poll them
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def ask(broker: MosquittoBroker, cmd: str, args: dict[str, Any] | None = None, *,
              gateway: str = "gw-t", wait: float = 5.0) -> dict[str, Any]:
    req = CommandRequest(id=f"t-{time.monotonic_ns()}", cmd=cmd, args=args or {})
    got = await send(Broker(broker.url), req, gateway=gateway, wait=wait)
    assert got, f"no answer to {cmd}"
    return got[0]


def events(platform: Platform, type_: str) -> list[dict[str, Any]]:
    return [m for m in platform.of("event") if m["type"] == type_]




def assert_no_seq_reused(platform: Platform) -> None:
    """A seq that arrives twice (QoS 1 may repeat) carries the same batch both times."""
    by_seq: dict[int, Any] = {}
    for m in platform.of("telemetry"):
        assert by_seq.setdefault(m["seq"], m["points"]) == m["points"], f"seq {m['seq']} reused"


def lamp(sim: SimHandle) -> Any:
    return sim.devices["lamp-1"].peek("dim_level")


# ================================================================================ disk full
@needs_mounts
async def test_a_full_disk_keeps_lamps_commands_and_telemetry_going(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "sd", "8m") as sd:
        async with open_spec(SPEC, ephemeral=True) as sim, \
                Platform(broker.url, client_id="p-full") as platform:
            async with Agent(fault_config(sim, broker, sd / "store.db")) as agent:
                assert agent.pipeline is not None
                await platform.until(lambda: len(platform.seqs()) >= 3)
                await until(lambda: lamp(sim) == 60)
                filler = fill(sd)
                await platform.until(lambda: bool(events(platform, "store_fault")), within=15)
                fault = events(platform, "store_fault")[0]
                assert fault["detail"]["fault"] == "full" and fault["severity"] == "alarm"
                snap = agent.state_snapshot()
                assert snap["store"]["state"] == "fault" and snap["store"]["fault"] == "full"
                # telemetry still goes out (from memory), commands tell the truth
                n = max(platform.seqs())
                await platform.until(lambda: max(platform.seqs()) >= n + 5)
                r = await ask(broker, "set_override", {"group": "main-street", "level": 100})
                assert r["ok"] is True, r
                await until(lambda: lamp(sim) == 100, within=5)
                assert (await ask(broker, "ping"))["ok"]
                filler.unlink()
                await platform.until(lambda: bool(events(platform, "store_recovered")),
                                     within=30)
                rec = events(platform, "store_recovered")[0]["detail"]
                assert rec["fault"] == "full" and rec["dropped"]["points"] == 0
                assert rec["kept_points"] > 0
                assert agent.state_snapshot()["store"]["state"] == "ok"
                last = agent.pipeline.stats.batches
                await platform.until(lambda: last in platform.seqs(), within=20)
            # and the override was kept in the store once it could be written
            with Store(sd / "store.db") as store:
                assert b'"level": 100.0' in (store.kv_get("lighting.overrides") or b"")
    firsts = unique_seqs(platform.seqs())
    assert sorted(firsts) == list(range(1, max(firsts) + 1)), "a batch was lost"
    assert_no_seq_reused(platform)


@needs_mounts
async def test_a_full_disk_that_stays_full_drops_the_oldest_and_says_which(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "sd", "8m") as sd:
        async with open_spec(SPEC, ephemeral=True) as sim:
            cfg = fault_config(sim, broker, sd / "store.db", buffer_points=150)
            await broker.stop()                 # nothing can leave: memory fills up
            async with Agent(cfg) as agent:
                assert agent.pipeline is not None
                await until(lambda: agent.pipeline is not None
                            and agent.pipeline.stats.batches >= 2)
                fill(sd)
                await until(lambda: agent.state_snapshot()["store"]["dropped"]["points"] > 0,
                            within=30)
                held = agent.state_snapshot()["store"]["memory"]["points"]
                assert held <= 150 + 60                  # bounded (one batch over at most)
                await broker.start()
                async with Platform(broker.url, client_id="p-stays") as platform:
                    await platform.until(lambda: bool(events(platform, "store_dropped")),
                                         within=90)
                    dropped = events(platform, "store_dropped")[0]["detail"]
                    assert dropped["reason"] == "memory_buffer_full"
                    assert dropped["points"] > 0 and dropped["seqs"]
                    lost = {s for a, b in dropped["seqs"] for s in range(a, b + 1)}
                    await platform.until(lambda: len(platform.seqs()) > 3, within=30)
                    # the dropped seqs never come, and are never given to another batch
                    assert not lost & set(platform.seqs())
                    assert agent.state_snapshot()["store"]["state"] == "fault"


@needs_mounts
async def test_a_restart_while_the_disk_is_full_never_numbers_a_batch_again(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """Batches numbered and sent from memory while the store is full, then the agent killed:
    the next agent (the disk freed meanwhile, so its store works and knows nothing of them)
    numbers on after them, from the mark kept in its runtime directory (a RAM filesystem)."""
    with tmpfs(tmp_path / "sd", "8m") as sd, tmpfs(tmp_path / "run", "1m") as run:
        async with open_spec(SPEC, ephemeral=True) as sim, \
                Platform(broker.url, client_id="p-restart") as platform:
            cfg = fault_config(sim, broker, sd / "store.db")
            raw = cfg.model_dump(mode="json", exclude={"source"})
            raw["service"]["control_socket"] = str(run / "control.sock")
            cfg_file = tmp_path / "gw.yaml"
            cfg_file.write_text(yaml.safe_dump(raw))
            proc = run_agent(cfg_file)
            try:
                await platform.until(lambda: len(platform.seqs()) >= 3, within=30)
                filler = fill(sd)
                await platform.until(lambda: bool(events(platform, "store_fault")), within=15)
                n = max(platform.seqs())
                await platform.until(lambda: max(platform.seqs()) >= n + 5, within=30)
            finally:
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 20)
            sent_from_memory = max(platform.seqs())
            assert list(run.glob("seq-mark-*")), "no mark kept in the runtime directory"
            filler.unlink()                        # the next agent's store works again
            with Store(sd / "store.db") as st:
                assert st.next_seq() <= sent_from_memory     # the store never saw them
            proc = run_agent(cfg_file)
            try:
                await platform.until(lambda: max(platform.seqs()) >= sent_from_memory + 5,
                                     within=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 20)
    assert_no_seq_reused(platform)


# ============================================================================ frozen card
@needs_mounts
async def test_a_frozen_card_never_holds_up_lamps_or_commands(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with ext4(tmp_path / "sd") as sd:
        async with open_spec(SPEC, ephemeral=True) as sim, \
                Platform(broker.url, client_id="p-frozen") as platform:
            async with Agent(fault_config(sim, broker, sd / "store.db")) as agent:
                assert agent.pipeline is not None and agent.supervisor is not None
                await platform.until(lambda: len(platform.seqs()) >= 3)
                await until(lambda: lamp(sim) == 60)
                with frozen(sd):
                    t0 = time.monotonic()
                    assert (await ask(broker, "ping"))["ok"]
                    r = await ask(broker, "set_override",
                                  {"group": "main-street", "level": 100})
                    assert r["ok"] is True, r
                    answered = time.monotonic() - t0
                    await until(lambda: lamp(sim) == 100, within=5)
                    await platform.until(lambda: bool(events(platform, "store_fault")),
                                         within=10)
                    assert events(platform, "store_fault")[0]["detail"]["fault"] == "stalled"
                    snap = agent.state_snapshot()        # status answers during the freeze
                    assert snap["store"]["state"] == "fault"
                    n = max(platform.seqs())
                    await platform.until(lambda: max(platform.seqs()) >= n + 5)
                    assert agent.supervisor.alive()      # a stalled card is no wedged loop
                    await asyncio.sleep(2)               # a freeze of several seconds
                # both answers came while the card was frozen (it stayed frozen far longer)
                assert answered < 4.0
                await platform.until(lambda: bool(events(platform, "store_recovered")),
                                     within=30)
                last = agent.pipeline.stats.batches
                await platform.until(lambda: last in platform.seqs(), within=20)
    firsts = unique_seqs(platform.seqs())
    assert sorted(firsts) == list(range(1, max(firsts) + 1)), "a batch was lost"
    assert_no_seq_reused(platform)


# ====================================================================== damaged at start
def _make_store(path: Path, *, batches: int = 40, unclean: bool = False) -> None:
    """A store with some content, closed (its pages in the main file); with ``unclean`` it
    looks as if the agent died (a power cut: when a card damages pages)."""
    with Store(path) as store:
        for _ in range(batches):
            store.append_batch(store.next_seq(), os.urandom(3000), 10)
    if unclean:
        db = sqlite3.connect(path)
        db.execute("UPDATE counters SET value=0 WHERE name='clean'")
        db.commit()
        db.close()


@pytest.mark.parametrize("how", ["header", "empty", "page"])
async def test_a_damaged_store_is_moved_aside_and_the_gateway_runs(
        broker: MosquittoBroker, tmp_path: Path, how: str) -> None:
    path = tmp_path / "sd" / "store.db"
    path.parent.mkdir()
    _make_store(path, unclean=how == "page")     # a power cut is when pages go bad
    damage(path, how)
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id=f"p-damaged-{how}") as platform:
        async with Agent(fault_config(sim, broker, path)) as agent:
            await until(lambda: lamp(sim) == 60)
            await platform.until(lambda: bool(events(platform, "store_replaced")))
            ev = events(platform, "store_replaced")[0]["detail"]
            assert ev["moved_to"].startswith(str(path) + ".corrupt-")
            assert os.path.exists(ev["moved_to"])  # noqa: ASYNC240  (evidence kept)
            reason = {"header": ["not a usable SQLite database"], "empty": ["empty (0 bytes)"],
                      "page": ["damaged", "malformed"]}[how]
            assert any(r in ev["reason"] for r in reason), ev["reason"]
            await platform.until(lambda: len(platform.seqs()) >= 3)
            assert agent.state_snapshot()["store"]["state"] == "ok"
    assert min(platform.seqs()) == 1                     # a new store: numbering from 1


# =============================================================================== read-only
@needs_mounts
async def test_a_read_only_store_is_kept_and_the_gateway_runs_on_memory(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "sd", "16m") as sd:
        path = sd / "store.db"
        async with open_spec(SPEC, ephemeral=True) as sim:
            cfg = fault_config(sim, broker, path)
            await broker.stop()                              # a backlog builds up first
            async with Agent(cfg) as agent:
                assert agent.pipeline is not None
                agent.commands.set_override(group="main-street", level=90, duration_s=None,
                                            priority=50, source="platform")
                await until(lambda: lamp(sim) == 90)
                await until(lambda: agent.outbox is not None
                            and agent.outbox.counts.batches >= 5)
            with Store(path) as store:
                backlog = [r.seq for r in store.peek("telemetry", 10_000)]
                next_seq = store.next_seq()
            size = path.stat().st_size
            remount(sd, read_only=True)
            try:
                await broker.start()
                async with Platform(broker.url, client_id="p-ro") as platform, \
                        Agent(cfg) as agent:
                    # the override saved before still holds: the state is read, not written
                    await until(lambda: lamp(sim) == 90)
                    await platform.until(lambda: bool(events(platform, "store_fault")))
                    assert events(platform, "store_fault")[0]["detail"]["fault"] == "read_only"
                    assert not events(platform, "store_replaced")   # not taken for corrupt
                    # the store's numbering goes on, with a margin for what its WAL held
                    await platform.until(lambda: len(platform.seqs()) >= 3)
                    assert min(platform.seqs()) >= next_seq + SEQ_GUARD
                    assert path.stat().st_size == size              # untouched
                    remount(sd, read_only=False)
                    await platform.until(lambda: bool(events(platform, "store_recovered")),
                                         within=30)
                    # the old backlog goes out once the store can be written
                    await platform.until(lambda: set(backlog) <= set(platform.seqs()),
                                         within=30)
            finally:
                remount(sd, read_only=False)


# ================================================================== deleted while running
async def test_a_store_deleted_under_the_agent_is_noticed_and_recreated(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    path = tmp_path / "sd" / "store.db"
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="p-deleted") as platform:
        async with Agent(fault_config(sim, broker, path)) as agent:
            assert agent.pipeline is not None
            await platform.until(lambda: len(platform.seqs()) >= 3)
            for side in ("", "-wal", "-shm"):
                path.with_name(path.name + side).unlink(missing_ok=True)
            await platform.until(lambda: bool(events(platform, "store_fault")), within=15)
            assert events(platform, "store_fault")[0]["detail"]["fault"] == "missing"
            await platform.until(lambda: bool(events(platform, "store_recovered")), within=20)
            assert events(platform, "store_created")
            assert path.exists()
            n = agent.pipeline.stats.batches
            await platform.until(lambda: max(platform.seqs()) > n, within=20)
    assert_no_seq_reused(platform)


# =================================================================== supervised components
async def test_a_crashed_component_is_restarted_and_reported(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, client_id="p-crash") as platform:
        async with Agent(fault_config(sim, broker, tmp_path / "store.db")) as agent:
            assert agent.supervisor is not None
            await until(lambda: lamp(sim) == 60)
            agent.supervisor.components["lighting"].inject(RuntimeError("boom in a step"))
            await platform.until(lambda: bool(events(platform, "component_failed")))
            ev = events(platform, "component_failed")[0]
            assert ev["severity"] == "alarm"
            assert ev["detail"] == {**ev["detail"], "component": "lighting",
                                    "error": "RuntimeError", "message": "boom in a step",
                                    "restarting": True, "critical": True}
            await until(lambda: agent.state_snapshot()["components"]["lighting"]["state"]
                        == "running")
            assert agent.state_snapshot()["components"]["lighting"]["restarts"] == 1
            # the restarted loop drives the lamps
            assert (await ask(broker, "set_override",
                              {"group": "main-street", "level": 90}))["ok"]
            await until(lambda: lamp(sim) == 90, within=5)


def test_a_critical_component_that_keeps_failing_stops_the_agent_non_zero(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """The real process: systemd restarts an agent that exits non-zero."""
    cfg = {"gateway": {"id": "gw-crash"}, "mqtt": {"url": broker.url, "connect_timeout": 2},
           "store": {"path": str(tmp_path / "store.db")},
           "service": {"control_socket": str(tmp_path / "c.sock"), "connect_jitter": 0,
                       "restart_limit": 1}}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, FAULT_INJECT_ENV: "pipeline"}
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(path),
                           "--no-log-samples"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "component pipeline kept failing" in proc.stderr


# ====================================================================== concurrent commands
async def test_commands_are_not_held_up_by_a_silent_device(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    from simulators.devices import Fault

    async with open_spec(SPEC, ephemeral=True) as sim:
        sim.devices["lamp-2"].fault = Fault.silent()
        async with Agent(fault_config(sim, broker, tmp_path / "store.db")) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            reads = [asyncio.create_task(ask(broker, "read_point",
                                             {"device": "lamp-2", "point": "dim_level"},
                                             wait=60))
                     for _ in range(4)]
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            pong = await ask(broker, "ping")
            ping_s = time.monotonic() - t0
            # two overrides of one group, sent in this order on one connection
            answers = await ask_in_order(broker, [
                ("set_override", {"group": "main-street", "level": 30}),
                ("set_override", {"group": "main-street", "level": 40})])
            assert all(a["ok"] for a in answers), answers
            assert agent.lighting is not None
            assert [o["level"] for o in agent.lighting.snapshot()["overrides"]] == [40]
            await until(lambda: lamp(sim) == 40, within=60)  # in the order they arrived
            assert pong["ok"]
            assert not all(t.done() for t in reads)          # the reads still wait
            done = await asyncio.gather(*reads)
            assert all(d["error"]["code"] == "device_error" for d in done if not d["ok"])
            # the ping came back while six reads were stuck on the silent unit, each of which
            # takes the bus's timeout and retries
            assert ping_s < 1.0
