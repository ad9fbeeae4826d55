"""What a check is: its status, its result with a hint, the options, the report."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from drivers.modbus.registers import PointSpec, Value
from gateway import __version__
from provisioning.ports import Holder

if TYPE_CHECKING:
    from drivers.modbus.bus import ModbusBus
    from drivers.serial.reader import ReaderStats
    from gateway.config import Config

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
    # progress, for a page that shows the steps as they go: each line as it is decided, and
    # what is being checked now
    on_result: Callable[[CheckResult], None] | None = None
    on_phase: Callable[[str], None] | None = None


class LiveSite(Protocol):
    """The running agent, for a check run inside it (the technician's page, which cannot stop
    the agent that serves it): its config, its own buses and serial readers, its clock, and
    the lamps through its command path. The agent implements it (gateway/sitecheck.py);
    nothing here imports the agent."""

    @property
    def config(self) -> Config: ...

    def agent_detail(self) -> str:
        """How the agent runs, for the checklist's agent line."""
        ...

    def modbus_bus(self, name: str) -> ModbusBus | None:
        """The agent's bus of that name (polling as usual; reads queue ahead of polls)."""
        ...

    def serial_status(self, bus: str) -> tuple[ReaderStats, dict[str, Value]] | None:
        """A serial sensor's reader statistics and its latest good values."""
        ...

    def clock(self) -> tuple[bool, str | None]:
        """(trusted, how) of the agent's lighting clock."""
        ...

    def point_spec(self, device: str, point: str) -> PointSpec | None: ...

    async def read_point(self, device: str, point: str) -> Value | None: ...

    async def write_point(self, device: str, point: str, value: Value) -> None: ...

    def hold_lamps(self, groups: list[str]) -> AbstractAsyncContextManager[None]:
        """While held, the lighting leaves these groups' outputs to the lamp test, and overrides
        and rules changes wait; on leaving, the lighting drives them again at once."""
        ...


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
