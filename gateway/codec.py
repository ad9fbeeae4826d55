"""The uplink's wire formats: telemetry batches, the point catalogue, events, state, commands.

Pure functions over frozen dataclasses: no I/O, no clock. ``docs/protocol.md`` describes every
byte; this module is the reference implementation of that document.

Telemetry batch (topic ``{prefix}/{gateway}/telemetry``)::

    byte 0      format version (1)
    byte 1      flags: bits 0-1 compression (0 none, 1 zlib, 2 zstd), bits 2-7 zero
    bytes 2..   the body, compressed as flagged: one msgpack array
                [epoch, cat_version, seq, base_ts, times, ncols, ids, codes, refs, values, quality]

The body is columnar. Samples are grouped by point id into columns (sorted by time); columns with
the same timestamps (all points of one device read together) share one time vector. Point ids
come from the :class:`Catalogue`, which the birth (state) message carries as Sparkplug carries its
aliases. Numbers travel as exact integers: a float column with ``d`` decimals sends
``round(v * 10**d)`` (23.4 -> 234) and only when dividing back gives the very same float; values
are delta-encoded along the column and the first value of a column may be a delta against the
first value of an earlier column of the same point name (``refs``), so a street of similar sensors
costs little. Anything that cannot be sent exactly that way (NaN, strings, bools, None, floats
with no short decimal form) goes in a raw column as plain msgpack values. Nothing is lossy.

Decoding never lets a msgpack, zstd or zlib exception escape: any bad payload raises
:class:`DecodeError` naming what was wrong.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple, TypeGuard

import msgpack

from drivers.modbus.registers import DataType, PointSpec
from drivers.sample import Quality, Sample
from gateway.errors import GatewayError

try:  # zstandard is a hard dependency, but the codec degrades to zlib without it (DESIGN.md 3)
    import zstandard

    HAVE_ZSTD = True
except ImportError:  # pragma: no cover - exercised only on a broken install
    HAVE_ZSTD = False

__all__ = [
    "FORMAT_VERSION",
    "BatchInfo",
    "Catalogue",
    "CatalogueMismatch",
    "CodecError",
    "CommandErrorInfo",
    "CommandRequest",
    "CommandResponse",
    "Compression",
    "DecodeError",
    "DecodedBatch",
    "DecodedPoint",
    "EncodeError",
    "Encoding",
    "Event",
    "PointDef",
    "PointKind",
    "RequestError",
    "Severity",
    "State",
    "TopicKind",
    "TopicRef",
    "Topics",
    "decode_batch",
    "decode_event",
    "decode_request",
    "decode_response",
    "decode_state",
    "encode_batch",
    "encode_event",
    "encode_request",
    "encode_response",
    "encode_state",
    "parse_topic",
    "point_def_from_spec",
    "read_batch_info",
    "sniff_encoding",
]

FORMAT_VERSION = 1
MAX_BODY_BYTES = 16 * 1024 * 1024   # a decompressed body larger than this is refused (zip bomb)
MAX_DECIMALS = 12
_INT_LIMIT = 2**62                  # integer columns stay inside this so every delta fits int64
_BODY_FIELDS = 11
_ZSTD_SMALL = 4 * 1024              # bodies below this get zstd's level 19 (~0.3 ms at most)


# =================================================================================== errors
class CodecError(GatewayError, ValueError):
    """A payload could not be encoded or decoded."""


class EncodeError(CodecError):
    """Samples or a message could not be encoded (unknown point, unsupported value)."""


class DecodeError(CodecError):
    """A payload is corrupt, truncated, of an unknown version or needs a catalogue we lack."""


class CatalogueMismatch(DecodeError):
    """A batch refers to a catalogue (epoch or point ids) that the decoder does not have."""


class RequestError(DecodeError):
    """A command request is unusable. ``request_id`` is its id when it could be read."""

    def __init__(self, message: str, *, request_id: str | int | None,
                 encoding: Encoding) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.encoding = encoding


# ================================================================================ catalogue
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
        new: dict[tuple[str, str], PointDef] = {}
        for s in samples:
            key = (s.device, s.point)
            if key not in self._index and key not in new:
                new[key] = PointDef(device=s.device, point=s.point, kind=_kind_of(s.value))
        return self.with_points(new.values()) if new else self

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


# ============================================================================ batch layout
class Compression(IntEnum):
    """The compression id in bits 0-1 of a batch's flags byte."""

    NONE = 0
    ZLIB = 1
    ZSTD = 2

    @classmethod
    def parse(cls, name: str | Compression) -> Compression:
        if isinstance(name, Compression):
            return name
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"compression {name!r} is not one of zstd, zlib, none") from None


