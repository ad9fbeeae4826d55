"""Register maps and the I/O-free codec between Modbus registers and engineering values.

Value = raw x scale + offset. Multi-register types follow `word_order` (which 16-bit word comes
first) and `byte_order` (which byte comes first inside each word); both default to big, the
Modbus convention.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from drivers.errors import WriteRejected

MAX_REGISTERS_PER_READ = 125   # Modbus spec: read holding/input registers, quantity 1..125
MAX_BITS_PER_READ = 2000       # read coils/discrete inputs, quantity 1..2000
MAX_REGISTERS_PER_WRITE = 123


class Table(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def is_writable(self) -> bool:
        return self in (Table.HOLDING, Table.COIL)


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


class Order(StrEnum):
    BIG = "big"
    LITTLE = "little"


# struct code and register count of each fixed-width register type
_STRUCT: dict[DataType, tuple[str, int]] = {
    DataType.INT16: ("h", 1),
    DataType.UINT16: ("H", 1),
    DataType.INT32: ("i", 2),
    DataType.UINT32: ("I", 2),
    DataType.INT64: ("q", 4),
    DataType.UINT64: ("Q", 4),
    DataType.FLOAT32: ("f", 2),
    DataType.FLOAT64: ("d", 4),
}

INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}

Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One named value in a device's register map."""

    name: str
    table: Table
    address: int
    type: DataType
    length: int | None = None          # registers, for strings
    bit: int | None = None             # for a bool inside a holding/input register (0 = LSB)
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    writable: bool = False
    deadband: float | None = None
    poll: float | None = None          # seconds; None = the device's poll period
    min: float | None = None           # accepted range for writes (engineering units)
    max: float | None = None

    @property
    def width(self) -> int:
        """Registers (or bits, for coils and discrete inputs) that the point occupies."""
        if self.table.is_bits:
            return 1
        if self.type is DataType.BOOL:
            return 1
        if self.type is DataType.STRING:
            return self.length or 1
        return _STRUCT[self.type][1]

    @property
    def end(self) -> int:
        return self.address + self.width

    @property
    def decimals(self) -> int | None:
        """Decimal places implied by scale and offset, to undo float noise (0.1 x 234 = 23.4)."""
        if self.type in (DataType.FLOAT32, DataType.FLOAT64):
            return None
        if self.scale == 1.0 and self.offset == 0.0:
            return None
        return max(_decimals_of(self.scale), _decimals_of(self.offset))

    @property
    def is_numeric(self) -> bool:
        return self.type not in (DataType.STRING, DataType.BOOL)


def _decimals_of(x: float) -> int:
    if x == int(x):
        return 0
    text = repr(float(x))
    if "e" in text:
        return max(0, min(12, -math.floor(math.log10(abs(x)))) + 3)
    return min(12, len(text.split(".")[1]))


def _words_to_bytes(regs: list[int], *, byte_order: Order, word_order: Order) -> bytes:
    words = list(regs) if word_order is Order.BIG else list(reversed(regs))
    out = bytearray()
    for w in words:
        hi, lo = (w >> 8) & 0xFF, w & 0xFF
        out += bytes((hi, lo)) if byte_order is Order.BIG else bytes((lo, hi))
    return bytes(out)


