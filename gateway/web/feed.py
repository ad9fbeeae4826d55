"""What the page shows of the agent's recent past: its last events, and the tail of its log.

Both are bounded rings filled only while the page is on (the agent keeps no history of its own
for them: events go to the platform, the log to the journal). Log lines are the agent's own
(``edgegw.*``), as the journal has them; the agent never logs a secret, and neither does this.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.events import Emitted

__all__ = ["EventRing", "EventRow", "LogTail"]


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    ts: float
    type: str
    device: str | None
    severity: str | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "type": self.type, "device": self.device,
                "severity": self.severity, "detail": self.detail}


class EventRing:
    """The last ``size`` events, numbered; listeners hear each one as it comes."""

    def __init__(self, size: int = 200, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.rows: deque[EventRow] = deque(maxlen=size)
        self._wall = wall_clock
        self._seq = 0
        self.listeners: list[Callable[[EventRow], None]] = []

    def __call__(self, e: Emitted) -> None:
        self._seq += 1
        row = EventRow(self._seq, self._wall(), str(e.type), e.device,
                       e.severity.value if e.severity is not None else None,
                       dict(e.detail))
        self.rows.append(row)
        for listener in list(self.listeners):
            listener(row)


class LogTail(logging.Handler):
    """The last ``size`` log lines of the agent (``edgegw`` loggers, INFO and above)."""

    def __init__(self, size: int = 300) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                            "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:       # a bad format string must not break the agent's logging
            return
        self.lines.append(text[:2000])

    def attach(self) -> None:
        logging.getLogger("edgegw").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("edgegw").removeHandler(self)
