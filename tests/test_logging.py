"""Logs a technician can filter: syslog priorities under journald, samples only on request."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.cli import JournalFormatter, under_journald

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