class _Code(IntEnum):
    """How a column's values are carried (one small integer per column in ``codes``)."""

    RAW = 0        # plain msgpack values: nil, bool, int, float, str
    INT = 1        # integers, delta-encoded, decoded as int
    DEC = 16       # DEC + d: floats as round(v * 10**d), delta-encoded, decoded as n / 10**d
    F32 = 32       # F32 + d: float32 values as DEC + d, decoded via float32(n / 10**d)


_QUALITY_CODE = {Quality.TIMEOUT: 1, Quality.EXCEPTION: 2, Quality.BAD_DATA: 3,
                 Quality.UNAVAILABLE: 4}
_QUALITY_OF = {code: q for q, code in _QUALITY_CODE.items()}
_POW10 = [10**d for d in range(MAX_DECIMALS + 1)]


class DecodedPoint(NamedTuple):
    device: str
    point: str
    ts: int                    # Unix time in milliseconds
    value: float | int | bool | str | None
    quality: Quality


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A batch's header fields, readable without a catalogue."""

    version: int
    compression: Compression
    catalogue_epoch: int
    catalogue_version: int
    seq: int
    base_ts: int
    n_points: int


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A decoded telemetry batch. ``points`` are in time order, then catalogue order."""

    seq: int
    base_ts: int
    catalogue_epoch: int
    catalogue_version: int
    compression: Compression
    points: tuple[DecodedPoint, ...]


# --------------------------------------------------------------------------- compression
_local = threading.local()   # zstd contexts are not safe for concurrent use: one per thread


def _zstd_compressor(level: int) -> Any:
    key = f"zc{level}"
    c = getattr(_local, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level)
        setattr(_local, key, c)
    return c


def _zstd_decompressor() -> Any:
    d = getattr(_local, "zd", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _local.zd = d
    return d


def _compress(body: bytes, compression: Compression) -> tuple[Compression, bytes]:
    if compression is Compression.ZSTD and not HAVE_ZSTD:
        compression = Compression.ZLIB
    if compression is Compression.ZSTD:
        level = 19 if len(body) < _ZSTD_SMALL else 9
        packed = _zstd_compressor(level).compress(body)
    elif compression is Compression.ZLIB:
        packed = zlib.compress(body, 9)
    else:
        return Compression.NONE, body
    if len(packed) >= len(body):       # small bodies can grow: send them as they are
        return Compression.NONE, body
    return compression, packed


def _decompress(data: bytes, compression: Compression) -> bytes:
    if compression is Compression.NONE:
        return data
    if compression is Compression.ZSTD:
        if not HAVE_ZSTD:
            raise DecodeError("the batch is zstd-compressed but the zstandard module is missing")
        try:
            # max_output_size only bounds frames that do not declare their size: check both
            size = zstandard.get_frame_parameters(data).content_size
            if size != zstandard.CONTENTSIZE_UNKNOWN and size > MAX_BODY_BYTES:
                raise DecodeError(f"zstd: the body is larger than {MAX_BODY_BYTES} bytes")
            out: bytes = _zstd_decompressor().decompress(data, max_output_size=MAX_BODY_BYTES)
        except DecodeError:
            raise
        except Exception as err:  # ZstdError, and MemoryError for absurd frame headers
            raise DecodeError(f"zstd: corrupt or truncated data ({err})") from None
        return out
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_BODY_BYTES)
    except zlib.error as err:
        raise DecodeError(f"zlib: corrupt data ({err})") from None
    if d.unconsumed_tail:
        raise DecodeError(f"zlib: the body is larger than {MAX_BODY_BYTES} bytes")
    if not d.eof:
        raise DecodeError("zlib: truncated data")
    if d.unused_data:
        raise DecodeError("zlib: trailing bytes after the compressed body")
    return out


# ------------------------------------------------------------------------------- encoding
def _float32_exact(values: list[float]) -> bool:
    return array("f", values).tolist() == values


def _scaled(values: list[float], start: int, *, f32: bool) -> tuple[int, list[int]] | None:
    """The smallest ``d >= start`` such that every value is exactly ``n / 10**d`` (read back
    through float32 when ``f32``) with integer ``n`` inside the int64-safe range."""
    for d in range(start, MAX_DECIMALS + 1):
        p = _POW10[d]
        try:
            ints = [round(v * p) for v in values]
        except (OverflowError, ValueError):
            return None
        if max(ints) >= _INT_LIMIT or min(ints) <= -_INT_LIMIT:
            return None
        back = [n / p for n in ints]
        if f32:
            back = array("f", back).tolist()
        if back == values:
            if 0 in ints and any(v == 0.0 and math.copysign(1.0, v) < 0 for v in values):
                return None                                 # -0.0 would come back as 0.0
            return d, ints
    return None


def _column(values: list[Any], decimals: int | None) -> tuple[int, list[Any]]:
    """(code, wire values before delta coding) of one column."""
    first = type(values[0])
    if first is int and all(type(v) is int for v in values):
        if all(-_INT_LIMIT < v < _INT_LIMIT for v in values):
            return _Code.INT, values
        return _Code.RAW, values
    if first is float and all(type(v) is float for v in values):
        if all(map(math.isfinite, values)):
            start = decimals if decimals is not None and 0 <= decimals <= MAX_DECIMALS else 0
            found = _scaled(values, start, f32=False)
            if found is not None:
                return _Code.DEC + found[0], found[1]
            if _float32_exact(values):
                found = _scaled(values, 0, f32=True)
                if found is not None:
                    return _Code.F32 + found[0], found[1]
        return _Code.RAW, values
    return _Code.RAW, values


def _check_raw(values: list[Any], d: PointDef) -> None:
    for v in values:
        if v is None or type(v) in (bool, float, str):
            continue
        if type(v) is int:
            if not -(2**63) <= v < 2**64:
                raise EncodeError(f"{d.device}.{d.point}: integer {v} does not fit 64 bits")
            continue
        raise EncodeError(f"{d.device}.{d.point}: unsupported value type "
                          f"{type(v).__name__} ({v!r})")


def encode_batch(seq: int, samples: Sequence[Sample], catalogue: Catalogue, *,
                 compression: Compression | str = Compression.ZSTD) -> bytes:
    """Encode one telemetry batch (see the module docstring and docs/protocol.md).

    Every sample's point must be in ``catalogue`` (add new ones with
    :meth:`Catalogue.with_points` and publish the new state message first). Falls back to no
    compression when compressing would not make the payload smaller, and to zlib when zstd is
    not installed. Raises EncodeError for an empty batch, an unknown point, a bad timestamp or
    a value of an unsupported type.
    """
    comp = Compression.parse(compression)
    if not samples:
        raise EncodeError("an empty batch cannot be encoded")
    if not _is_int(seq) or not 0 <= seq < 2**63:
        raise EncodeError(f"seq must be an integer 0..2**63-1, got {seq!r}")
    index = catalogue._index
    cols: dict[int, list[Sample]] = {}
    for s in samples:
        ts = s.ts
        if type(ts) is not int or not -_INT_LIMIT < ts < _INT_LIMIT:
            raise EncodeError(f"{s.device}.{s.point}: timestamp {ts!r} is not an integer "
                              "number of milliseconds")
        pid = index.get((s.device, s.point))
        if pid is None:
            raise EncodeError(
                f"{s.device}.{s.point} is not in the catalogue (epoch {catalogue.epoch} "
                f"version {catalogue.version}): add it and publish the state message first")
        col = cols.get(pid)
        if col is None:
            cols[pid] = [s]
        else:
            col.append(s)

    groups: dict[tuple[int, ...], list[int]] = {}
    for pid, col in cols.items():
        if len(col) > 1:
            col.sort(key=_ts_of)
        tvec = tuple([s.ts for s in col])
        g = groups.get(tvec)
        if g is None:
            groups[tvec] = [pid]
        else:
            g.append(pid)

    order = sorted(groups)
    base_ts = order[0][0]
    times: list[list[int]] = []
    ncols: list[int] = []
    ids: list[int] = []
    codes: list[int] = []
    refs: list[int] = []
    values: list[Any] = []
    quality: list[list[int]] = []
    first_of: dict[tuple[str, int], tuple[int, int]] = {}   # (point name, code) -> (col, first)
    prev_first_ts = base_ts
    prev_id = 0
    col_no = 0
    points = catalogue.points
    for tvec in order:
        times.append([tvec[0] - prev_first_ts, *[b - a for a, b in itertools.pairwise(tvec)]])
        prev_first_ts = tvec[0]
        pids = sorted(groups[tvec])
        ncols.append(len(pids))
        for pid in pids:
            col = cols[pid]
            pdef = points[pid]
            ids.append(pid - prev_id)
            prev_id = pid
            for k, s in enumerate(col):
                if s.quality != Quality.GOOD:
                    quality.append([len(values) + k, _QUALITY_CODE[Quality(s.quality)]])
            raw = [s.value for s in col]
            # None (a failed read) does not stop a column being numeric: it travels as nil
            # and the delta chain skips it
            nulls = raw.count(None)
            present = [v for v in raw if v is not None] if 0 < nulls < len(raw) else raw
            code, wire = _column(present, pdef.decimals)
            codes.append(code)
            if code == _Code.RAW:
                _check_raw(raw, pdef)
                refs.append(0)
                values.extend(raw)
            else:
                first = wire[0]
                key = (pdef.point, code)
                ref = first_of.get(key)
                first_of[key] = (col_no, first)
                head = first
                if ref is not None and abs(first - ref[1]) < abs(first):
                    refs.append(col_no - ref[0])
                    head = first - ref[1]
                else:
                    refs.append(0)
                deltas = [head, *[b - a for a, b in itertools.pairwise(wire)]]
                if present is raw:
                    values.extend(deltas)
                else:
                    it = iter(deltas)
                    values.extend([None if v is None else next(it) for v in raw])
            col_no += 1

    body = msgpack.packb(
        [catalogue.epoch, catalogue.version, seq, base_ts, times, ncols, ids, codes, refs,
         values, quality],
        use_bin_type=True)
    used, packed = _compress(body, comp)
    return bytes((FORMAT_VERSION, int(used))) + packed


def _ts_of(s: Sample) -> int:
    return s.ts


# ------------------------------------------------------------------------------- decoding
def _open(payload: bytes) -> tuple[Compression, list[Any]]:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a batch must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) < 3:
        raise DecodeError(f"truncated batch: {len(payload)} bytes, a batch has at least 3")
    version, flags = payload[0], payload[1]
    if version != FORMAT_VERSION:
        hint = " (a JSON text?)" if version in (0x7B, 0x5B) else ""
        raise DecodeError(
            f"unknown batch format version {version}{hint}: this decoder reads version "
            f"{FORMAT_VERSION}")
    if flags & 0xFC:
        raise DecodeError(f"unknown flags 0x{flags:02x} (bits 2-7 must be zero in version 1)")
    if flags & 0x03 == 3:
        raise DecodeError("unknown compression id 3 (0 none, 1 zlib, 2 zstd)")
    comp = Compression(flags & 0x03)
    body = _decompress(payload[2:], comp)
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except msgpack.ExtraData:
        raise DecodeError("corrupt batch body: trailing bytes after the msgpack array") from None
    except Exception as err:  # msgpack raises a zoo of types (ValueError, TypeError, ...)
        raise DecodeError(f"corrupt or truncated batch body (msgpack: {err})") from None
    if not isinstance(obj, list) or len(obj) < _BODY_FIELDS:
        raise DecodeError(f"corrupt batch body: expected an array of {_BODY_FIELDS} fields")
    return comp, obj


def _ints(obj: object, name: str) -> list[int]:
    if not isinstance(obj, list) or not all(type(x) is int for x in obj):
        raise DecodeError(f"corrupt batch body: `{name}` must be a list of integers")
    return obj


def _header(obj: list[Any]) -> tuple[int, int, int, int]:
    epoch, version, seq, base_ts = obj[:4]
    for name, v in (("epoch", epoch), ("catalogue version", version), ("seq", seq),
                    ("base_ts", base_ts)):
        if not _is_int(v):
            raise DecodeError(f"corrupt batch body: {name} must be an integer, got {v!r}")
    return epoch, version, seq, base_ts


def read_batch_info(payload: bytes) -> BatchInfo:
    """A batch's header (seq, catalogue it needs, point count) without a catalogue."""
    comp, obj = _open(payload)
    epoch, version, seq, base_ts = _header(obj)
    times, ncols, ids = obj[4], _ints(obj[5], "ncols"), _ints(obj[6], "ids")
    if not isinstance(times, list) or len(times) != len(ncols):
        raise DecodeError("corrupt batch body: `times` and `ncols` differ in length")
    if any(n < 1 for n in ncols) or sum(ncols) != len(ids):
        raise DecodeError("corrupt batch body: `ncols` does not match the number of columns")
    n = 0
    for tv, nc in zip(times, ncols, strict=True):
        if not isinstance(tv, list):
            raise DecodeError("corrupt batch body: each time vector must be a list")
        n += len(tv) * nc
    return BatchInfo(version=FORMAT_VERSION, compression=comp, catalogue_epoch=epoch,
                     catalogue_version=version, seq=seq, base_ts=base_ts, n_points=n)


