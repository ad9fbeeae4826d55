"""The agent's own health, sent as telemetry of a built-in device named ``gateway``.

Every ``interval`` seconds (a minute by default) :func:`run_health` takes one
:meth:`HealthSampler.sample` and offers it to the uplink like any device's samples, so the
platform stores and graphs it with the rest and it survives an outage in the store. Points:

================== ===== =====================================================================
point              unit  meaning
================== ===== =====================================================================
cpu_percent        %     CPU used by the agent since the last sample (user + system, over
                         wall time; 100 = one core busy)
rss_mb             MiB   resident memory (``VmRSS``)
disk_free_mb       MiB   free space for unprivileged writers on the store's filesystem
store_backlog_points     telemetry points waiting in the store for the broker
store_backlog_bytes B    bytes waiting in the store (telemetry and events payloads)
store_memory_points      points held in memory (while the store fails, or on their way in)
store_ok                 1 while the store works, 0 while it fails (``store_fault`` event)
sd_write_kb        KiB   bytes this process caused to be written to storage since the last
                         sample (``/proc/self/io`` ``write_bytes``): the SD card's wear
cpu_temp_c         degC  the SoC temperature, where the board reports one (absent otherwise)
modbus_errors            timeouts + exception responses + other errors, all buses, since start
serial_errors            framing errors of the serial sensors since start
mqtt_reconnects          broker connections lost since start
component_restarts       restarts of the agent's components since start (``component_failed``)
uptime_s           s     seconds since the agent process started (drops to ~0 on a restart)
================== ===== =====================================================================

The counters (``modbus_errors`` ...) are totals since the agent started, so a lost sample loses
no errors; the platform takes differences (a drop in ``uptime_s`` marks a restart). A value
that cannot be read (no ``/proc``, no thermal zone) is left out of that sample, never sent as 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.sample import Sample

if TYPE_CHECKING:
    from gateway.runtime import Agent

log = logging.getLogger("edgegw.health")

__all__ = ["DEVICE", "HealthSampler", "agent_counters", "run_health"]

DEVICE = "gateway"
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
MIB = 1024 * 1024

Counters = Callable[[], Mapping[str, float]]


class HealthSampler:
    """Reads the agent's health from ``/proc`` and the ``counters`` callable.

    ``counters()`` supplies the agent's own figures (``store_backlog_points``,
    ``store_backlog_bytes``, ``modbus_errors``, ``mqtt_reconnects`` ...), each sent as a point of
    that name; a counter must keep its type (int or float) from sample to sample. CPU and
    write volume are deltas: the first sample covers the time since construction.
    """

    def __init__(self, *, store_path: str | os.PathLike[str], counters: Counters,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 proc: Path = Path("/proc"), thermal: Path | None = THERMAL_ZONE,
                 device: str = DEVICE) -> None:
        self.store_path = Path(store_path)
        self.device = device
        self._counters = counters
        self._clock = clock
        self._mono = monotonic
        self._proc = proc
        self._thermal = thermal
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._last_cpu = self._cpu_seconds()
        self._last_mono = monotonic()
        self._last_written = self._write_bytes()
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ readers
    def _stat_fields(self) -> list[str] | None:
        try:
            raw = (self._proc / "self" / "stat").read_text()
        except OSError:
            return None
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return raw[raw.rindex(")") + 2:].split()

    def _cpu_seconds(self) -> float | None:
        f = self._stat_fields()
        if f is None:
            return None
        return (int(f[11]) + int(f[12])) / self._ticks       # utime + stime (fields 14, 15)

    def _uptime(self) -> float | None:
        f = self._stat_fields()
        try:
            boot_uptime = float((self._proc / "uptime").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if f is None:
            return None
        return boot_uptime - int(f[19]) / self._ticks          # starttime (field 22)

    def _rss_mb(self) -> float | None:
        try:
            for line in (self._proc / "self" / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024        # kB
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _write_bytes(self) -> int | None:
        try:
            for line in (self._proc / "self" / "io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _disk_free_mb(self) -> float | None:
        path = self.store_path
        while not path.exists() and path != path.parent:   # before the store's first open
            path = path.parent
        try:
            st = os.statvfs(path)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize / MIB

    def _cpu_temp(self) -> float | None:
        if self._thermal is None:
            return None
        try:
            return int(self._thermal.read_text().strip()) / 1000    # millidegrees
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ sample
    def sample(self) -> list[Sample]:
        """One reading of every point that can be read now."""
        ts = int(self._clock() * 1000)
        values: dict[str, float | int] = {}

        now = self._mono()
        cpu = self._cpu_seconds()
        elapsed = now - self._last_mono
        if cpu is not None and self._last_cpu is not None and elapsed > 0:
            values["cpu_percent"] = round(100 * (cpu - self._last_cpu) / elapsed, 1)
        self._last_cpu, self._last_mono = cpu, now

        rss = self._rss_mb()
        if rss is not None:
            values["rss_mb"] = round(rss, 1)
        free = self._disk_free_mb()
        if free is not None:
            values["disk_free_mb"] = round(free, 1)

        written = self._write_bytes()
        if written is not None and self._last_written is not None:
            values["sd_write_kb"] = round(max(0, written - self._last_written) / 1024, 1)
        self._last_written = written

        temp = self._cpu_temp()
        if temp is not None:
            values["cpu_temp_c"] = round(temp, 1)
        uptime = self._uptime()
        if uptime is not None:
            values["uptime_s"] = int(uptime)

        try:
            counters = self._counters()
        except Exception as err:
            if "counters" not in self._warned:
                self._warned.add("counters")
                log.warning("health: the agent's counters could not be read: %s", err)
            counters = {}
        for name, value in counters.items():
            values[name] = value

        return [Sample(device=self.device, point=name, ts=ts, value=value)
                for name, value in values.items()]


def agent_counters(agent: Agent) -> dict[str, int]:
    """The agent's figures for :class:`HealthSampler`, from its one status
    (:meth:`gateway.status.AgentStatus.health_counters`)."""
    return agent.status().health_counters()


async def run_health(sampler: HealthSampler, offer: Callable[[list[Sample]], None],
                     interval: float, *, first_after: float | None = None) -> None:
    """Offer a health sample every ``interval`` seconds (the first after ``first_after``,
    default one interval) until cancelled. A failing sample or offer is logged, not fatal."""
    loop = asyncio.get_running_loop()
    next_at = loop.time() + (interval if first_after is None else first_after)
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at += interval
        if next_at < loop.time():          # the loop was held up: do not burst to catch up
            next_at = loop.time() + interval
        try:
            offer(sampler.sample())
        except Exception:
            log.exception("health: sample not offered")
