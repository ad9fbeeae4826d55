"""Telemetry codec, catalogue, events/state/commands, topics and the platform decoder."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.modbus.registers import DataType, PointSpec, Table
from drivers.sample import Quality, Sample
from gateway.codec import (
    FORMAT_VERSION,
    Catalogue,
    CatalogueMismatch,
    CommandErrorInfo,
    CommandRequest,
    CommandResponse,
    Compression,
    DecodeError,
    EncodeError,
    Encoding,
    Event,
    PointDef,
    PointKind,
    RequestError,
    Severity,
    TopicKind,
    Topics,
    decode_batch,
    decode_event,
    decode_request,
    decode_response,
    decode_state,
    encode_batch,
    encode_event,
    encode_request,
    encode_response,
    encode_state,
    parse_topic,
    point_def_from_spec,
    read_batch_info,
)
from gateway.platform import Decoder, batch_header, format_line, subscriptions
from tests.codec_strategies import (
    FLOAT_COLUMN_EXAMPLES,
    INT_COLUMN_EXAMPLES,
    canon,
    canon_tree,
    catalogue_for,
    catalogues,
    corrupt_bodies,
    events,
    float_columns,
    int_columns,
    json_junk,
    json_values,
    load_uplink_bench,
    msgpack_values,
    requests,
    responses,
    sample_lists,
)

bench = load_uplink_bench()

def body_of(payload: bytes) -> list[Any]:
    """The msgpack body of an uncompressed (or compressed) batch, for layout checks."""
    comp = Compression(payload[1] & 3)
    data = payload[2:]
    if comp is Compression.ZLIB:
        data = zlib.decompress(data)
    elif comp is Compression.ZSTD:
        import zstandard
        data = zstandard.ZstdDecompressor().decompress(data)
    body = msgpack.unpackb(data)
    assert isinstance(body, list)
    return body


def multiset(points: Sequence[Any]) -> Counter[tuple[object, ...]]:
    return Counter((p.device, p.point, p.ts, canon(p.value), Quality(p.quality))
                   for p in points)


# ------------------------------------------------------------------------------ round trips
@given(samples=sample_lists(), comp=st.sampled_from(list(Compression)),
       decimals=st.one_of(st.none(), st.integers(0, 4)), seq=st.integers(0, 2**63 - 1))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_every_value_type_round_trips_exactly(samples: list[Sample], comp: Compression,
                                              decimals: int | None, seq: int) -> None:
    cat = catalogue_for(samples, decimals=decimals)
    payload = encode_batch(seq, samples, cat, compression=comp)
    batch = decode_batch(payload, cat)
    assert batch.seq == seq
    assert batch.base_ts == min(s.ts for s in samples)
    assert (batch.catalogue_epoch, batch.catalogue_version) == (cat.epoch, cat.version)
    assert multiset(batch.points) == multiset(samples)
    assert [p.ts for p in batch.points] == sorted(p.ts for p in batch.points)
    info = read_batch_info(payload)
    assert (info.seq, info.n_points, info.version) == (seq, len(samples), FORMAT_VERSION)


@given(float_columns)
@example(FLOAT_COLUMN_EXAMPLES[0])
@example(FLOAT_COLUMN_EXAMPLES[1])
def test_any_float_column_is_exact(floats: list[float]) -> None:
    samples = [Sample("d", "p", 1000 + i, v) for i, v in enumerate(floats)]
    cat = catalogue_for(samples, decimals=1)
    got = decode_batch(encode_batch(1, samples, cat), cat).points
    assert [canon(p.value) for p in got] == [canon(v) for v in floats]


@given(int_columns)
@example(INT_COLUMN_EXAMPLES[0])
@example(INT_COLUMN_EXAMPLES[1])
def test_any_integer_column_is_exact(ints: list[int]) -> None:
    samples = [Sample("d", "p", 5 + i, v) for i, v in enumerate(ints)]
    cat = catalogue_for(samples)
    got = decode_batch(encode_batch(1, samples, cat), cat).points
    assert [canon(p.value) for p in got] == [canon(v) for v in ints]


def test_scaled_integers_are_exact_on_the_wire() -> None:
    samples = [Sample("env-1", "temperature", 1000, 23.4),
               Sample("env-1", "temperature", 2000, 23.5),
               Sample("env-1", "temperature", 3000, 23.3)]
    cat = catalogue_for(samples, decimals=1)
    payload = encode_batch(5, samples, cat, compression=Compression.NONE)
    body = body_of(payload)
    epoch, version, seq, base, times, ncols, ids, codes, refs, vals, quality = body
    assert (epoch, version, seq, base) == (7, 1, 5, 1000)
    assert times == [[0, 1000, 1000]] and ncols == [1] and ids == [0]
    assert codes == [16 + 1]                       # DEC with 1 decimal
    assert vals == [234, 1, -2]                    # 23.4, +0.1, -0.2 as exact integers
    assert refs == [0] and quality == []
    assert [p.value for p in decode_batch(payload, cat).points] == [23.4, 23.5, 23.3]


def test_decimals_hint_is_a_start_not_a_limit() -> None:
    samples = [Sample("m", "energy", 0, 12345.678), Sample("m", "energy", 1, 12345.6)]
    cat = catalogue_for(samples, decimals=1)
    payload = encode_batch(1, samples, cat, compression=Compression.NONE)
    assert body_of(payload)[7] == [16 + 3]
    assert [p.value for p in decode_batch(payload, cat).points] == [12345.678, 12345.6]


def test_float32_readings_travel_as_exact_decimals() -> None:
    v = struct.unpack("<f", struct.pack("<f", 229.8))[0]         # 229.8000030517578
    samples = [Sample("meter", "voltage", 0, v), Sample("meter", "voltage", 1, v)]
    cat = catalogue_for(samples)
    payload = encode_batch(1, samples, cat, compression=Compression.NONE)
    body = body_of(payload)
    assert body[7] == [32 + 1] and body[9] == [2298, 0]
    assert [p.value for p in decode_batch(payload, cat).points] == [v, v]


def test_first_values_refer_to_the_same_point_of_another_device() -> None:
    samples = [Sample(f"pole-{i}", "temperature", 100, 27.0 + i / 10) for i in range(3)]
    cat = catalogue_for(samples, decimals=1)
    body = body_of(encode_batch(1, samples, cat, compression=Compression.NONE))
    assert body[5] == [3] and body[8] == [0, 1, 1] and body[9] == [270, 1, 1]


def test_quality_is_sent_only_when_not_good() -> None:
    samples = [Sample("d", "p", 0, 1.5), Sample("d", "p", 1, None, Quality.TIMEOUT),
               Sample("d", "q", 0, 7, Quality.BAD_DATA)]
    cat = catalogue_for(samples)
    payload = encode_batch(1, samples, cat, compression=Compression.NONE)
    assert body_of(payload)[10] == [[0, 3], [2, 1]]     # q is the group at t=0 alone
    got = {(p.point, p.ts): p.quality for p in decode_batch(payload, cat).points}
    assert got == {("p", 0): Quality.GOOD, ("p", 1): Quality.TIMEOUT,
                   ("q", 0): Quality.BAD_DATA}


def test_a_failed_read_keeps_its_column_numeric() -> None:
    samples = [Sample("d", "p", 0, 1.5), Sample("d", "p", 1, None, Quality.TIMEOUT),
               Sample("d", "p", 2, 1.7), Sample("d", "n", 0, None, Quality.UNAVAILABLE),
               Sample("d", "n", 1, 40), Sample("d", "n", 2, 42)]
    cat = catalogue_for(samples)
    payload = encode_batch(1, samples, cat, compression=Compression.NONE)
    body = body_of(payload)
    assert body[7] == [16 + 1, 1]                          # 1-decimal and int columns
    assert body[9] == [15, None, 2, None, 40, 2]           # nil skips the delta chain
    assert multiset(decode_batch(payload, cat).points) == multiset(samples)


def test_small_payloads_are_not_compressed() -> None:
    samples = [Sample("d", "p", 0, 1)]
    cat = catalogue_for(samples)
    for comp in Compression:
        payload = encode_batch(1, samples, cat, compression=comp)
        assert payload[:2] == bytes((FORMAT_VERSION, 0))
    big = bench.street(4, 5)
    scat = bench.street_catalogue(4)
    assert encode_batch(1, big, scat, compression="zstd")[1] == Compression.ZSTD
    assert encode_batch(1, big, scat, compression="zlib")[1] == Compression.ZLIB
    assert encode_batch(1, big, scat, compression="none")[1] == Compression.NONE


# ------------------------------------------------------------------------------- size targets
@pytest.mark.parametrize(("poles", "polls"), [(20, 1), (4, 5), (10, 2)])
def test_realistic_200_point_batch_meets_the_size_targets(poles: int, polls: int) -> None:
    samples = bench.street(poles, polls)
    assert len(samples) == 200
    cat = bench.street_catalogue(poles)
    payload = encode_batch(1, samples, cat, compression=Compression.ZSTD)
    per_point = len(payload) / len(samples)
    json_size = len(bench.thingsboard_json(samples))
    assert per_point <= 3.0, f"{per_point:.2f} bytes/point"
    assert json_size / len(payload) >= 8.0, f"only {json_size / len(payload):.1f}x"
    # the flat one-object-per-sample JSON is far larger still
    assert len(bench.thingsboard_json_flat(samples)) / len(payload) >= 20
    assert multiset(decode_batch(payload, cat).points) == multiset(samples)


def test_zlib_fallback_also_meets_the_target() -> None:
    samples = bench.street(20, 1)
    payload = encode_batch(1, samples, bench.street_catalogue(20), compression="zlib")
    assert len(payload) / 200 <= 3.0


# ------------------------------------------------------------------------------- bad input
def test_encode_errors_name_the_problem() -> None:
    cat = catalogue_for([Sample("d", "p", 0, 1)])
    with pytest.raises(EncodeError, match="empty batch"):
        encode_batch(1, [], cat)
    with pytest.raises(EncodeError, match=r"d\.x is not in the catalogue"):
        encode_batch(1, [Sample("d", "x", 0, 1)], cat)
    with pytest.raises(EncodeError, match="timestamp"):
        encode_batch(1, [Sample("d", "p", 1.5, 1)], cat)  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="unsupported value type bytes"):
        encode_batch(1, [Sample("d", "p", 0, b"x")], cat)  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="does not fit 64 bits"):
        encode_batch(1, [Sample("d", "p", 0, 2**64)], cat)
    with pytest.raises(EncodeError, match="seq"):
        encode_batch(-1, [Sample("d", "p", 0, 1)], cat)
    with pytest.raises(ValueError, match="compression 'lz4'"):
        encode_batch(1, [Sample("d", "p", 0, 1)], cat, compression="lz4")


def _valid_payload(comp: Compression = Compression.ZSTD) -> tuple[bytes, Catalogue]:
    """A small street batch with every column kind: decimal, integer, float32, raw, quality."""
    samples = bench.street(2, 3)
    f32 = struct.unpack("<f", struct.pack("<f", 0.95))[0]
    samples += [Sample("pole-00", "temperature", samples[0].ts + 7, None, Quality.TIMEOUT),
                Sample("pole-01", "power_factor", samples[0].ts, f32),
                Sample("pole-01", "power_factor", samples[0].ts + 1000, f32),
                Sample("pole-01", "label", samples[0].ts, "ok")]
    cat = bench.street_catalogue(2).with_samples(samples)
    return encode_batch(9, samples, cat, compression=comp), cat


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "truncated batch: 0 bytes"),
    (b"\x01", "truncated"),
    (b"\x07\x00\x90", "unknown batch format version 7"),
    (b'{"ts":1}', "version 123 .a JSON text"),
    (b"\x01\x04\x90", "unknown flags 0x04"),
    (b"\x01\x03\x90", "unknown compression id 3"),
    (b"\x01\x02garbage", "zstd: corrupt"),
    (b"\x01\x01garbage", "zlib: corrupt"),
    (b"\x01\x00\xc1", "msgpack"),
    (b"\x01\x00\x93\x01\x02\x03", "expected an array of 11 fields"),
])
def test_decode_errors_name_the_problem(payload: bytes, message: str) -> None:
    _, cat = _valid_payload()
    with pytest.raises(DecodeError, match=message):
        decode_batch(payload, cat)


def test_truncated_and_trailing_bytes_are_decode_errors() -> None:
    for comp in Compression:
        payload, cat = _valid_payload(comp)
        for cut in (3, len(payload) // 2, len(payload) - 1):
            with pytest.raises(DecodeError):
                decode_batch(payload[:cut], cat)
    payload, cat = _valid_payload(Compression.NONE)
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode_batch(payload + b"\x00", cat)


def test_a_zip_bomb_is_refused() -> None:
    body = b"\x00" * (17 * 1024 * 1024)
    with pytest.raises(DecodeError, match="larger than"):
        decode_batch(b"\x01\x01" + zlib.compress(body, 9), None)
    import zstandard
    with pytest.raises(DecodeError, match="zstd: the body is larger than"):
        decode_batch(b"\x01\x02" + zstandard.ZstdCompressor().compress(body), None)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    with pytest.raises(DecodeError, match="zstd"):
        decode_batch(b"\x01\x02" + unsized, None)


def test_wrong_or_missing_catalogue_is_a_catalogue_mismatch() -> None:
    payload, cat = _valid_payload()
    with pytest.raises(CatalogueMismatch, match=rf"needs catalogue epoch {cat.epoch} version "
                                                r"2.*no catalogue"):
        decode_batch(payload, None)
    with pytest.raises(CatalogueMismatch,
                       match=f"epoch {cat.epoch}, the known catalogue has epoch 1"):
        decode_batch(payload, Catalogue(epoch=1, version=1, points=cat.points))
    short = Catalogue(epoch=cat.epoch, version=0, points=cat.points[:5])
    with pytest.raises(CatalogueMismatch,
                       match=r"point id \d+, not in the known catalogue .* needs version 2"):
        decode_batch(payload, short)
    # an older catalogue decodes a batch that only uses the ids it already had
    first = [s for s in bench.street(2, 3) if s.device == "pole-00"]
    older = Catalogue(epoch=cat.epoch, version=0, points=cat.points[:10])
    batch = decode_batch(encode_batch(1, first, cat), older)
    assert multiset(batch.points) == multiset(first)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    _, cat = _valid_payload()
    for payload in (data, b"\x01\x00" + data, b"\x01\x01" + data, b"\x01\x02" + data):
        with contextlib.suppress(DecodeError):
            decode_batch(payload, cat)


_VALID = {c: _valid_payload(c) for c in Compression}


@given(comp=st.sampled_from(list(Compression)), data=st.data())
@settings(max_examples=600)
def test_mutated_payloads_only_ever_raise_decode_error(comp: Compression,
                                                       data: st.DataObject) -> None:
    payload, cat = _VALID[comp]
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if action == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del buf[pos:]
        elif action == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf:
            del buf[pos:pos + data.draw(st.integers(1, 8))]
    for decode in (lambda b: decode_batch(b, cat), read_batch_info):
        with contextlib.suppress(DecodeError):
            decode(bytes(buf))


@given(data=st.data())
@settings(max_examples=600)
def test_structurally_corrupt_bodies_only_ever_raise_decode_error(data: st.DataObject) -> None:
    payload, cat = _VALID[Compression.NONE]
    body = data.draw(corrupt_bodies(body_of(payload)))
    mutated = bytes((FORMAT_VERSION, 0)) + msgpack.packb(body, use_bin_type=True)
    with contextlib.suppress(DecodeError):
        decode_batch(mutated, cat)


@given(topic=st.sampled_from(["p/gw/telemetry", "p/gw/events", "p/gw/state", "p/gw/cmd/res",
                              "p/gw/cmd/req", "p/groups/g/cmd/req", "p/x", "#"]),
       payload=st.one_of(st.binary(max_size=64), st.builds(
           lambda obj: json.dumps(obj).encode(),
           st.dictionaries(st.sampled_from(["id", "ok", "cmd", "args", "online", "detail",
                                            "ts", "type", "error", "result", "catalogue"]),
                           json_junk, max_size=5))))
@settings(max_examples=400)
def test_the_platform_decoder_never_raises(topic: str, payload: bytes) -> None:
    dec = Decoder(prefix="p")
    _, cat = _VALID[Compression.NONE]
    dec.set_catalogue("gw", cat)
    for out in (dec.decode(topic, payload), *dec.feed(topic, payload)):
        assert out["kind"] in {"telemetry", "event", "state", "response", "command", "error"}
        assert "gateway" in out
        json.loads(format_line(out))


# ------------------------------------------------------------------------------- catalogue
def test_catalogue_ids_are_stable_and_versions_move_on_change() -> None:
    cat = Catalogue.new(epoch=3)
    assert (cat.version, len(cat)) == (0, 0)
    a = PointDef("env-1", "temperature", PointKind.FLOAT, "degC", 1)
    b = PointDef("env-1", "humidity", PointKind.FLOAT, "%RH", 1)
    cat1 = cat.with_points([a, b])
    assert cat1.version == 1 and cat1.id_of("env-1", "humidity") == 1
    assert cat1.with_points([a]) is cat1                     # nothing new: same catalogue
    cat2 = cat1.with_points([PointDef("env-1", "temperature", PointKind.FLOAT, "K", 1)])
    assert cat2.version == 2 and cat2.id_of("env-1", "temperature") == 0
    assert cat2[0].unit == "K"
    cat3 = cat2.with_samples([Sample("sw", "on", 0, True), Sample("env-1", "humidity", 0, 1.0)])
    assert cat3.version == 3 and cat3[2] == PointDef("sw", "on", PointKind.BOOL)
    again = Catalogue.from_dict(json.loads(json.dumps(cat3.to_dict())))
    assert again == cat3 and again.id_of("sw", "on") == 2
    assert Catalogue.from_wire(cat3.to_wire()) == cat3
    assert 0 <= Catalogue.new().epoch < 2**32
    with pytest.raises(KeyError):
        cat3[3]


@pytest.mark.parametrize(("obj", "message"), [
    ([], "expected an object"),
    ({"epoch": -1, "version": 0, "points": []}, "epoch"),
    ({"epoch": 1, "version": "x", "points": []}, "version"),
    ({"epoch": 1, "version": 0, "points": {}}, "points must be a list"),
    ({"epoch": 1, "version": 0, "points": [["d"]]}, r"points\[0\]"),
    ({"epoch": 1, "version": 0, "points": [["d", "p", "complex", None, None]]}, "kind"),
    ({"epoch": 1, "version": 0, "points": [["d", "p", "int", 5, None]]}, "unit"),
    ({"epoch": 1, "version": 0, "points": [["d", "p", "int", None, 40]]}, "decimals"),
    ({"epoch": 1, "version": 0, "points": [["d", "p", "int", None, None]] * 2}, "twice"),
])
def test_bad_catalogues_are_decode_errors(obj: object, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Catalogue.from_dict(obj)


def test_point_defs_from_register_specs() -> None:
    def spec(typ: DataType, **kw: Any) -> PointSpec:
        return PointSpec(name="p", table=Table.INPUT, address=0, type=typ, **kw)

    assert point_def_from_spec("d", spec(DataType.INT16, scale=0.1, unit="degC")) == \
        PointDef("d", "p", PointKind.FLOAT, "degC", 1)
    assert point_def_from_spec("d", spec(DataType.UINT32)).kind is PointKind.INT
    assert point_def_from_spec("d", spec(DataType.FLOAT32)).kind is PointKind.FLOAT
    assert point_def_from_spec("d", spec(DataType.STRING, length=4)).kind is PointKind.STR
    assert point_def_from_spec("d", spec(DataType.BOOL, bit=0)).kind is PointKind.BOOL


# --------------------------------------------------------------------- events, state, commands
def test_event_round_trip_and_shape() -> None:
    ev = Event(ts=1764032400000, type="device_offline", device="env-2",
               detail={"after_s": 30}, severity=Severity.WARNING)
    raw = encode_event(ev)
    assert json.loads(raw) == {"ts": 1764032400000, "type": "device_offline",
                               "device": "env-2", "detail": {"after_s": 30},
                               "severity": "warning"}
    assert decode_event(raw) == ev
    plain = Event(ts=1, type="agent_start")
    assert json.loads(encode_event(plain)) == {"ts": 1, "type": "agent_start",
                                               "device": None, "detail": {}}
    with pytest.raises(EncodeError, match="not JSON-serialisable"):
        encode_event(Event(ts=1, type="x", detail={"v": float("nan")}))
    for bad, message in [(b"\xff", "UTF-8"), (b"[1]", "object"), (b'{"ts":"1","type":"x"}',
                         "ts must be"), (b'{"ts":1}', "type"),
                         (b'{"ts":1,"type":"x","severity":"meh"}', "severity 'meh'")]:
        with pytest.raises(DecodeError, match=message):
            decode_event(bad)


def test_state_birth_carries_the_catalogue_and_the_will_is_minimal() -> None:
    cat = bench.street_catalogue(2)
    birth = encode_state(online=True, detail={"site": "district-1"}, catalogue=cat)
    state = decode_state(birth)
    assert state.online and state.detail["site"] == "district-1"
    assert state.catalogue == cat
    assert encode_state(online=False) == b'{"online":false}'
    assert decode_state(b'{"online":false}').catalogue is None
    with pytest.raises(DecodeError, match="online"):
        decode_state(b'{"online":"yes"}')
    with pytest.raises(DecodeError, match="catalogue"):
        decode_state(b'{"online":true,"detail":{"catalogue":{"epoch":1}}}')


@pytest.mark.parametrize("encoding", list(Encoding))
def test_commands_round_trip_in_both_encodings(encoding: Encoding) -> None:
    req = CommandRequest(id="c-1", cmd="set_override", args={"group": "g1", "level": 40})
    raw = encode_request(req, encoding=encoding)
    assert (raw[:1] == b"{") is (encoding is Encoding.JSON)
    assert decode_request(raw) == (req, encoding)
    ok = CommandResponse(id="c-1", ok=True, result={"level": 40})
    bad = CommandResponse(id=None, ok=False, error=CommandErrorInfo("bad_request", "not JSON"))
    for resp in (ok, bad):
        assert decode_response(encode_response(resp, encoding=encoding)) == (resp, encoding)


@given(event=events)
@settings(max_examples=100)
def test_any_event_round_trips(event: Event) -> None:
    got = decode_event(encode_event(event))
    assert (got.ts, got.type, got.device, got.severity) == \
        (event.ts, event.type, event.device, event.severity)
    assert canon_tree(got.detail) == canon_tree(event.detail)


@given(cat=catalogues(), detail=st.dictionaries(st.text(max_size=8), json_values, max_size=3))
@settings(max_examples=100)
def test_any_catalogue_round_trips_in_a_birth(cat: Catalogue, detail: dict[str, Any]) -> None:
    state = decode_state(encode_state(online=True, detail=detail, catalogue=cat))
    assert state.online and state.catalogue == cat


@given(data=st.data(), encoding=st.sampled_from(list(Encoding)))
@settings(max_examples=100)
def test_any_response_and_request_round_trips(data: st.DataObject, encoding: Encoding) -> None:
    leaves = json_values if encoding is Encoding.JSON else msgpack_values
    resp = data.draw(responses(leaves))
    got, enc = decode_response(encode_response(resp, encoding=encoding))
    assert enc is encoding and (got.id, got.ok, got.error) == (resp.id, resp.ok, resp.error)
    assert canon_tree(got.result) == canon_tree(resp.result if resp.ok else None)
    req = data.draw(requests(leaves))
    got_req, enc = decode_request(encode_request(req, encoding=encoding))
    assert enc is encoding and (got_req.id, got_req.cmd) == (req.id, req.cmd)
    assert canon_tree(got_req.args) == canon_tree(req.args)


def test_unusable_requests_say_what_and_keep_the_id_when_they_can() -> None:
    with pytest.raises(RequestError, match="not valid JSON") as info:
        decode_request(b"{nope")
    assert info.value.request_id is None and info.value.encoding is Encoding.JSON
    with pytest.raises(RequestError, match="cmd must be") as info:
        decode_request(b'{"id": "c-9", "args": {}}')
    assert info.value.request_id == "c-9"
    with pytest.raises(RequestError, match="args must be an object") as info:
        decode_request(msgpack.packb({"id": "c-3", "cmd": "ping", "args": [1]}))
    assert info.value.request_id == "c-3" and info.value.encoding is Encoding.MSGPACK
    with pytest.raises(RequestError, match="msgpack"):
        decode_request(b"\xc1\xc1")
    assert decode_request(b'{"id":"p","cmd":"ping"}')[0].args == {}


# ---------------------------------------------------------------------------------- topics
def test_topics_build_and_parse() -> None:
    t = Topics(prefix="city/v1/east", gateway="gw-7")
    assert t.telemetry == "city/v1/east/gw-7/telemetry"
    assert t.group_cmd_req("district-1") == "city/v1/east/groups/district-1/cmd/req"
    for topic, kind in [(t.telemetry, TopicKind.TELEMETRY), (t.events, TopicKind.EVENTS),
                        (t.state, TopicKind.STATE), (t.cmd_req, TopicKind.CMD_REQ),
                        (t.cmd_res, TopicKind.CMD_RES)]:
        for prefix in ("city/v1/east", None):
            ref = parse_topic(topic, prefix=prefix)
            assert (ref.kind, ref.gateway, ref.prefix) == (kind, "gw-7", "city/v1/east")
    for prefix in ("city/v1/east", None):
        ref = parse_topic(t.group_cmd_req("d1"), prefix=prefix)
        assert (ref.kind, ref.gateway, ref.group) == (TopicKind.GROUP_CMD_REQ, None, "d1")
    with pytest.raises(DecodeError, match="not under the prefix"):
        parse_topic("other/gw/telemetry", prefix="city/v1")
    with pytest.raises(DecodeError, match="not one of the gateway topics"):
        parse_topic("city/v1/gw/telemetry/extra", prefix="city/v1")
    with pytest.raises(DecodeError, match="not a gateway topic"):
        parse_topic("city/v1/gw/metrics")


# -------------------------------------------------------------------------- platform decoder
def _street_messages() -> tuple[Catalogue, bytes, bytes, list[Sample]]:
    cat = bench.street_catalogue(2)
    samples = bench.street(2, 2)
    return cat, encode_state(online=True, catalogue=cat), encode_batch(17, samples, cat), samples


def test_decoder_produces_the_contract_shapes() -> None:
    cat, birth, batch, samples = _street_messages()
    dec = Decoder(prefix="city/v1")
    state = dec.decode("city/v1/gw1/state", birth)
    assert state["kind"] == "state" and state["gateway"] == "gw1" and state["online"] is True
    assert dec.catalogue("gw1") == cat
    tele = dec.decode("city/v1/gw1/telemetry", batch)
    assert list(tele) == ["kind", "gateway", "seq", "points"]
    assert (tele["kind"], tele["gateway"], tele["seq"]) == ("telemetry", "gw1", 17)
    assert tele["points"][0].keys() == {"device", "point", "ts", "value"}
    assert Counter((p["device"], p["point"], p["ts"], p["value"]) for p in tele["points"]) == \
        Counter((s.device, s.point, s.ts, s.value) for s in samples)
    ev = dec.decode("city/v1/gw1/events", encode_event(
        Event(ts=5, type="device_offline", device="env-2")))
    assert ev == {"kind": "event", "gateway": "gw1", "ts": 5, "type": "device_offline",
                  "device": "env-2", "detail": {}}
    resp = dec.decode("city/v1/gw1/cmd/res", encode_response(
        CommandResponse(id="c-1", ok=False, error=CommandErrorInfo("bad_args", "level")),
        encoding=Encoding.MSGPACK))
    assert resp == {"kind": "response", "gateway": "gw1", "id": "c-1", "ok": False,
                    "error": {"code": "bad_args", "message": "level"}}
    cmd = dec.decode("city/v1/groups/d1/cmd/req", encode_request(CommandRequest("c-2", "ping")))
    assert cmd == {"kind": "command", "gateway": None, "group": "d1", "id": "c-2",
                   "cmd": "ping", "args": {}, "encoding": "json"}
    assert dec.decode("city/v1/gw1/state", b'{"online":false}')["online"] is False
    assert dec.catalogue("gw1") == cat                      # the will does not forget it


def test_decoder_turns_every_bad_message_into_an_error_object() -> None:
    _, birth, batch, _ = _street_messages()
    dec = Decoder()
    err = dec.decode("a/b/gw1/telemetry", batch)
    assert err["kind"] == "error" and err["gateway"] == "gw1"
    assert err["topic"] == "a/b/gw1/telemetry" and "no catalogue" in err["error"]
    dec.decode("a/b/gw1/state", birth)
    assert dec.decode("a/b/gw1/telemetry", batch)["kind"] == "telemetry"
    assert dec.decode("a/b/gw1/telemetry", batch[:-3])["kind"] == "error"
    assert "unknown batch format" in dec.decode("a/b/gw1/telemetry", b"hello")["error"]
    assert dec.decode("a/b/gw1/events", b"\x00")["kind"] == "error"
    assert dec.decode("nonsense", b"")["gateway"] is None
    bad_state = dec.decode("a/b/gw2/state", b"{")
    assert bad_state["kind"] == "error" and bad_state["gateway"] == "gw2"


def test_feed_holds_batches_until_their_catalogue_arrives() -> None:
    cat, birth, batch, _ = _street_messages()
    second = encode_batch(18, bench.street(2, 1), cat)
    dec = Decoder(prefix="p")
    assert dec.feed("p/gw1/telemetry", batch) == []
    assert dec.feed("p/gw1/telemetry", second) == []
    assert dec.feed("p/gw1/state", b'{"online":false}') == [
        {"kind": "state", "gateway": "gw1", "online": False, "detail": {}}]
    out = dec.feed("p/gw1/state", birth)
    assert [m["kind"] for m in out] == ["state", "telemetry", "telemetry"]
    assert [m["seq"] for m in out[1:]] == [17, 18]
    assert [m["kind"] for m in dec.feed("p/gw1/telemetry", second)] == ["telemetry"]
    small = Decoder(prefix="p", hold=1)
    assert small.feed("p/gw9/telemetry", batch) == []
    spilled = small.feed("p/gw9/telemetry", second)
    assert [m["kind"] for m in spilled] == ["error"]
    assert [m["kind"] for m in small.flush()] == ["error"]


def test_decode_capture_lines() -> None:
    _, birth, batch, _ = _street_messages()
    dec = Decoder()

    def line(topic: str, payload: bytes) -> str:
        return json.dumps({"topic": topic, "payload_b64": base64.b64encode(payload).decode()})

    assert dec.decode_capture(line("c/gw1/state", birth))["kind"] == "state"
    assert dec.decode_capture(line("c/gw1/telemetry", batch))["seq"] == 17
    assert "not JSON" in dec.decode_capture("{oops")["error"]
    assert "payload_b64" in dec.decode_capture('{"topic": "c/gw1/state"}')["error"]
    assert "base64" in dec.decode_capture('{"topic": "t", "payload_b64": "***"}')["error"]


def test_format_line_and_subscriptions() -> None:
    line = format_line({"kind": "telemetry", "gateway": "g", "seq": 1,
                        "points": [{"value": math.nan}, {"value": "ünï"}]})
    assert "\n" not in line and json.loads(line)["points"][0]["value"] is None
    assert "ünï" in line
    assert subscriptions("city/v1") == ["city/v1/+/telemetry", "city/v1/+/events",
                                        "city/v1/+/cmd/res", "city/v1/+/state"]
    shared = subscriptions("city/v1/", share="platform", commands=True)
    assert shared[-2] == "$share/platform/city/v1/groups/+/cmd/req"
    assert shared[-1] == "city/v1/+/state"      # never shared: retained catalogues
    payload, _ = _valid_payload()
    assert batch_header(payload)["seq"] == 9 and batch_header(payload)["points"] == 64


def test_a_msgpack_response_with_binary_values_still_prints() -> None:
    """A hostile or odd msgpack response (binary values, extension types, binary keys) is
    printed, not a crash of `platform listen`."""
    import msgpack

    dec = Decoder(prefix="city/v1")
    body = msgpack.packb({"id": "r1", "ok": True, "result": {
        "blob": b"\x00\xff", "ext": msgpack.ExtType(7, b"ab"), b"k": 1}}, use_bin_type=True)
    line = format_line(dec.decode("city/v1/gw1/cmd/res", body))
    out = json.loads(line)
    assert out["kind"] == "response" and out["id"] == "r1"
    assert out["result"]["blob"] == {"$bytes": "AP8="}
    assert out["result"]["ext"] == {"$ext": 7, "$bytes": "YWI="}
    assert out["result"]["aw=="] == 1


def test_hypothesis_strategies_cover_mixed_columns() -> None:
    # guard for the round-trip test: a mixed column goes raw and still round-trips
    samples = [Sample("d", "p", 0, 1), Sample("d", "p", 1, 1.0), Sample("d", "p", 2, True),
               Sample("d", "p", 3, "x"), Sample("d", "p", 4, None)]
    cat = catalogue_for(samples)
    payload = encode_batch(1, samples, cat, compression=Compression.NONE)
    assert body_of(payload)[7] == [0]
    assert multiset(decode_batch(payload, cat).points) == multiset(samples)


def test_the_worked_example_in_the_protocol_doc_is_what_the_encoder_produces() -> None:
    cat = Catalogue.new(epoch=42).with_points([
        PointDef("env-1", "temperature", PointKind.FLOAT, "degC", 1),
        PointDef("env-1", "humidity", PointKind.FLOAT, "%RH", 1),
        PointDef("lamp-1", "lamp_on", PointKind.BOOL),
        PointDef("lamp-1", "power", PointKind.FLOAT, "W", 1)])
    t = 1764032400000
    samples = [
        Sample("env-1", "temperature", t, 23.4), Sample("env-1", "humidity", t, 61.2),
        Sample("lamp-1", "lamp_on", t + 250, True), Sample("lamp-1", "power", t + 250, 152.3),
        Sample("env-1", "temperature", t + 5000, 23.5),
        Sample("env-1", "humidity", t + 5000, 61.0),
        Sample("lamp-1", "power", t + 5250, None, Quality.TIMEOUT),
        Sample("lamp-1", "lamp_on", t + 5250, True)]
    payload = encode_batch(17, samples, cat)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    block = doc.split("gives 63 bytes", 1)[1].split("```", 2)[1]
    assert bytes.fromhex(block) == payload
    decoded = Decoder().decode("city/v1/gw1/telemetry", payload)
    assert decoded["kind"] == "error"                          # no catalogue yet
    dec = Decoder()
    dec.decode("city/v1/gw1/state", encode_state(online=True, catalogue=cat))
    line = format_line(dec.decode("city/v1/gw1/telemetry", payload))
    assert "\n" + line + "\n" in doc
    assert len(bench.thingsboard_json(samples)) == 277