def decode_batch(payload: bytes, catalogue: Catalogue | None) -> DecodedBatch:
    """Decode a telemetry batch with the sender's catalogue.

    Raises :class:`CatalogueMismatch` when ``catalogue`` is missing, of another epoch or lacks
    a point id the batch uses, and :class:`DecodeError` for anything corrupt or truncated.
    """
    comp, obj = _open(payload)
    epoch, cat_version, seq, base_ts = _header(obj)
    if catalogue is None:
        raise CatalogueMismatch(
            f"batch seq {seq} needs catalogue epoch {epoch} version {cat_version}, and no "
            "catalogue is known yet (it comes with the gateway's state message)")
    if catalogue.epoch != epoch:
        raise CatalogueMismatch(
            f"batch seq {seq} was encoded with catalogue epoch {epoch}, the known catalogue "
            f"has epoch {catalogue.epoch} (the gateway rebuilt its catalogue: wait for its "
            "state message)")
    times_obj = obj[4]
    ncols = _ints(obj[5], "ncols")
    ids = _ints(obj[6], "ids")
    codes = _ints(obj[7], "codes")
    refs = _ints(obj[8], "refs")
    values = obj[9]
    quality_obj = obj[10]
    if not isinstance(times_obj, list) or len(times_obj) != len(ncols):
        raise DecodeError("corrupt batch body: `times` and `ncols` differ in length")
    if any(n < 1 for n in ncols):
        raise DecodeError("corrupt batch body: a time group has no column")
    n_cols = sum(ncols)
    if not len(ids) == len(codes) == len(refs) == n_cols:
        raise DecodeError(
            f"corrupt batch body: {n_cols} columns but {len(ids)} ids, {len(codes)} codes and "
            f"{len(refs)} refs")
    if not isinstance(values, list):
        raise DecodeError("corrupt batch body: `values` must be a list")

    # timestamps, one vector per group
    tvecs: list[list[int]] = []
    t = base_ts
    for tv in times_obj:
        d = _ints(tv, "times")
        if not d:
            raise DecodeError("corrupt batch body: an empty time vector")
        t += d[0]
        vec = [t]
        cur = t
        for dt in d[1:]:
            cur += dt
            vec.append(cur)
        tvecs.append(vec)
    expected = sum(len(tv) * nc for tv, nc in zip(tvecs, ncols, strict=True))
    if len(values) != expected:
        raise DecodeError(
            f"corrupt batch body: {expected} values expected, {len(values)} found")

    qual: dict[int, Quality] = {}
    if quality_obj is not None:
        if not isinstance(quality_obj, list):
            raise DecodeError("corrupt batch body: `quality` must be a list")
        for pair in quality_obj:
            if (not isinstance(pair, list) or len(pair) != 2 or not _is_int(pair[0])
                    or not 0 <= pair[0] < expected or not _is_int(pair[1])
                    or pair[1] not in _QUALITY_OF):
                raise DecodeError(f"corrupt batch body: bad quality entry {pair!r}")
            qual[pair[0]] = _QUALITY_OF[pair[1]]

    n_known = len(catalogue.points)
    rows: list[tuple[int, int, int, Any, Quality]] = []
    firsts: list[int | None] = []
    pid = 0
    pos = 0
    col = 0
    good = Quality.GOOD
    for tvec, nc in zip(tvecs, ncols, strict=True):
        n = len(tvec)
        for _ in range(nc):
            pid += ids[col]
            if not 0 <= pid < n_known:
                raise CatalogueMismatch(
                    f"batch seq {seq} uses point id {pid}, not in the known catalogue (epoch "
                    f"{epoch} version {catalogue.version}; the batch needs version "
                    f"{cat_version})")
            code, ref = codes[col], refs[col]
            chunk = values[pos:pos + n]
            decoded = _decode_column(code, ref, col, chunk, firsts)
            for k in range(n):
                rows.append((tvec[k], pid, pos + k, decoded[k], qual.get(pos + k, good)))
            pos += n
            col += 1
    rows.sort(key=_row_key)
    points = catalogue.points
    out = tuple(DecodedPoint(points[r[1]].device, points[r[1]].point, r[0], r[3], r[4])
                for r in rows)
    return DecodedBatch(seq=seq, base_ts=base_ts, catalogue_epoch=epoch,
                        catalogue_version=cat_version, compression=comp, points=out)


