"""The control socket: permissions, the snapshot round trip, clear errors, `edgegw status`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import Severity
from gateway.config import parse_config
from gateway.control import (
    SCHEMA,
    ControlError,
    ControlServer,
    fetch_status,
    render_status,
    request,
    status_line,
)
from gateway.runtime import Agent

SNAPSHOT: dict[str, Any] = {
    "schema": 1, "gateway": "gw-d1-0042", "site": "district-1", "version": "0.1.0", "pid": 812,
    "now": 1764032400.0, "started_at": 1764028800.0, "uptime_s": 3600.0,
    "link": {"state": "connected", "url": "mqtts://broker-a:8883", "reconnects": 2,
             "last_error": None},
    "backlog": {"points": 1200, "batches": 6, "bytes": 2600, "events": 1},
    "devices": {
        "env-1": {"bus": "rs485-1", "health": "online", "last_ok": 1764032395.0,
                  "last_error": None, "polls": 360, "errors": 0, "failures": 0},
        "meter-2": {"bus": "rs485-1", "health": "offline", "last_ok": 1764031400.0,
                    "last_error": "timed out after 0.5 s", "polls": 360, "errors": 12,
                    "failures": 12},
    },
    "buses": [{"name": "rs485-1", "requests": 720, "timeouts": 12, "exceptions": 0,
               "errors": 0, "reconnects": 0}],
    "lighting": {"rules_version": "abc", "groups": {
        "main-street": {"level": 70.0, "reason": "23:00 step: 70 %", "source": "program"}}},
    "clock": {"trusted": True, "source": "ntp", "since": 1764028800.0},
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short base path (unix socket paths are limited to 107 bytes), world-traversable so a
    second user's access is decided by the control directory's own mode."""
    base = Path(tempfile.mkdtemp(prefix="egw-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_round_trip_of_the_snapshot(short_dir: Path) -> None:
    path = short_dir / "run" / "control.sock"
    async with ControlServer(path, lambda: SNAPSHOT) as server:
        got = await asyncio.to_thread(fetch_status, path)
        assert got == SNAPSHOT
        pong = await asyncio.to_thread(request, path, "ping")
        assert pong == {"ok": True, "result": {"pong": True}}
        as_json = await asyncio.to_thread(request, path, '{"cmd": "status"}')
        assert as_json["result"]["gateway"] == "gw-d1-0042"
        assert server.requests == 3
    assert not path.exists()                             # closing removes the socket


async def test_socket_and_directory_permissions(short_dir: Path) -> None:
    path = short_dir / "run" / "control.sock"
    old = os.umask(0)                                    # a careless umask changes nothing
    try:
        async with ControlServer(path, lambda: SNAPSHOT):
            st = path.stat()
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
            assert st.st_uid == os.getuid()
    finally:
        os.umask(old)


def _python_for_other_users() -> str | None:
    """An interpreter another user can run (the venv's may live under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        p = Path(candidate)
        if p.exists() and os.stat(p.resolve()).st_mode & stat.S_IXOTH:
            return candidate
    return None


async def test_another_user_cannot_connect_but_a_group_member_can(short_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as another user")
    python = _python_for_other_users()
    if python is None:
        pytest.skip("no system python another user may run")
    path = short_dir / "run" / "control.sock"
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             "    s.connect(sys.argv[1]); s.sendall(b'ping\\n'); print(s.recv(100).decode())\n"
             "except PermissionError:\n"
             "    print('denied')\n")
    group = os.getgid()                                  # the service user's group (here root's)

    def run_as(extra_groups: list[int]) -> str:
        out = subprocess.run([python, "-c", probe, str(path)], user=65534, group=65534,
                             extra_groups=extra_groups, capture_output=True, text=True,
                             timeout=10, cwd="/")
        return out.stdout.strip() + out.stderr.strip()

    async with ControlServer(path, lambda: SNAPSHOT):
        assert await asyncio.to_thread(run_as, []) == "denied"
        member = await asyncio.to_thread(run_as, [group])
        assert json.loads(member) == {"ok": True, "result": {"pong": True}}


def test_a_missing_socket_says_to_check_the_service(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"is the service running\? systemctl status edgegw"):
        fetch_status(tmp_path / "control.sock")


async def test_a_stale_socket_is_replaced_and_a_live_one_refused(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))                                # bound, never listening: a crash leftover
    stale.close()
    with pytest.raises(ControlError, match="is the service running"):
        fetch_status(path)
    async with ControlServer(path, lambda: SNAPSHOT):
        assert (await asyncio.to_thread(fetch_status, path))["schema"] == SCHEMA
        with pytest.raises(ControlError, match="another agent is already serving it"):
            await ControlServer(path, lambda: SNAPSHOT).start()
        assert (await asyncio.to_thread(fetch_status, path))["schema"] == SCHEMA
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket is in the way"):
        await ControlServer(path, lambda: SNAPSHOT).start()


async def test_bad_requests_get_an_error_and_the_server_keeps_serving(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = short_dir / "control.sock"
    broken = [True]

    def snapshot() -> dict[str, Any]:
        if broken[0]:
            raise RuntimeError("boom")
        return SNAPSHOT

    async with ControlServer(path, snapshot):
        with pytest.raises(ControlError, match="unknown command 'frobnicate'"):
            await asyncio.to_thread(request, path, "frobnicate")
        with pytest.raises(ControlError, match=r"needs \{\"cmd\""):
            await asyncio.to_thread(request, path, '{"command": 1}')
        with pytest.raises(ControlError, match="longer than"):
            await asyncio.to_thread(request, path, "x" * 5000)
        with (caplog.at_level(logging.ERROR, logger="edgegw.control"),
              pytest.raises(ControlError, match="could not build its status: boom")):
            await asyncio.to_thread(fetch_status, path)
        broken[0] = False
        assert (await asyncio.to_thread(fetch_status, path))["gateway"] == "gw-d1-0042"


async def test_a_silent_client_is_dropped(short_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.control.REQUEST_TIMEOUT", 0.1)
    path = short_dir / "control.sock"
    async with ControlServer(path, lambda: SNAPSHOT):
        reader, writer = await asyncio.open_unix_connection(str(path))
        line = await asyncio.wait_for(reader.readline(), 2)
        assert json.loads(line) == {"ok": False, "error": "no request line within 0.1 s"}
        writer.close()
        await writer.wait_closed()


async def test_an_open_existing_directory_is_kept_but_warned_about(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = short_dir / "shared"
    d.mkdir()
    d.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="edgegw.control"):
        async with ControlServer(d / "c.sock", lambda: SNAPSHOT):
            pass
    assert stat.S_IMODE(d.stat().st_mode) == 0o777       # never chmod a directory we did not make
    assert any("open to others" in r.getMessage() for r in caplog.records)


async def test_a_path_too_long_for_a_unix_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="longer than the 107 bytes"):
        await ControlServer(tmp_path / ("x" * 120) / "c.sock", lambda: SNAPSHOT).start()


def test_render_status_shows_the_live_picture() -> None:
    text = render_status(SNAPSHOT)
    assert "gw-d1-0042" in text and "1h 0m" in text
    assert "connected  mqtts://broker-a:8883  reconnects 2" in text
    assert "1200 points in 6 batches, 2.6 kB; 1 events" in text
    assert "trusted (ntp)" in text
    assert "devices   1/2 online" in text
    assert "env-1    online      rs485-1    last poll ok 5s ago, 0 errors" in text
    assert "meter-2  offline" in text and "(timed out after 0.5 s)" in text
    assert "main-street   70.0 %  23:00 step: 70 %" in text
    line = status_line(SNAPSHOT)
    assert line == "mqtt connected · backlog 1200 pts/2.6 kB · devices 1/2 up (down: meter-2)"
    untrusted = {**SNAPSHOT, "clock": {"trusted": False, "source": None}}
    assert status_line(untrusted).endswith("clock untrusted")
    assert "NOT trusted" in render_status(untrusted)


def test_render_accepts_lists_too() -> None:
    snap = {**SNAPSHOT,
            "devices": [{"name": "env-1", "bus": "b", "health": "online", "last_ok": None}],
            "lighting": [{"group": "g", "level": None, "reason": "clock untrusted"}],
            "backlog": None, "link": None, "clock": None}
    text = render_status(snap)
    assert "env-1" in text and "never polled ok" in text and "?" in text
    assert status_line(snap).startswith("mqtt ? · backlog 0 pts/0 B · devices 1/1 up")


async def test_snapshot_of_a_real_agent_with_its_store(tmp_path: Path) -> None:
    cfg = parse_config(json.dumps({
        "gateway": {"id": "gw-snap", "site": "lab"},
        # nothing listens on the discard port: the link stays down, the store fills
        "mqtt": {"url": "mqtt://127.0.0.1:9", "reconnect_min": 5, "connect_timeout": 1},
        "store": {"path": str(tmp_path / "store.db")},
    }), source="test")
    clock = [1764032400.0]
    async with Agent(cfg, wall_clock=lambda: clock[0]) as agent:
        assert agent.outbox is not None
        agent.events.emit("test_event", severity=Severity.INFO)
        outbox = agent.outbox
        async with asyncio.timeout(5):     # the outbox commits in the store's thread
            while outbox.counts.events < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        clock[0] += 90
        snap = agent.state_snapshot()
    json.dumps(snap)                                     # JSON all the way down
    assert snap["schema"] == SCHEMA and snap["gateway"] == "gw-snap"
    assert snap["uptime_s"] == 90.0
    assert snap["link"]["url"] == "mqtt://127.0.0.1:9"
    assert snap["link"]["state"] in ("connecting", "backoff", "disconnected")
    assert snap["backlog"]["events"] >= 1                # agent_start + test_event, unsent
    assert snap["devices"] == {} and snap["buses"] == []
    assert {"trusted", "source"} <= set(snap["clock"])
    assert snap["now"] == clock[0] and snap["pid"] == os.getpid() and snap["site"] == "lab"
    assert snap["store"]["state"] == "ok" and snap["store"]["memory"]["points"] == 0
    assert snap["components"]["store"]["state"] == "running"
    assert "gw-snap" in render_status(snap)