def _bytes_to_words(data: bytes, *, byte_order: Order, word_order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        a, b = data[i], data[i + 1]
        words.append((a << 8 | b) if byte_order is Order.BIG else (b << 8 | a))
    return words if word_order is Order.BIG else list(reversed(words))


def decode_raw(point: PointSpec, regs: list[int]) -> int | float | str | bool:
    """Registers (or bits) exactly as read -> the raw value before scale and offset."""
    if len(regs) != point.width:
        raise ValueError(f"point {point.name}: expected {point.width} registers, got {len(regs)}")
    if point.table.is_bits:
        return bool(regs[0])
    if point.type is DataType.BOOL:
        return bool((regs[0] >> (point.bit or 0)) & 1)
    if point.byte_order is Order.BIG:      # one register as read: the most common points
        if point.type is DataType.UINT16:
            return regs[0] & 0xFFFF
        if point.type is DataType.INT16:
            w = regs[0] & 0xFFFF
            return w - 0x10000 if w & 0x8000 else w
    data = _words_to_bytes(regs, byte_order=point.byte_order, word_order=point.word_order)
    if point.type is DataType.STRING:
        # strings are byte streams: word_order does not apply, but byte_order swaps pairs
        data = _words_to_bytes(regs, byte_order=point.byte_order, word_order=Order.BIG)
        return data.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ")
    code, _ = _STRUCT[point.type]
    raw: int | float = struct.unpack(">" + code, data)[0]
    if point.type is DataType.FLOAT32:
        raw = _shortest_float32(raw)
    return raw


def _shortest_float32(x: float) -> float:
    """The shortest decimal that is the same float32: 230.1 rather than 230.10000610351562."""
    if not math.isfinite(x):
        return x
    packed = struct.pack(">f", x)
    for digits in range(6, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return x


def decode(point: PointSpec, regs: list[int]) -> Value:
    """Registers -> engineering value (raw x scale + offset, rounded to the scale's precision)."""
    raw = decode_raw(point, regs)
    if isinstance(raw, (bool, str)):
        return raw
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    value = raw * point.scale + point.offset
    dec = point.decimals
    if dec is not None:
        value = round(value, dec)
        if dec == 0:
            return int(value)
    return value


Decoder = Callable[[Sequence[int], int], Value]


def decoder(point: PointSpec) -> Decoder:
    """``f(values, offset)`` = ``decode(point, values[offset:offset + point.width])``, built once
    per point (the poll path calls it for every point of every read): the common one-register
    big-endian points without scale skip the general path's checks and copies. ``values`` must
    hold the point's registers (the bus checks the answer's length first)."""
    width = point.width
    if (not point.table.is_bits and point.byte_order is Order.BIG and point.scale == 1.0
            and point.offset == 0.0):
        if point.type is DataType.UINT16:
            return lambda values, off: values[off] & 0xFFFF
        if point.type is DataType.INT16:
            def int16(values: Sequence[int], off: int) -> int:
                w = values[off] & 0xFFFF
                return w - 0x10000 if w & 0x8000 else w
            return int16
    return lambda values, off: decode(point, list(values[off:off + width]))


def encode(point: PointSpec, value: Value) -> list[int]:
    """Engineering value -> registers (or a one-element bit list), with range checks."""
    where = f"point {point.name}"
    if point.table.is_bits or point.type is DataType.BOOL:
        if isinstance(value, bool) or value in (0, 1):
            if not point.table.is_bits and (point.bit or 0) != 0:
                raise WriteRejected(f"{where}: cannot write a single bit of a register")
            return [int(bool(value))]
        raise WriteRejected(f"{where}: expected true/false or 0/1, got {value!r}")
    if point.type is DataType.STRING:
        if not isinstance(value, str):
            raise WriteRejected(f"{where}: expected a string, got {value!r}")
        data = value.encode("latin-1", errors="replace")
        size = point.width * 2
        if len(data) > size:
            raise WriteRejected(f"{where}: string longer than {size} bytes")
        data = data.ljust(size, b"\x00")
        return _bytes_to_words(data, byte_order=point.byte_order, word_order=Order.BIG)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise WriteRejected(f"{where}: expected a finite number, got {value!r}")
    if point.min is not None and value < point.min:
        raise WriteRejected(f"{where}: {value} is below the minimum {point.min}")
    if point.max is not None and value > point.max:
        raise WriteRejected(f"{where}: {value} is above the maximum {point.max}")
    raw: float = (value - point.offset) / point.scale
    code, _ = _STRUCT[point.type]
    if point.type in INT_RANGES:
        if isinstance(value, int) and point.scale == 1 and point.offset == int(point.offset):
            iraw = value - int(point.offset)     # exact: no float round trip for 64-bit ints
        else:
            iraw = round(raw)
        lo, hi = INT_RANGES[point.type]
        if not lo <= iraw <= hi:
            raise WriteRejected(f"{where}: {value} does not fit in {point.type} (raw {iraw})")
        data = struct.pack(">" + code, iraw)
    else:
        try:
            data = struct.pack(">" + code, raw)
        except OverflowError as err:
            raise WriteRejected(f"{where}: {value} does not fit in {point.type}") from err
    return _bytes_to_words(data, byte_order=point.byte_order, word_order=point.word_order)
