"""One jittered, capped, exponential backoff for every retry loop (buses, serial ports, the MQTT
link, the store, supervised components).

The delay doubles from ``first`` up to ``cap``; each is spread by ±``jitter`` (a fraction), so
that a district of gateways coming back from a power cut does not retry in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "jittered"]


def jittered(delay: float, jitter: float = 0.5, *, rng: random.Random | None = None) -> float:
    """``delay`` spread uniformly over ``delay * (1 ± jitter)``."""
    r = (rng or random).uniform(1.0 - jitter, 1.0 + jitter)
    return max(0.0, delay * r)


@dataclass
class Backoff:
    """``next()`` gives the delay before the next attempt; ``reset()`` after a success."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.5
    failures: int = 0
    rng: random.Random | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first:
            raise ValueError(f"backoff: need 0 < first <= cap, got {self.first}, {self.cap}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff: jitter must be in [0, 1), got {self.jitter}")

    def peek(self) -> float:
        """The un-jittered delay the next failure would wait."""
        return float(min(self.cap, self.first * self.factor ** self.failures))

    def next(self) -> float:
        delay = self.peek()
        self.failures += 1
        return jittered(delay, self.jitter, rng=self.rng)

    def reset(self) -> None:
        self.failures = 0
