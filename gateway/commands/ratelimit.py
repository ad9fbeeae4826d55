"""A token bucket per command source (the topic a request arrived on).

Pure: the caller passes the monotonic time, so tests drive it without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens at most, refilled at ``rate`` per second; one per request."""

    rate: float
    capacity: float
    tokens: float
    updated: float
    limited: int = 0            # requests refused since the last report
    reported_at: float | None = None

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """Buckets by source, created full on first use. At most ``max_sources`` are kept (the
    least recently used goes first), so a stream of odd topics cannot grow memory."""

    def __init__(self, *, per_minute: float, burst: int, max_sources: int = 256) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def bucket(self, source: str, now: float) -> TokenBucket:
        b = self._buckets.get(source)
        if b is None:
            b = TokenBucket(rate=self.rate, capacity=self.burst, tokens=self.burst, updated=now)
            self._buckets[source] = b
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return b

    def allow(self, source: str, now: float) -> bool:
        return self.bucket(source, now).take(now)