def _row_key(r: tuple[int, int, int, Any, Quality]) -> tuple[int, int, int]:
    return (r[0], r[1], r[2])


def _decode_column(code: int, ref: int, col: int, chunk: list[Any],
                   firsts: list[int | None]) -> list[Any]:
    if code == _Code.RAW:
        if ref != 0:
            raise DecodeError(f"corrupt batch body: raw column {col} has a reference")
        for v in chunk:
            if v is not None and type(v) not in (bool, int, float, str):
                raise DecodeError(
                    f"corrupt batch body: unsupported value type {type(v).__name__}")
        firsts.append(None)
        return chunk
    if code == _Code.INT:
        d, f32 = None, False
    elif _Code.DEC <= code <= _Code.DEC + MAX_DECIMALS:
        d, f32 = code - _Code.DEC, False
    elif _Code.F32 <= code <= _Code.F32 + MAX_DECIMALS:
        d, f32 = code - _Code.F32, True
    else:
        raise DecodeError(f"corrupt batch body: unknown column code {code}")
    if not all(type(v) is int or v is None for v in chunk):
        raise DecodeError(f"corrupt batch body: column {col} must hold integers or nil")
    present = [v for v in chunk if v is not None]
    if not present:
        raise DecodeError(f"corrupt batch body: numeric column {col} has no value")
    head = present[0]
    if ref:
        if not 0 < ref <= col:
            raise DecodeError(f"corrupt batch body: column {col} refers to column {col - ref}")
        base = firsts[col - ref]
        if base is None:
            raise DecodeError(
                f"corrupt batch body: column {col} refers to a raw column {col - ref}")
        head += base
    firsts.append(head)
    ints = [head]
    cur = head
    for dv in present[1:]:
        cur += dv
        ints.append(cur)
    out: list[Any]
    if d is None:
        out = ints
    else:
        p = _POW10[d]
        out = [n / p for n in ints]
        if f32:
            try:
                out = array("f", out).tolist()
            except OverflowError:
                raise DecodeError(
                    f"corrupt batch body: column {col} overflows float32") from None
    if len(present) == len(chunk):
        return out
    it = iter(out)
    return [None if v is None else next(it) for v in chunk]


