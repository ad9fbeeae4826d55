"""Register codec: every type, both byte and word orders, scale and offset, range checks."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import WriteRejected
from drivers.modbus.registers import (
    INT_RANGES,
    DataType,
    Order,
    PointSpec,
    Table,
    decode,
    decode_raw,
    decoder,
    encode,
)

ORDERS = st.sampled_from(list(Order))
INT_TYPES = [t for t in DataType if t in INT_RANGES]


def spec(typ: DataType, **kw: object) -> PointSpec:
    return PointSpec(name="p", table=Table.HOLDING, address=0, type=typ, **kw)  # type: ignore[arg-type]


@given(data=st.data(), typ=st.sampled_from(INT_TYPES), bo=ORDERS, wo=ORDERS)
def test_integers_round_trip_in_every_order(data: st.DataObject, typ: DataType, bo: Order,
                                            wo: Order) -> None:
    lo, hi = INT_RANGES[typ]
    value = data.draw(st.integers(lo, hi))
    p = spec(typ, byte_order=bo, word_order=wo)
    regs = encode(p, value)
    assert len(regs) == p.width
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(p, regs) == value


@given(value=st.floats(allow_nan=False, allow_infinity=False, width=32), bo=ORDERS, wo=ORDERS)
def test_float32_round_trip(value: float, bo: Order, wo: Order) -> None:
    p = spec(DataType.FLOAT32, byte_order=bo, word_order=wo)
    decoded = decode(p, encode(p, value))
    # the same float32, written as its shortest decimal (230.1, not 230.10000610351562)
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    # shortest in significant digits (1e12, not 999999995904.0; repr's length would count the
    # zeros of a large number)
    assert _significant(decoded) <= _significant(value)


def _significant(x: float) -> int:
    return len(Decimal(repr(x)).normalize().as_tuple().digits)


@given(value=st.floats(allow_nan=False, allow_infinity=False), bo=ORDERS, wo=ORDERS)
def test_float64_round_trip(value: float, bo: Order, wo: Order) -> None:
    p = spec(DataType.FLOAT64, byte_order=bo, word_order=wo)
    assert decode(p, encode(p, value)) == value


def test_word_and_byte_orders_match_known_layouts() -> None:
    # 0x11223344 as seen on the wire in the four common layouts (ABCD, CDAB, BADC, DCBA)
    cases = {
        (Order.BIG, Order.BIG): [0x1122, 0x3344],
        (Order.BIG, Order.LITTLE): [0x3344, 0x1122],
        (Order.LITTLE, Order.BIG): [0x2211, 0x4433],
        (Order.LITTLE, Order.LITTLE): [0x4433, 0x2211],
    }
    for (bo, wo), regs in cases.items():
        p = spec(DataType.UINT32, byte_order=bo, word_order=wo)
        assert decode(p, regs) == 0x11223344, (bo, wo)
        assert encode(p, 0x11223344) == regs


def test_float32_is_shown_as_its_shortest_decimal() -> None:
    hi, lo = struct.unpack(">HH", struct.pack(">f", 230.1))
    assert decode(spec(DataType.FLOAT32), [hi, lo]) == 230.1


def test_float32_known_value_from_a_meter() -> None:
    # 230.5 V as an SDM-style meter sends it: IEEE-754 big-endian, high word first
    hi, lo = struct.unpack(">HH", struct.pack(">f", 230.5))
    assert decode(spec(DataType.FLOAT32), [hi, lo]) == 230.5


@given(raw=st.integers(-32768, 32767))
def test_scale_and_offset_are_exact_for_scaled_integers(raw: int) -> None:
    p = spec(DataType.INT16, scale=0.1, offset=-40)
    value = decode(p, encode(spec(DataType.INT16), raw))
    assert value == round(raw * 0.1 - 40, 1)
    assert encode(p, value) == encode(spec(DataType.INT16), raw)


def test_scaled_value_has_no_float_noise() -> None:
    p = spec(DataType.INT16, scale=0.1)
    assert decode(p, [234]) == 23.4
    assert repr(decode(p, [3])) == "0.3"


@given(text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=8),
       bo=ORDERS)
def test_strings_round_trip(text: str, bo: Order) -> None:
    p = spec(DataType.STRING, length=4, byte_order=bo)
    assert decode(p, encode(p, text)) == text


def test_bools_from_bits_coils_and_register_bits() -> None:
    coil = PointSpec(name="c", table=Table.COIL, address=3, type=DataType.BOOL)
    assert decode(coil, [1]) is True
    bit = PointSpec(name="b", table=Table.INPUT, address=1, type=DataType.BOOL, bit=3)
    assert decode(bit, [0b1000]) is True
    assert decode(bit, [0b0111]) is False


def test_writes_are_range_checked() -> None:
    dim = spec(DataType.UINT16, min=0, max=100, writable=True)
    assert encode(dim, 60) == [60]
    with pytest.raises(WriteRejected, match="above the maximum 100"):
        encode(dim, 101)
    with pytest.raises(WriteRejected, match="does not fit in int16"):
        encode(spec(DataType.INT16), 40000)
    with pytest.raises(WriteRejected, match="finite number"):
        encode(spec(DataType.FLOAT32), math.nan)
    with pytest.raises(WriteRejected, match="finite number"):
        encode(spec(DataType.UINT16), "12")  # type: ignore[arg-type]


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="expected 2 registers"):
        decode_raw(spec(DataType.FLOAT32), [1])


@given(typ=st.sampled_from([t for t in DataType if t is not DataType.STRING]), bo=ORDERS,
       wo=ORDERS, scale=st.sampled_from([1.0, 0.1, 2.0]), offset=st.sampled_from([0.0, -40.0]),
       table=st.sampled_from(list(Table)), before=st.integers(0, 3),
       regs=st.lists(st.integers(0, 0xFFFF), min_size=12, max_size=12))
def test_the_poll_paths_decoder_is_decode(typ: DataType, bo: Order, wo: Order, scale: float,
                                          offset: float, table: Table, before: int,
                                          regs: list[int]) -> None:
    """decoder(p)(answer, offset) is decode(p, the point's registers) for every kind of point,
    including the fast one-register paths."""
    if table.is_bits:
        typ, regs = DataType.BOOL, [r & 1 for r in regs]
    p = PointSpec(name="p", table=table, address=10 + before, type=typ, byte_order=bo,
                  word_order=wo, scale=scale, offset=offset)
    w = p.width
    fast, slow = decoder(p)(regs, before), decode(p, regs[before:before + w])
    assert type(fast) is type(slow) and repr(fast) == repr(slow)     # repr: nan, -0.0
