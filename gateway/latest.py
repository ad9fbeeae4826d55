"""The in-process table of latest values: one poll per device, fanned out to every consumer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from drivers.sample import Quality, Sample

Listener = Callable[[list[Sample]], None]


Latest = Sample
"""A point's last sample: its ``value``, ``ts`` and ``quality`` (kept as it came, no copy)."""


class LatestValues:
    """(device, point) -> the last sample seen; listeners see every update batch."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Latest] = {}
        self._good: dict[tuple[str, str], Latest] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def update(self, samples: Iterable[Sample]) -> None:
        batch = list(samples)
        values, good = self._values, self._good
        for s in batch:           # the sample itself: it has the value, ts and quality
            key = (s.device, s.point)
            values[key] = s
            if s.quality is Quality.GOOD:
                good[key] = s
        for listener in list(self._listeners):
            listener(batch)

    def get(self, device: str, point: str) -> Latest | None:
        return self._values.get((device, point))

    def good(self, device: str, point: str) -> Latest | None:
        """The last value read with good quality (what decisions should use)."""
        return self._good.get((device, point))

    def items(self) -> list[tuple[tuple[str, str], Latest]]:
        return sorted(self._values.items())

    def __len__(self) -> int:
        return len(self._values)