# ========================================================================= events and state
class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm or notice (topic ``{prefix}/{gateway}/events``). ``device`` is None for
    gateway-wide events (agent start, store drops)."""

    ts: int
    type: str
    device: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None


@dataclass(frozen=True, slots=True)
class State:
    """The retained state message: birth (``online`` true, with ``detail``) or the will."""

    online: bool
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue a birth message carries (``detail.catalogue``), if any."""
        cat = self.detail.get("catalogue")
        return None if cat is None else Catalogue.from_wire(cat)


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise EncodeError(f"{what}: not JSON-serialisable ({err})") from None


def _loads(payload: bytes, what: str) -> Any:
    try:
        return json.loads(bytes(payload).decode("utf-8"))
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: not UTF-8 text") from None
    except (ValueError, RecursionError) as err:
        raise DecodeError(f"{what}: not valid JSON ({err})") from None


def encode_event(event: Event) -> bytes:
    """``{"ts", "type", "device", "detail", "severity"?}`` as UTF-8 JSON."""
    if not _is_int(event.ts):
        raise EncodeError(f"event {event.type!r}: ts must be integer milliseconds")
    if not event.type:
        raise EncodeError("an event needs a type")
    obj: dict[str, Any] = {"ts": event.ts, "type": event.type, "device": event.device,
                           "detail": dict(event.detail)}
    if event.severity is not None:
        obj["severity"] = Severity(event.severity).value
    return _dumps(obj, f"event {event.type!r}")


