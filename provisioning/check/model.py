"""What a check is: its status, its result with a hint, the options, the report."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from drivers.modbus.registers import Value
from gateway import __version__
from provisioning.ports import Holder

CERT_WARN_DAYS = 30
CLOCK_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)   # a clock before this is surely unset
LAMP_LEVELS = (0.0, 50.0, 100.0)
SERVICE_USER = "edgegw"        # the user deploy/install.sh runs the agent as


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"       # passes; worth a look
    FAIL = "fail"
    SKIP = "skip"       # does not apply to this config


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One line of the checklist."""

    key: str                          # stable id: "config", "device:lamp-1", "broker:URL"...
    title: str
    status: Status
    detail: str
    hint: str | None = None           # what to do (failures and warnings)
    started_at: float = 0.0           # wall-clock time the check began (Unix seconds)
    duration_s: float = 0.0
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": str(self.status),
                "detail": self.detail, "hint": self.hint,
                "started_at": _iso(self.started_at), "duration_s": round(self.duration_s, 3),
                "data": dict(self.data)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOptions:
    """How the checks run. The probes of the machine itself are injectable for tests."""

    timeout: float = 5.0                  # broker connect, a Modbus answer, a serial frame
    lamp_test: bool = False
    settle: float = 2.0                   # seconds a driver gets to reach a new level
    lamp_levels: tuple[float, ...] = LAMP_LEVELS
    ntp_probe: Callable[[], str | None] | None = None        # "NTP synchronised (...)" or None
    # None: the agent of the checked config (its control socket, or `run` with this file)
    agent_probe: Callable[[], tuple[Holder, ...]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    config_path: str
    gateway: Mapping[str, Any]            # id, site, groups, location (what the config says)
    config_digest: str | None
    started_at: float
    finished_at: float
    results: tuple[CheckResult, ...]
    versions: Mapping[str, str]
    host: str

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAIL)

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def verdict(self) -> Status:
        return Status.PASS if self.passed else Status.FAIL

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for r in self.results if r.status is s) for s in Status}


# ------------------------------------------------------------------------------- helpers
def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


class _Timer:
    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = time.monotonic()

    def result(self, key: str, title: str, status: Status, detail: str, *,
               hint: str | None = None, data: Mapping[str, Any] | None = None) -> CheckResult:
        return CheckResult(key=key, title=title, status=status, detail=detail, hint=hint,
                           started_at=self.wall, duration_s=time.monotonic() - self.mono,
                           data=dict(data or {}))


def _fmt_value(value: Value | None, unit: str | None = None) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def versions() -> dict[str, str]:
    out = {"edgegw": __version__, "python": platform.python_version(),
           "os": f"{platform.system()} {platform.release()}", "machine": platform.machine()}
    for dist in ("pymodbus", "pyserial", "aiomqtt", "paho-mqtt", "cryptography"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
