"""Logs a technician can filter: syslog priorities under journald, samples only on request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.journal import JournalFormatter, JournalHandler, available, under_journald

ROOT = Path(__file__).resolve().parent.parent


def _record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("edgegw.store", level, __file__, 1, msg, None, exc_info)


def test_every_line_carries_its_priority() -> None:
    f = JournalFormatter()
    assert f.format(_record(logging.ERROR, "store failed")) == "<3>edgegw.store: store failed"
    assert f.format(_record(logging.WARNING, "w")).startswith("<4>")
    assert f.format(_record(logging.INFO, "i")).startswith("<6>")
    assert f.format(_record(logging.DEBUG, "d")).startswith("<7>")
    lines = f.format(_record(logging.CRITICAL, "crash", exc=True)).splitlines()
    assert len(lines) > 3 and all(line.startswith("<2>") for line in lines)   # the traceback


def test_journald_is_recognised_by_its_stream(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as err:
        st = os.fstat(err.fileno())
        old = sys.stderr
        sys.stderr = err
        try:
            assert under_journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
            assert not under_journald({"JOURNAL_STREAM": "1:2"})   # inherited by a child
            assert not under_journald({})
        finally:
            sys.stderr = old


def test_the_agent_under_journald_logs_priorities_and_no_samples(tmp_path: Path) -> None:
    cfg = {"gateway": {"id": "gw-log"},
           # nothing listens on the discard port: a warning is logged
           "mqtt": {"url": "mqtt://127.0.0.1:9", "connect_timeout": 1},
           "store": {"path": str(tmp_path / "s.db")},
           "service": {"control_socket": str(tmp_path / "c.sock"), "connect_jitter": 0},
           "gpio": {"factory": "mock", "inputs": [{"name": "door", "pin": 5}]}}
    path = tmp_path / "gw.yaml"
    path.write_text(json.dumps(cfg))
    log = tmp_path / "journal"
    with log.open("w") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config",
                                 str(path)], stderr=err, stdout=subprocess.DEVNULL, env=env,
                                cwd=ROOT)
        deadline = time.monotonic() + 30
        while "cannot connect" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    lines = [line for line in log.read_text().splitlines() if line]
    assert lines and all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in lines)
    assert any(line.startswith("<4>edgegw.link: mqtt: cannot connect") for line in lines)
    assert not any("door.contact" in line for line in lines)       # no sample lines


# --- the journal's native protocol: fields a technician can filter on ----------------------
def parse_datagram(data: bytes) -> dict[str, str]:
    """journald's side of https://systemd.io/JOURNAL_NATIVE_PROTOCOL/ (written from the spec)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            value = data[start:start + size]
            assert data[start + size:start + size + 1] == b"\n"
            i = start + size + 1
        out[key.decode()] = value.decode()
    return out


@contextlib.contextmanager
def journal_socket(path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()


def test_records_reach_the_journal_with_their_fields(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    assert not available(path)
    with journal_socket(path) as journal:
        assert available(path)
        handler = JournalHandler(path)
        handler.handle(_record(logging.WARNING, "lamp-2 marked offline"))
        record = _record(logging.ERROR, "crashed", exc=True)
        record.device, record.bus, record.component = "lamp-2", "rs485-1", None
        handler.handle(record)
        plain = parse_datagram(journal.recv(65536))
        full = parse_datagram(journal.recv(65536))
        handler.close()
    assert plain["MESSAGE"] == "edgegw.store: lamp-2 marked offline"
    assert plain["PRIORITY"] == "4" and plain["SYSLOG_IDENTIFIER"] == "edgegw"
    assert plain["LOGGER"] == "edgegw.store" and plain["CODE_LINE"] == "1"
    assert "EDGEGW_DEVICE" not in plain
    # a traceback spans lines: sent whole, with its length (the binary form of a field)
    assert full["PRIORITY"] == "3" and full["MESSAGE"].startswith("edgegw.store: crashed\n")
    assert "RuntimeError: boom" in full["MESSAGE"]
    assert full["EDGEGW_DEVICE"] == "lamp-2" and full["EDGEGW_BUS"] == "rs485-1"
    assert "EDGEGW_COMPONENT" not in full


def test_a_journal_that_refuses_gets_the_line_on_stderr_instead(tmp_path: Path) -> None:
    got: list[str] = []

    class Fallback(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(JournalFormatter().format(record))

    handler = JournalHandler(tmp_path / "gone.sock", fallback=Fallback())
    handler.handle(_record(logging.WARNING, "store full"))
    handler.close()
    assert got == ["<4>edgegw.store: store full"] and handler.fell_back == 1


async def test_a_device_going_offline_is_logged_with_its_device_bus_and_event(
        tmp_path: Path) -> None:
    """The bus's own log lines through the journal handler: filterable by device and bus."""
    from drivers.modbus.bus import BusKind, BusSettings, DeviceSettings, ModbusBus
    from simulators.devices import Fault, SimulatedDevice
    from simulators.modbus_server import ModbusTcpSim

    lamp = SimulatedDevice.from_profile("led-driver", unit=1, name="lamp-1")
    path = tmp_path / "journal.sock"
    bus_log = logging.getLogger("drivers.modbus.bus")
    with journal_socket(path) as journal:
        handler = JournalHandler(path)
        bus_log.addHandler(handler)
        sim = ModbusTcpSim([lamp], port=0)
        await sim.start()
        try:
            lamp.fault = Fault.silent()
            settings = BusSettings(name="street-tcp", kind=BusKind.TCP, host="127.0.0.1",
                                   port=sim.port, timeout=0.1, retries=0)
            device = DeviceSettings(name="lamp-1", unit=1, poll=0.05,
                                    points=tuple(lamp.points.values()))
            async with ModbusBus(settings, [device],
                                 on_samples=lambda batch: None):
                seen: list[dict[str, str]] = []
                while not any(f.get("EDGEGW_EVENT") == "device_offline" for f in seen):
                    seen.append(parse_datagram(
                        await asyncio.to_thread(journal.recv, 65536)))
        finally:
            bus_log.removeHandler(handler)
            handler.close()
            await sim.close()
    offline = next(f for f in seen if f.get("EDGEGW_EVENT") == "device_offline")
    assert offline["EDGEGW_DEVICE"] == "lamp-1" and offline["EDGEGW_BUS"] == "street-tcp"
    assert offline["PRIORITY"] == "4" and "lamp-1 marked offline" in offline["MESSAGE"]
    assert all(f["EDGEGW_BUS"] == "street-tcp" for f in seen)