def decode_event(payload: bytes) -> Event:
    obj = _loads(payload, "event")
    if not isinstance(obj, dict):
        raise DecodeError("event: expected a JSON object")
    ts, typ, device = obj.get("ts"), obj.get("type"), obj.get("device")
    detail, severity = obj.get("detail", {}), obj.get("severity")
    if not _is_int(ts):
        raise DecodeError(f"event: ts must be integer milliseconds, got {ts!r}")
    if not isinstance(typ, str) or not typ:
        raise DecodeError("event: type must be a non-empty string")
    if device is not None and not isinstance(device, str):
        raise DecodeError("event: device must be a string or null")
    if not isinstance(detail, dict):
        raise DecodeError("event: detail must be an object")
    sev = None
    if severity is not None:
        try:
            sev = Severity(severity)
        except ValueError:
            raise DecodeError(
                f"event: severity {severity!r} is not one of {', '.join(Severity)}") from None
    return Event(ts=ts, type=typ, device=device, detail=detail, severity=sev)


def encode_state(*, online: bool, detail: Mapping[str, Any] | None = None,
                 catalogue: Catalogue | None = None) -> bytes:
    """The state message: ``{"online": true, "detail": {..., "catalogue": {...}}}`` for the
    birth, ``{"online": false}`` for the will."""
    d = dict(detail or {})
    if catalogue is not None:
        d["catalogue"] = catalogue.to_wire()
    obj: dict[str, Any] = {"online": bool(online)}
    if d:
        obj["detail"] = d
    return _dumps(obj, "state")


