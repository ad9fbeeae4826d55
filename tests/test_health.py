"""Health telemetry of the built-in `gateway` device, read from this test process's real /proc."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from drivers.sample import Quality, Sample
from gateway.codec import Catalogue, decode_batch, encode_batch
from gateway.config import parse_config
from gateway.health import DEVICE, HealthSampler, agent_counters, run_health
from gateway.runtime import Agent

COUNTERS = {"store_backlog_points": 1200, "store_backlog_bytes": 2600, "modbus_errors": 3,
            "mqtt_reconnects": 1}


def values(samples: list[Sample]) -> dict[str, float | int | bool | str | None]:
    assert all(s.device == DEVICE and s.quality is Quality.GOOD for s in samples)
    return {s.point: s.value for s in samples}


def sampler(tmp_path: Path, **kw: object) -> HealthSampler:
    return HealthSampler(store_path=tmp_path / "store.db", counters=lambda: COUNTERS,
                         **kw)  # type: ignore[arg-type]


def test_points_read_from_proc_are_plausible(tmp_path: Path) -> None:
    s = sampler(tmp_path, thermal=None, clock=lambda: 1764032400.5)
    cpu0, wall0 = time.process_time(), time.monotonic()
    while time.process_time() < cpu0 + 0.3:             # burn CPU so the delta is visible
        pass
    expected = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    samples = s.sample()
    v = values(samples)
    assert {s.ts for s in samples} == {1764032400500}
    # /proc counts in clock ticks (10 ms): a few percentage points either way
    assert abs(v["cpu_percent"] - expected) < 15        # type: ignore[operator]
    assert 0 < v["cpu_percent"] <= 100 * (os.cpu_count() or 1) + 5   # type: ignore[operator]
    assert 5 < v["rss_mb"] < 4096                        # type: ignore[operator]
    st = os.statvfs(tmp_path)
    assert v["disk_free_mb"] == pytest.approx(st.f_bavail * st.f_frsize / 2**20, rel=0.01)
    boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 0 <= v["uptime_s"] <= boot_uptime            # type: ignore[operator]
    assert v["sd_write_kb"] >= 0                         # type: ignore[operator]
    assert "cpu_temp_c" not in v                         # no thermal zone: left out, not 0
    for name, value in COUNTERS.items():
        assert v[name] == value


def test_an_idle_interval_shows_little_cpu(tmp_path: Path) -> None:
    s = sampler(tmp_path, thermal=None)
    s.sample()
    time.sleep(0.3)
    assert values(s.sample())["cpu_percent"] < 50       # type: ignore[operator]


def test_written_bytes_are_counted(tmp_path: Path) -> None:
    s = sampler(tmp_path, thermal=None)
    s.sample()
    with open(tmp_path / "blob", "wb") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
    written = values(s.sample())["sd_write_kb"]
    if written == 0:
        pytest.skip("this filesystem does not account write_bytes (tmpfs or overlay)")
    assert written >= 1000                               # type: ignore[operator]


def test_cpu_temperature_where_the_board_reports_it(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")                           # millidegrees, as the kernel writes it
    assert values(sampler(tmp_path, thermal=zone).sample())["cpu_temp_c"] == 48.3
    zone.write_text("garbage\n")
    assert "cpu_temp_c" not in values(sampler(tmp_path, thermal=zone).sample())


def test_types_are_stable_and_the_samples_encode(tmp_path: Path) -> None:
    s = sampler(tmp_path, thermal=None)
    first, second = s.sample(), s.sample()
    assert {x.point: type(x.value) for x in first} == {x.point: type(x.value) for x in second}
    cat = Catalogue.new().with_samples(first)
    payload = encode_batch(1, first + second, cat, compression="zstd")
    decoded = decode_batch(payload, cat)
    assert {p.point for p in decoded.points} == {x.point for x in first}


def test_a_failing_counters_callable_is_logged_once(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("store closed")

    s = HealthSampler(store_path=tmp_path / "x.db", counters=broken, thermal=None)
    with caplog.at_level(logging.WARNING, logger="edgegw.health"):
        v1, v2 = values(s.sample()), values(s.sample())
    assert "rss_mb" in v1 and "rss_mb" in v2 and "modbus_errors" not in v1
    assert len([r for r in caplog.records if "counters" in r.getMessage()]) == 1


def test_unreadable_proc_leaves_points_out(tmp_path: Path) -> None:
    s = HealthSampler(store_path=tmp_path / "deep" / "er" / "store.db", counters=dict,
                      proc=tmp_path / "no-proc", thermal=None)
    assert set(values(s.sample())) == {"disk_free_mb"}   # statvfs falls back to a parent


async def test_run_health_offers_every_interval_and_survives_errors(tmp_path: Path) -> None:
    s = sampler(tmp_path, thermal=None)
    got: list[list[Sample]] = []
    four = asyncio.Event()

    def offer(samples: list[Sample]) -> None:
        got.append(samples)
        if len(got) == 4:
            four.set()
        if len(got) == 2:
            raise RuntimeError("uplink hiccup")         # logged, the loop goes on

    task = asyncio.create_task(run_health(s, offer, 0.03, first_after=0.0))
    try:
        await asyncio.wait_for(four.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert all("rss_mb" in values(batch) for batch in got)


async def test_agent_counters_of_a_real_agent(tmp_path: Path) -> None:
    cfg = parse_config(json.dumps({
        "gateway": {"id": "gw-health"},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "reconnect_min": 5, "connect_timeout": 1},
        "store": {"path": str(tmp_path / "store.db")},
    }), source="test")
    async with Agent(cfg) as agent:
        outbox = agent.outbox
        assert outbox is not None
        async with asyncio.timeout(5):     # the outbox commits in the store's thread
            while not outbox.counts.events:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        c = agent_counters(agent)
        s = HealthSampler(store_path=cfg.store.path, counters=lambda: agent_counters(agent),
                          thermal=None)
        v = values(s.sample())
    assert set(c) == {"store_backlog_points", "store_backlog_bytes", "store_memory_points",
                      "store_ok", "modbus_errors", "serial_errors", "mqtt_reconnects",
                      "component_restarts"}
    assert c["store_ok"] == 1 and c["component_restarts"] == 0
    assert all(type(x) is int for x in c.values())
    assert c["store_backlog_bytes"] > 0                  # the agent_start event waits unsent
    assert v["modbus_errors"] == 0 and v["mqtt_reconnects"] == 0


async def test_the_first_health_sample_does_not_change_the_catalogue(tmp_path: Path) -> None:
    """A new point means a new birth carrying the whole catalogue (20 kB for 500 points): the
    agent's own points are in it from the start."""
    cfg = parse_config(json.dumps({
        "gateway": {"id": "gw-cat", "location": {"lat": 10.8, "lon": 106.7,
                                                 "timezone": "Asia/Ho_Chi_Minh"},
                    "has_rtc": True},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "reconnect_min": 5, "connect_timeout": 1},
        "store": {"path": str(tmp_path / "store.db")},
        "lighting": {"programs": {"p": {"steps": [{"at": "00:00", "level": 50}]}},
                     "groups": [{"name": "street", "program": "p",
                                 "outputs": [{"gpio": "relay-1"}]}]},
        "gpio": {"factory": "mock", "outputs": [{"name": "relay-1", "pin": 17}]}}),
        source="test")
    async with Agent(cfg) as agent:
        assert agent.outbox is not None and agent.pipeline is not None
        await asyncio.wait_for(agent.outbox.ready.wait(), 5)
        cat = agent.outbox.catalogue
        assert cat is not None
        sampler = HealthSampler(store_path=cfg.store.path,
                                counters=lambda: agent_counters(agent), thermal=None)
        agent.pipeline.offer(sampler.sample())
        assert agent.lighting is not None
        agent.lighting.report_every = 0              # its level and counters, now
        await agent.lighting.step()
        agent.pipeline.flush()
        assert agent.outbox.catalogue is cat         # not a new catalogue: no new birth
