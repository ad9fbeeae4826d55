"""The request planner: a device's points -> the fewest Modbus reads that cover them.

Pure and synchronous. Points are grouped by table and poll period; points that overlap (two
views of one register, bits of one status word) form one indivisible block; consecutive blocks are
merged into one read while the registers skipped between them are at most `max_gap` and the read
stays within the protocol limit (125 registers, 2000 bits). Greedy left-to-right packing of
blocks is optimal for this problem: the k-th greedy read always ends at or beyond the k-th read of
any valid plan (exchange argument), which the property tests check against a brute-force optimum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drivers.modbus.registers import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    Decoder,
    PointSpec,
    Table,
    decoder,
)

DEFAULT_MAX_GAP = 16


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: `count` registers (or bits) of `table` from `start`."""

    table: Table
    start: int
    count: int
    points: tuple[PointSpec, ...]
    # (point, its decoder, its offset in the answer), built once: the poll path's loop
    decoders: tuple[tuple[PointSpec, Decoder, int], ...] = field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoders", tuple(
            (p, decoder(p), p.address - self.start) for p in self.points))

    @property
    def end(self) -> int:
        return self.start + self.count

    def slice_for(self, point: PointSpec, values: Sequence[int]) -> list[int]:
        """The part of this read's result that holds `point`."""
        off = point.address - self.start
        return list(values[off: off + point.width])


@dataclass(frozen=True, slots=True)
class Plan:
    """The reads for one poll period of one device."""

    period: float
    reads: tuple[ReadRequest, ...]


class PlanError(ValueError):
    """The points cannot be read at all (a block wider than one request allows)."""


def limit_for(table: Table) -> int:
    return MAX_BITS_PER_READ if table.is_bits else MAX_REGISTERS_PER_READ


def _blocks(points: Sequence[PointSpec]) -> list[tuple[int, int, list[PointSpec]]]:
    """Merge overlapping points into disjoint blocks (start, end, points), sorted by start."""
    blocks: list[tuple[int, int, list[PointSpec]]] = []
    for p in sorted(points, key=lambda p: (p.address, p.end)):
        if blocks and p.address < blocks[-1][1]:
            start, end, members = blocks[-1]
            blocks[-1] = (start, max(end, p.end), [*members, p])
        else:
            blocks.append((p.address, p.end, [p]))
    return blocks


def plan_table(
    table: Table, points: Sequence[PointSpec], *, max_gap: int = DEFAULT_MAX_GAP,
    limit: int | None = None,
) -> list[ReadRequest]:
    """Fewest reads covering `points` (all of one table)."""
    if not points:
        return []
    lim = limit if limit is not None else limit_for(table)
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    reads: list[ReadRequest] = []
    cur_start = cur_end = -1
    cur_points: list[PointSpec] = []
    for start, end, members in _blocks(points):
        if end - start > lim:
            names = ", ".join(p.name for p in members)
            raise PlanError(
                f"{table} {start}..{end - 1} ({names}) spans {end - start} "
                f"{'bits' if table.is_bits else 'registers'}, more than one read allows ({lim})"
            )
        if cur_points and start - cur_end <= max_gap and end - cur_start <= lim:
            cur_end = end
            cur_points.extend(members)
            continue
        if cur_points:
            reads.append(ReadRequest(table, cur_start, cur_end - cur_start, tuple(cur_points)))
        cur_start, cur_end, cur_points = start, end, list(members)
    reads.append(ReadRequest(table, cur_start, cur_end - cur_start, tuple(cur_points)))
    return reads


def plan_device(
    points: Iterable[PointSpec], *, default_period: float, max_gap: int = DEFAULT_MAX_GAP,
) -> list[Plan]:
    """One plan per distinct poll period; each plan has the fewest reads for its points."""
    by_period: dict[float, dict[Table, list[PointSpec]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        by_period[p.poll or default_period][p.table].append(p)
    plans = []
    for period in sorted(by_period):
        reads: list[ReadRequest] = []
        for table in Table:
            reads.extend(plan_table(table, by_period[period].get(table, []), max_gap=max_gap))
        plans.append(Plan(period, tuple(reads)))
    return plans


def naive_request_count(points: Iterable[PointSpec]) -> int:
    """What a one-request-per-point gateway sends per cycle (the peers' default)."""
    return sum(1 for _ in points)