def decode_state(payload: bytes) -> State:
    obj = _loads(payload, "state")
    if not isinstance(obj, dict):
        raise DecodeError("state: expected a JSON object")
    online, detail = obj.get("online"), obj.get("detail", {})
    if not isinstance(online, bool):
        raise DecodeError(f"state: online must be true or false, got {online!r}")
    if not isinstance(detail, dict):
        raise DecodeError("state: detail must be an object")
    state = State(online=online, detail=detail)
    _ = state.catalogue          # validate it now: a bad catalogue is a bad state message
    return state


# ================================================================================ commands
class Encoding(StrEnum):
    """How a command travels: JSON (a payload starting with ``{``) or msgpack."""

    JSON = "json"
    MSGPACK = "msgpack"


@dataclass(frozen=True, slots=True)
class CommandRequest:
    id: str | int | None
    cmd: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandErrorInfo:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """``ok`` with ``result``, or not ``ok`` with ``error`` (DESIGN.md 4.5)."""

    id: str | int | None
    ok: bool
    result: Mapping[str, Any] | None = None
    error: CommandErrorInfo | None = None


def sniff_encoding(payload: bytes) -> Encoding:
    """JSON when the payload's first non-blank byte is ``{``, msgpack otherwise."""
    return Encoding.JSON if bytes(payload[:64]).lstrip()[:1] == b"{" else Encoding.MSGPACK


def _load_any(payload: bytes, what: str) -> tuple[Any, Encoding]:
    enc = sniff_encoding(payload)
    if enc is Encoding.JSON:
        return _loads(payload, what), enc
    try:
        return msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True), enc
    except Exception as err:  # msgpack raises a zoo of types for bad input
        raise DecodeError(f"{what}: neither JSON nor valid msgpack ({err})") from None


def _dump_any(obj: Any, encoding: Encoding, what: str) -> bytes:
    if encoding is Encoding.JSON:
        return _dumps(obj, what)
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError(f"{what}: not msgpack-serialisable ({err})") from None
    return out


def decode_request(payload: bytes) -> tuple[CommandRequest, Encoding]:
    """Parse a command request; raises :class:`RequestError` (with the id when it was readable,
    and the encoding to answer in) for anything unusable."""
    enc = sniff_encoding(payload)
    try:
        obj, enc = _load_any(payload, "command")
    except DecodeError as err:
        raise RequestError(str(err), request_id=None, encoding=enc) from None
    if not isinstance(obj, dict):
        raise RequestError("command: expected an object {id, cmd, args}", request_id=None,
                           encoding=enc)
    rid = obj.get("id")
    if (rid is not None and not isinstance(rid, (str, int))) or isinstance(rid, bool):
        raise RequestError("command: id must be a string or a number", request_id=None,
                           encoding=enc)
    cmd, args = obj.get("cmd"), obj.get("args", {})
    if not isinstance(cmd, str) or not cmd:
        raise RequestError("command: cmd must be a non-empty string", request_id=rid,
                           encoding=enc)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RequestError(f"command {cmd}: args must be an object", request_id=rid,
                           encoding=enc)
    return CommandRequest(id=rid, cmd=cmd, args=args), enc


def encode_request(request: CommandRequest, *, encoding: Encoding = Encoding.JSON) -> bytes:
    obj = {"id": request.id, "cmd": request.cmd, "args": dict(request.args)}
    return _dump_any(obj, encoding, f"command {request.cmd}")


def encode_response(response: CommandResponse, *, encoding: Encoding) -> bytes:
    """The response in the request's encoding."""
    obj: dict[str, Any] = {"id": response.id, "ok": response.ok}
    if response.ok:
        obj["result"] = dict(response.result or {})
    else:
        err = response.error or CommandErrorInfo(code="error", message="")
        obj["error"] = {"code": err.code, "message": err.message}
    return _dump_any(obj, encoding, "response")


