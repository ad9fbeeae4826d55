"""Whether the wall clock can be believed (``ClockTrust``): the lighting programs need it, and
signed commands are checked against it.

Sources, in the order a gateway usually gets them: a battery-backed RTC (config
``gateway.has_rtc``), the kernel's NTP state (``adjtimex``), a ``sync_time`` command, a GPS fix
from a serial NMEA receiver. Once trusted, the clock stays trusted for the life of the process:
a Pi loses its time only with its power.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ClockTrust", "ntp_synchronized"]

log = logging.getLogger("edgegw.clock")


def ntp_synchronized() -> bool | None:
    """What the kernel says (adjtimex): True synced, False not, None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)     # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != 5)                         # TIME_ERROR: clock not synchronised


@dataclass
class ClockTrust:
    """Whether the wall clock can be believed. Sources: a battery-backed RTC (config), the
    kernel's NTP state, a `sync_time` command, a GPS fix. Once trusted it stays trusted for
    the life of the process: a Pi loses its time only with its power."""

    has_rtc: bool = False
    check_ntp: bool = True
    source: str | None = None
    since: float | None = None

    def __post_init__(self) -> None:
        if self.has_rtc:
            self.source, self.since = "rtc", time.time()

    @property
    def trusted(self) -> bool:
        if self.source is None and self.check_ntp and ntp_synchronized():
            self.source, self.since = "ntp", time.time()
        return self.source is not None

    def mark(self, source: str) -> None:
        if self.source is None:
            log.info("clock trusted (%s)", source)
        self.source, self.since = source, time.time()

    def snapshot(self) -> dict[str, Any]:
        return {"trusted": self.trusted, "source": self.source, "since": self.since}
