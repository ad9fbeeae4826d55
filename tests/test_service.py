"""sd_notify: what the agent tells systemd, read from a real datagram socket bound in the test."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.service import SystemdNotifier, notify_address, watchdog_interval


class NotifySink:
    """A unix datagram socket standing in for systemd; a thread timestamps every datagram, so
    arrival times stay true while the test blocks the event loop."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="notify-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()

    def lines(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def times(self, text: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if text in m.split("\n")]

    async def wait_for(self, text: str, count: int = 1, within: float = 3.0) -> None:
        deadline = time.monotonic() + within
        while len(self.times(text)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} not received; got {self.lines()}")
            await asyncio.sleep(0.01)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[NotifySink, str]]:
    path = str(tmp_path / "notify.sock")
    s = NotifySink(path)
    try:
        yield s, path
    finally:
        s.close()


def test_addresses_and_watchdog_settings_are_parsed() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": ""}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@sd-notify"}) == "\0sd-notify"
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    # WATCHDOG_PID names the process the watchdog is for: a child that inherited it must not pet
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 1
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2) is None


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    async with SystemdNotifier(environ={}, status=lambda: "x") as sd:
        assert not sd.enabled
        assert sd.ready("up") is False
        assert sd.watchdog() is False
        assert sd.status("y") is False


async def test_ready_status_and_stopping_reach_systemd(sink: tuple[NotifySink, str]) -> None:
    s, path = sink
    text = ["mqtt connecting · backlog 0 pts/0 B · devices 0/2 up"]
    async with SystemdNotifier(environ={"NOTIFY_SOCKET": path}, status=lambda: text[0],
                               status_interval=0.02) as sd:
        assert sd.watchdog_timeout is None            # no WatchdogSec: no pets
        await s.wait_for(f"STATUS={text[0]}")
        assert sd.ready("running") is True
        await s.wait_for("READY=1")
        assert "READY=1\nSTATUS=running" in s.lines()
        text[0] = "mqtt connected · backlog 0 pts/0 B · devices 2/2 up"
        await s.wait_for(f"STATUS={text[0]}")
        n_status = len([m for m in s.lines() if m.startswith("STATUS=")])
        await asyncio.sleep(0.1)                       # unchanged text is not repeated
        assert len([m for m in s.lines() if m.startswith("STATUS=")]) == n_status
    await s.wait_for("STOPPING=1")
    assert not s.times("WATCHDOG=1")
    assert len(s.times("STOPPING=1")) == 1


async def test_status_is_one_line_and_bounded(sink: tuple[NotifySink, str]) -> None:
    s, path = sink
    async with SystemdNotifier(environ={"NOTIFY_SOCKET": path}) as sd:
        sd.status("line one\nline two " + "x" * 500)
        await asyncio.sleep(0.05)
    status = next(m for m in s.lines() if m.startswith("STATUS=line one"))
    assert "\n" not in status and len(status) <= len("STATUS=") + 200


async def test_watchdog_pets_from_the_loop_and_stops_while_it_is_blocked(
        sink: tuple[NotifySink, str]) -> None:
    s, path = sink
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid())}
    async with SystemdNotifier(environ=env) as sd:
        assert sd.watchdog_timeout == pytest.approx(0.1)
        await s.wait_for("WATCHDOG=1", count=4)
        blocked_at = time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251  (on purpose: a hung loop, as a blocking call makes)
        released_at = time.monotonic()
        await s.wait_for("WATCHDOG=1", count=len(s.times("WATCHDOG=1")) + 3)
    pets = s.times("WATCHDOG=1")
    during = [t for t in pets if blocked_at + 0.02 < t < released_at]
    assert during == [], "the watchdog was petted while the event loop was blocked"
    gaps = [b - a for a, b in itertools.pairwise(pets)]
    assert max(gaps) >= 0.45                            # systemd would have fired (0.1 s)
    normal = [g for g in gaps if g < 0.4]
    assert normal and statistics.median(normal) < 0.08  # otherwise every half interval


async def test_a_failing_liveness_check_withholds_the_pet(
        sink: tuple[NotifySink, str]) -> None:
    s, path = sink
    healthy = [True]
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}
    async with SystemdNotifier(environ=env, alive=lambda: healthy[0]) as sd:
        await s.wait_for("WATCHDOG=1", count=2)
        healthy[0] = False
        await asyncio.sleep(0.1)                        # let the sink thread catch up
        n = len(s.times("WATCHDOG=1"))
        await asyncio.sleep(0.25)
        assert len(s.times("WATCHDOG=1")) == n
        assert sd.withheld >= 2


async def test_abstract_namespace_socket() -> None:
    name = f"edgegw-test-{os.getpid()}-{time.monotonic_ns()}"
    s = NotifySink("\0" + name)
    try:
        async with SystemdNotifier(environ={"NOTIFY_SOCKET": "@" + name}) as sd:
            sd.ready()
            await s.wait_for("READY=1")
    finally:
        s.close()


async def test_a_missing_systemd_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": "50000"}
    with caplog.at_level(logging.WARNING, logger="edgegw.service"):
        async with SystemdNotifier(environ=env) as sd:
            assert sd.ready() is False
            await asyncio.sleep(0.1)
    warnings = [r for r in caplog.records if "notify socket" in r.getMessage()]
    assert len(warnings) == 1


async def test_close_is_safe_twice(sink: tuple[NotifySink, str]) -> None:
    s, path = sink
    sd = SystemdNotifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    async with sd:
        sd.stopping()
    await sd.close()
    await s.wait_for("STOPPING=1")
    await asyncio.sleep(0.05)
    assert len(s.times("STOPPING=1")) == 1
