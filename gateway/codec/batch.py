"""Telemetry batches: the columnar, delta-encoded, compressed layout (docs/protocol.md,
section 2), encoding and decoding."""

from __future__ import annotations

import itertools
import math
import threading
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from drivers.sample import Quality, Sample
from gateway.codec.catalogue import MAX_DECIMALS, Catalogue, PointDef, _is_int
from gateway.codec.errors import CatalogueMismatch, DecodeError, EncodeError, UnknownPoint

try:  # zstandard is a hard dependency, but the codec degrades to zlib without it (DESIGN.md 3)
    import zstandard

    HAVE_ZSTD = True
except ImportError:  # pragma: no cover - exercised only on a broken install
    HAVE_ZSTD = False


FORMAT_VERSION = 1
MAX_BODY_BYTES = 16 * 1024 * 1024   # a decompressed body larger than this is refused (zip bomb)
_INT_LIMIT = 2**62                  # integer columns stay inside this so every delta fits int64
_BODY_FIELDS = 11
_ZSTD_SMALL = 4 * 1024              # bodies below this get zstd's level 19 (~0.3 ms at most)


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
            raise UnknownPoint(
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
        else:
            tvec = (col[0].ts,)
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
            if len(col) == 1:             # one sample (a batch per poll): the common case
                s = col[0]
                if s.quality != GOOD:
                    quality.append([len(values), _QUALITY_CODE[Quality(s.quality)]])
                v = s.value
                code: int
                raw: list[Any]
                present: list[Any]
                wire: list[Any]
                if type(v) is int and -_INT_LIMIT < v < _INT_LIMIT:
                    raw = present = wire = [v]
                    code = _Code.INT
                else:
                    raw = present = [v]
                    code, wire = _column(present, pdef.decimals) if v is not None else (
                        _Code.RAW, present)
            else:
                for k, s in enumerate(col):
                    if s.quality != GOOD:
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
                if len(wire) == 1 and present is raw:
                    values.append(head)
                    col_no += 1
                    continue
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


GOOD = Quality.GOOD


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
