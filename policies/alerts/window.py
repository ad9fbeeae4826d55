"""A time window of readings with bounded memory: the history behind rate and mean rules.

Readings go into buckets ``width = span / BUCKETS`` wide. While readings come slower than that
each bucket holds one reading and every statistic is exact; faster readings share a bucket that
keeps their sum, count, minimum and maximum, so a one-hour window of one-second readings holds
at most ``BUCKETS + 2`` buckets, not 3600 readings. A bucket leaves the window when its newest
reading is older than the span; until then all of it counts, so the window may reach back up to
one bucket width further than `span` (0.4 % of the span with the default).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

#: buckets per window: the memory bound and the resolution of long windows
BUCKETS = 240


@dataclass(slots=True)
class Bucket:
    first: int      # ms of its oldest reading
    last: int       # ms of its newest reading
    total: float
    count: int
    low: float
    high: float
    low_at: int     # ms of the lowest reading
    high_at: int    # ms of the highest reading


class TimeWindow:
    """The readings of the last `span_ms` milliseconds, downsampled to at most ~`buckets`."""

    __slots__ = ("_buckets", "span_ms", "width_ms")

    def __init__(self, span_ms: int, *, buckets: int = BUCKETS) -> None:
        if span_ms <= 0 or buckets < 1:
            raise ValueError(f"a window needs a positive span and buckets, got {span_ms} ms, "
                             f"{buckets}")
        self.span_ms = span_ms
        self.width_ms = max(1, math.ceil(span_ms / buckets))
        self._buckets: deque[Bucket] = deque()

    def __len__(self) -> int:
        """The number of buckets held (the memory used)."""
        return len(self._buckets)

    def clear(self) -> None:
        self._buckets.clear()

    def add(self, ts: int, value: float) -> None:
        """Add a reading (timestamps must not go backwards) and forget what left the window."""
        b = self._buckets[-1] if self._buckets else None
        if b is not None and ts - b.first < self.width_ms:
            b.last = ts
            b.total += value
            b.count += 1
            if value < b.low:
                b.low, b.low_at = value, ts
            if value >= b.high:
                b.high, b.high_at = value, ts
        else:
            self._buckets.append(Bucket(ts, ts, value, 1, value, value, ts, ts))
        self.evict(ts)

    def evict(self, now: int) -> None:
        """Drop the buckets whose newest reading is older than ``now - span``."""
        edge = now - self.span_ms
        while self._buckets and self._buckets[0].last < edge:
            self._buckets.popleft()

    @property
    def count(self) -> int:
        return sum(b.count for b in self._buckets)

    @property
    def covered_ms(self) -> int:
        """From the oldest to the newest reading held."""
        if not self._buckets:
            return 0
        return self._buckets[-1].last - self._buckets[0].first

    def mean(self) -> float | None:
        n = self.count
        return None if n == 0 else sum(b.total for b in self._buckets) / n

    def low(self) -> tuple[float, int] | None:
        """The lowest reading and when it was taken (the latest of equals)."""
        if not self._buckets:
            return None
        b = min(reversed(self._buckets), key=lambda b: b.low)
        return b.low, b.low_at

    def high(self) -> tuple[float, int] | None:
        """The highest reading and when it was taken (the latest of equals)."""
        if not self._buckets:
            return None
        b = max(reversed(self._buckets), key=lambda b: b.high)
        return b.high, b.high_at

    # ------------------------------------------------------------------------ persistence
    def to_json(self) -> list[list[float | int]]:
        return [[b.first, b.last, b.total, b.count, b.low, b.high, b.low_at, b.high_at]
                for b in self._buckets]

    def load(self, rows: Any) -> None:
        """Replace the content with rows from :meth:`to_json` (raises ValueError if malformed)."""
        if not isinstance(rows, list):
            raise ValueError("window: expected a list of buckets")
        out: deque[Bucket] = deque()
        for row in rows:
            if not isinstance(row, list) or len(row) != 8:
                raise ValueError(f"window: bad bucket {row!r}")
            first, last, total, count, low, high, low_at, high_at = row
            out.append(Bucket(int(first), int(last), float(total), int(count), float(low),
                              float(high), int(low_at), int(high_at)))
        self._buckets = out
