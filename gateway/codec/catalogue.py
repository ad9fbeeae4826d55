"""The point catalogue: stable point ids, their kinds, units and decimals (docs/protocol.md,
section 3)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

from drivers.modbus.registers import DataType, PointSpec
from drivers.sample import Sample
from gateway.codec.errors import DecodeError

MAX_DECIMALS = 12



class PointKind(StrEnum):
    """The value type a point reports (what the platform should expect)."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STR = "str"


@dataclass(frozen=True, slots=True)
class PointDef:
    """What the catalogue knows of one point. ``decimals`` is the precision its values carry
    (a register scaled by 0.1 has 1): the encoder tries it first for the point's scaled integers.
    """

    device: str
    point: str
    kind: PointKind = PointKind.FLOAT
    unit: str | None = None
    decimals: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.point)


def point_def_from_spec(device: str, spec: PointSpec) -> PointDef:
    """The catalogue entry of a configured Modbus point."""
    if spec.type is DataType.BOOL or spec.table.is_bits:
        kind = PointKind.BOOL
    elif spec.type is DataType.STRING:
        kind = PointKind.STR
    elif spec.type in (DataType.FLOAT32, DataType.FLOAT64):
        kind = PointKind.FLOAT
    elif spec.decimals is None or spec.decimals == 0:
        kind = PointKind.INT
    else:
        kind = PointKind.FLOAT
    return PointDef(device=device, point=spec.name, kind=kind, unit=spec.unit,
                    decimals=spec.decimals)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Stable small integer ids for (device, point): the id of a point is its index in
    ``points`` and is never reassigned within an ``epoch`` (a random number drawn when the
    catalogue is created, so a decoder can tell a rebuilt catalogue from an extended one).
    ``version`` goes up by one with every change (points added or their metadata changed).

    Immutable: :meth:`with_points` returns a new catalogue (or the same one if nothing changed).
    """

    epoch: int
    version: int
    points: tuple[PointDef, ...]
    _index: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {p.key: i for i, p in enumerate(self.points)}
        if len(index) != len(self.points):
            raise ValueError("catalogue: a (device, point) appears twice")
        object.__setattr__(self, "_index", index)

    @classmethod
    def new(cls, *, epoch: int | None = None) -> Catalogue:
        """An empty catalogue with a fresh random epoch (or the one given)."""
        return cls(epoch=secrets.randbits(32) if epoch is None else epoch, version=0, points=())

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, point_id: int) -> PointDef:
        if not 0 <= point_id < len(self.points):
            raise KeyError(point_id)
        return self.points[point_id]

    def id_of(self, device: str, point: str) -> int | None:
        return self._index.get((device, point))

    def with_points(self, defs: Iterable[PointDef]) -> Catalogue:
        """This catalogue with ``defs`` added (new ids at the end) or their metadata updated."""
        points = list(self.points)
        index = dict(self._index)
        changed = False
        for d in defs:
            i = index.get(d.key)
            if i is None:
                index[d.key] = len(points)
                points.append(d)
                changed = True
            elif points[i] != d:
                points[i] = d
                changed = True
        if not changed:
            return self
        return Catalogue(epoch=self.epoch, version=self.version + 1, points=tuple(points))

    def with_samples(self, samples: Iterable[Sample]) -> Catalogue:
        """This catalogue with any point of ``samples`` it lacks added, its kind guessed from
        the value (configured points should be added with :func:`point_def_from_spec` first)."""
        index = self._index
        missing = [s for s in samples if (s.device, s.point) not in index]
        if not missing:
            return self
        new: dict[tuple[str, str], PointDef] = {}
        for s in missing:
            key = (s.device, s.point)
            if key not in new:
                new[key] = PointDef(device=s.device, point=s.point, kind=_kind_of(s.value))
        return self.with_points(new.values())

    # The persisted form and the wire form (inside the state message) are the same document.
    def to_dict(self) -> dict[str, Any]:
        """``{"epoch", "version", "points": [[device, point, kind, unit, decimals], ...]}``;
        a point's id is its position in ``points``."""
        return {
            "epoch": self.epoch,
            "version": self.version,
            "points": [[p.device, p.point, p.kind.value, p.unit, p.decimals]
                       for p in self.points],
        }

    def to_wire(self) -> dict[str, Any]:
        """The catalogue as carried by the birth message (``detail.catalogue``)."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, obj: object) -> Catalogue:
        """Parse :meth:`to_dict`'s form; raises DecodeError naming the bad field."""
        if not isinstance(obj, Mapping):
            raise DecodeError("catalogue: expected an object")
        epoch, version, rows = obj.get("epoch"), obj.get("version"), obj.get("points")
        if not _is_int(epoch) or not 0 <= epoch < 2**32:
            raise DecodeError(f"catalogue: epoch must be an integer 0..2**32-1, got {epoch!r}")
        if not _is_int(version) or version < 0:
            raise DecodeError(f"catalogue: version must be an integer >= 0, got {version!r}")
        if not isinstance(rows, list):
            raise DecodeError("catalogue: points must be a list")
        points = []
        for i, row in enumerate(rows):
            where = f"catalogue: points[{i}]"
            if not isinstance(row, list) or len(row) < 5:
                raise DecodeError(f"{where}: expected [device, point, kind, unit, decimals]")
            device, point, kind, unit, decimals = row[:5]
            if not isinstance(device, str) or not device or not isinstance(point, str) or not point:
                raise DecodeError(f"{where}: device and point must be non-empty strings")
            try:
                pkind = PointKind(kind)
            except ValueError:
                raise DecodeError(
                    f"{where}: kind {kind!r} is not one of {', '.join(PointKind)}") from None
            if unit is not None and not isinstance(unit, str):
                raise DecodeError(f"{where}: unit must be a string or null")
            if decimals is not None and (not _is_int(decimals)
                                         or not 0 <= decimals <= MAX_DECIMALS):
                raise DecodeError(f"{where}: decimals must be null or 0..{MAX_DECIMALS}")
            points.append(PointDef(device=device, point=point, kind=pkind, unit=unit,
                                   decimals=decimals))
        try:
            return cls(epoch=epoch, version=version, points=tuple(points))
        except ValueError as err:
            raise DecodeError(str(err)) from None

    @classmethod
    def from_wire(cls, obj: object) -> Catalogue:
        return cls.from_dict(obj)


def _kind_of(value: object) -> PointKind:
    if isinstance(value, bool):
        return PointKind.BOOL
    if isinstance(value, int):
        return PointKind.INT
    if isinstance(value, str):
        return PointKind.STR
    return PointKind.FLOAT


def _is_int(x: object) -> TypeGuard[int]:
    return type(x) is int