def decode_response(payload: bytes) -> tuple[CommandResponse, Encoding]:
    obj, enc = _load_any(payload, "response")
    if not isinstance(obj, dict):
        raise DecodeError("response: expected an object {id, ok, result|error}")
    rid, ok = obj.get("id"), obj.get("ok")
    if (rid is not None and not isinstance(rid, (str, int))) or isinstance(rid, bool):
        raise DecodeError("response: id must be a string, a number or null")
    if not isinstance(ok, bool):
        raise DecodeError("response: ok must be true or false")
    if ok:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise DecodeError("response: result must be an object")
        return CommandResponse(id=rid, ok=True, result=result), enc
    err = obj.get("error")
    if (not isinstance(err, dict) or not isinstance(err.get("code"), str)
            or not isinstance(err.get("message", ""), str)):
        raise DecodeError("response: error must be an object {code, message}")
    return CommandResponse(id=rid, ok=False, error=CommandErrorInfo(
        code=err["code"], message=err.get("message", ""))), enc


# ================================================================================== topics
class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATE = "state"
    CMD_REQ = "cmd/req"
    CMD_RES = "cmd/res"
    GROUP_CMD_REQ = "groups/cmd/req"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway (DESIGN.md 4.3)."""

    prefix: str
    gateway: str

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/{self.gateway}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.prefix}/{self.gateway}/events"

    @property
    def state(self) -> str:
        return f"{self.prefix}/{self.gateway}/state"

    @property
    def cmd_req(self) -> str:
        return f"{self.prefix}/{self.gateway}/cmd/req"

    @property
    def cmd_res(self) -> str:
        return f"{self.prefix}/{self.gateway}/cmd/res"

    def group_cmd_req(self, group: str) -> str:
        return f"{self.prefix}/groups/{group}/cmd/req"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed topic: exactly one of ``gateway`` and ``group`` is set."""

    kind: TopicKind
    prefix: str
    gateway: str | None = None
    group: str | None = None


_LEAF = {"telemetry": TopicKind.TELEMETRY, "events": TopicKind.EVENTS, "state": TopicKind.STATE}


def parse_topic(topic: str, *, prefix: str | None = None) -> TopicRef:
    """Recognise one of DESIGN.md 4.3's topics. With ``prefix`` (which may contain slashes) the
    topic must be under it; without, the prefix is whatever precedes the gateway id (a prefix
    ending in ``groups`` is then ambiguous: pass it). Raises DecodeError for any other topic."""
    if prefix is not None:
        p = prefix.rstrip("/")
        if not topic.startswith(p + "/"):
            raise DecodeError(f"topic {topic!r} is not under the prefix {p!r}")
        parts = topic[len(p) + 1:].split("/")
        if len(parts) == 4 and parts[0] == "groups" and parts[2:] == ["cmd", "req"] \
                and parts[1]:
            return TopicRef(kind=TopicKind.GROUP_CMD_REQ, prefix=p, group=parts[1])
        if len(parts) == 2 and parts[0] and parts[1] in _LEAF:
            return TopicRef(kind=_LEAF[parts[1]], prefix=p, gateway=parts[0])
        if len(parts) == 3 and parts[0] and parts[1] == "cmd" and parts[2] in ("req", "res"):
            kind = TopicKind.CMD_REQ if parts[2] == "req" else TopicKind.CMD_RES
            return TopicRef(kind=kind, prefix=p, gateway=parts[0])
        raise DecodeError(f"topic {topic!r} is not one of the gateway topics under {p!r}")
    parts = topic.split("/")
    if len(parts) >= 2 and parts[-1] in _LEAF and parts[-2]:
        return TopicRef(kind=_LEAF[parts[-1]], prefix="/".join(parts[:-2]), gateway=parts[-2])
    if len(parts) >= 3 and parts[-2] == "cmd" and parts[-1] in ("req", "res") and parts[-3]:
        if parts[-1] == "req" and len(parts) >= 4 and parts[-4] == "groups":
            return TopicRef(kind=TopicKind.GROUP_CMD_REQ, prefix="/".join(parts[:-4]),
                            group=parts[-3])
        kind = TopicKind.CMD_REQ if parts[-1] == "req" else TopicKind.CMD_RES
        return TopicRef(kind=kind, prefix="/".join(parts[:-3]), gateway=parts[-3])
    raise DecodeError(f"topic {topic!r} is not a gateway topic (…/telemetry, …/events, "
                      "…/state, …/cmd/req, …/cmd/res, …/groups/G/cmd/req)")
