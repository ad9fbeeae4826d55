"""The corpus the JavaScript decoder (clients/js) is checked against: payloads made by the Python
encoder across the whole value space (the hypothesis strategies of tests/codec_strategies.py, the
ones the codec's own property tests use), each with what the Python platform decoder makes of it.

``write_corpus(directory)`` writes ``corpus.jsonl``, one message a line, to be decoded in order::

    {"case": "telemetry-12-zstd", "decoder": "plain", "mode": "decode",
     "topic": "city/v1/gw-t12/telemetry", "payload_b64": "AQA...",
     "expected": {...}, "match": "..."}

- ``decoder`` names a decoder instance that keeps its catalogues across lines: ``plain`` (no
  topic prefix) or ``city`` (prefix ``city/v1/east``), as in ``DECODERS``;
- ``mode`` is ``decode`` (``expected``: the one message ``Decoder.decode`` returns) or ``feed``
  (``expected``: the list ``Decoder.feed`` returns);
- ``match``, on designed bad payloads only: words the error must contain (both decoders');
- ``lenient``, on a few corrupted batches only: see ``_structural``.

``expected`` is the Python decoder's output in *exact JSON*: JSON that keeps what plain JSON
loses. An integer beyond +-(2^53 - 1) is ``{"$int": "<decimal digits>"}``; every float is
``{"$float": "<Python repr>"}`` (``"nan"``, ``"inf"``, ``"-inf"``, ``"-0.0"`` included; a repr
reads back to the same double in any correctly rounded parser), so 1 and 1.0 differ and floats
compare bit for bit; an object with a key starting with ``$`` is wrapped as ``{"$object": {...}}``.

``python -m tests.js_corpus DIR`` writes one by hand.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import zstandard
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drivers.sample import Quality, Sample
from gateway.codec import (
    Catalogue,
    CommandRequest,
    Compression,
    DecodeError,
    Encoding,
    PointDef,
    PointKind,
    decode_batch,
    encode_batch,
    encode_event,
    encode_request,
    encode_response,
    encode_state,
)
from gateway.platform import Decoder
from tests.codec_strategies import (
    FLOAT_COLUMN_EXAMPLES,
    INT_COLUMN_EXAMPLES,
    catalogue_for,
    catalogues,
    corrupt_bodies,
    events,
    float_columns,
    int_columns,
    json_values,
    load_uplink_bench,
    msgpack_values,
    requests,
    responses,
    sample_lists,
)

T = TypeVar("T")

DECODERS = {"plain": None, "city": "city/v1/east"}
MAX_SAFE = 2**53 - 1


# ----------------------------------------------------------------------------- exact JSON
def exact(value: Any) -> Any:
    """A decoded value in exact JSON (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE <= value <= MAX_SAFE else {"$int": str(value)}
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    if isinstance(value, dict):
        out = {str(k): exact(v) for k, v in value.items()}
        return {"$object": out} if any(str(k).startswith("$") for k in value) else out
    raise TypeError(f"no exact JSON for {type(value).__name__}")


def from_exact(value: Any) -> Any:
    """The inverse of :func:`exact` (for reading back what the JavaScript side wrote)."""
    if isinstance(value, list):
        return [from_exact(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$int"}:
            return int(value["$int"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        if set(value) == {"$object"}:
            return {k: from_exact(v) for k, v in value["$object"].items()}
        return {k: from_exact(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------- examples
def draw(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """``n`` examples of a strategy, the same on every run (derandomized, no database)."""
    out: list[T] = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: T) -> None:
        out.append(example)

    collect()
    return out


class Corpus:
    """Lines of the corpus, each with what a Python decoder of its kind made of it."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._decoders = {name: Decoder(prefix=prefix) for name, prefix in DECODERS.items()}
        self._gateways = 0

    def gateway(self, decoder: str = "plain") -> tuple[str, str]:
        """A fresh gateway id (so catalogues never mix) and its topic prefix."""
        self._gateways += 1
        prefix = DECODERS[decoder] or ("city/v1" if self._gateways % 2 else "a/b/c")
        return f"gw-{self._gateways:04d}", prefix

    def add(self, case: str, topic: str, payload: bytes, *, decoder: str = "plain",
            feed: bool = False, match: str | None = None, ok: bool = True) -> Any:
        dec = self._decoders[decoder]
        got: Any = dec.feed(topic, payload) if feed else dec.decode(topic, payload)
        if match is not None:
            assert got["kind"] == "error" and match in got["error"], (case, got)
        elif ok and not feed:
            assert got["kind"] != "error", (case, got)
        line = {"case": case, "decoder": decoder, "mode": "feed" if feed else "decode",
                "topic": topic, "payload_b64": base64.b64encode(payload).decode(),
                "expected": exact(got)}
        if match is not None:
            line["match"] = match
        self.lines.append(line)
        return got


# ---------------------------------------------------------------------------- the corpus
def _telemetry(c: Corpus, n: int) -> None:
    cases = draw(st.tuples(sample_lists(), st.none() | st.integers(0, 4),
                           st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1)), n)
    for i, (samples, decimals, seq, epoch) in enumerate(cases):
        decoder = "city" if i % 3 == 0 else "plain"
        gw, prefix = c.gateway(decoder)
        cat = catalogue_for(samples, decimals=decimals, epoch=epoch)
        c.add(f"telemetry-{i}-birth", f"{prefix}/{gw}/state",
              encode_state(online=True, detail={"gateway": gw}, catalogue=cat), decoder=decoder)
        for comp in Compression:
            c.add(f"telemetry-{i}-{comp.name.lower()}", f"{prefix}/{gw}/telemetry",
                  encode_batch(seq, samples, cat, compression=comp), decoder=decoder)


def _columns(c: Corpus, n: int) -> None:
    floats = FLOAT_COLUMN_EXAMPLES + draw(float_columns, n)
    ints = INT_COLUMN_EXAMPLES + draw(int_columns, n)
    for name, cols in (("floats", floats), ("ints", ints)):
        for i, col in enumerate(cols):
            samples = [Sample("d", "p", 1000 + k, v) for k, v in enumerate(col)]
            gw, prefix = c.gateway()
            cat = catalogue_for(samples, decimals=1)
            c.add(f"{name}-{i}-birth", f"{prefix}/{gw}/state",
                  encode_state(online=True, catalogue=cat))
            c.add(f"{name}-{i}", f"{prefix}/{gw}/telemetry", encode_batch(i, samples, cat))


def _edge_batches(c: Corpus) -> None:
    """Hand-picked values at the format's edges: scaled integers beyond 2^53 (correctly
    rounded division), float32 codes, references across columns, counters at 64 bits."""
    t = 1764032400000
    f32 = [3.4028234663852886e38, 1.401298464324817e-45, -229.8000030517578, 0.1 + 0.2]
    cols: dict[str, list[Any]] = {
        "big-scaled": [123456789012345.6, 123456789012345.7, -98765432109876.5, 1e17,
                       4.5035996273704955e15],
        "f32": array("f", f32).tolist(),
        "counter": [2**53 - 1, 2**53, 2**53 + 1, 2**62 - 1, -(2**62) + 1],
        "uint64": [2**64 - 1, 2**63, 2**63 - 1, -(2**63), 0],
        "mixed": [1, 1.0, True, "x", None],
    }
    samples = [Sample(f"pole-{p}", name, t + 250 * k, v)
               for p in range(3) for name, col in cols.items() for k, v in enumerate(col)]
    samples += [Sample("pole-0", "temperature", t + k, 21.5 + k / 10,
                       Quality.GOOD if k % 3 else list(Quality)[1 + k % 4]) for k in range(9)]
    samples += [Sample("pole-1", "temperature", t + k, None if k % 2 else 20.0 + k,
                       Quality.TIMEOUT if k % 2 else Quality.GOOD) for k in range(9)]
    gw, prefix = c.gateway()
    cat = Catalogue.new(epoch=2**32 - 1).with_samples(samples)
    c.add("edges-birth", f"{prefix}/{gw}/state", encode_state(online=True, catalogue=cat))
    for comp in Compression:
        c.add(f"edges-{comp.name.lower()}", f"{prefix}/{gw}/telemetry",
              encode_batch(2**63 - 1, samples, cat, compression=comp))


def _crafted(c: Corpus) -> None:
    """Batches the spec allows and the encoder never makes: scaled integers beyond 2^53 where
    dividing a rounded double would round twice, integer chains summing beyond 64 bits, time
    stamps beyond 2^53, chained references, a nil quality list, fields appended after the
    eleventh (ignored)."""
    rng = random.Random(3)
    traps: list[tuple[int, int]] = []
    while len(traps) < 12:
        d = rng.randint(1, 12)
        n = rng.randint(2**53, 2**62 - 1) * rng.choice([1, -1])
        if float(n) / 10**d != n / 10**d:          # Number(n) / 10**d would be wrong here
            traps.append((n, d))
    gw, prefix = c.gateway()
    cat = Catalogue.new(epoch=5).with_points(
        PointDef("dev", f"p{i}", PointKind.FLOAT) for i in range(len(traps) + 4))
    c.add("crafted-birth", f"{prefix}/{gw}/state", encode_state(online=True, catalogue=cat))
    k = len(traps)
    base_ts = 2**60
    body = [5, 1, 2**64 - 1, base_ts, [[0, 2**62, 2**62]], [k + 4], [0] + [1] * (k + 3),
            [16 + d for _, d in traps] + [1, 1, 17, 33], [0] * k + [0, 1, 0, 1],
            [v for n, _ in traps for v in (n, 1, -1)]
            + [2**63 - 1, 2**63 - 1, 2**63 - 1]        # 3 x (2^63-1): beyond 64 bits
            + [-(2**63), None, 2**63 - 1]              # refers to the column before
            + [None, 234, -(2**62)]
            + [3, None, 2**62],                        # float32 via a reference
            None, "appended", [1, 2]]
    payload = bytes((1, 0)) + msgpack.packb(body, use_bin_type=True)
    c.add("crafted-extremes", f"{prefix}/{gw}/telemetry", payload)
    for comp, packed in ((1, zlib.compress(payload[2:])),
                         (2, zstandard.ZstdCompressor(write_checksum=True).compress(payload[2:]))):
        c.add(f"crafted-extremes-{comp}", f"{prefix}/{gw}/telemetry", bytes((1, comp)) + packed)


def _street(c: Corpus) -> list[tuple[str, bytes]]:
    """Realistic batches (bench/uplink_bench.py's street): refs, every compression."""
    bench = load_uplink_bench()
    made = []
    for poles, polls in ((20, 1), (4, 5), (10, 2)):
        gw, prefix = c.gateway()
        cat = bench.street_catalogue(poles)
        c.add(f"street-{poles}x{polls}-birth", f"{prefix}/{gw}/state",
              encode_state(online=True, detail={"site": "district-1"}, catalogue=cat))
        for comp in Compression:
            payload = encode_batch(poles * 100 + polls, bench.street(poles, polls), cat,
                                   compression=comp)
            assert payload[1] == comp, "a street batch is large enough to be compressed"
            c.add(f"street-{poles}x{polls}-{comp.name.lower()}", f"{prefix}/{gw}/telemetry",
                  payload)
            made.append((f"street-{poles}x{polls}-{comp.name.lower()}", payload))
        c.add(f"street-{poles}x{polls}-will", f"{prefix}/{gw}/state", b'{"online":false}')
        # the will does not forget the catalogue: the same batch still decodes
        c.add(f"street-{poles}x{polls}-after-will", f"{prefix}/{gw}/telemetry", made[-1][1])
    return made


def _births(c: Corpus, n: int) -> None:
    for i, (cat, detail) in enumerate(draw(st.tuples(catalogues(), st.dictionaries(
            st.text(max_size=8), json_values, max_size=3)), n)):
        gw, prefix = c.gateway("city" if i % 2 else "plain")
        c.add(f"birth-{i}", f"{prefix}/{gw}/state",
              encode_state(online=True, detail=detail, catalogue=cat),
              decoder="city" if i % 2 else "plain")


def _events(c: Corpus, n: int) -> None:
    for i, ev in enumerate(draw(events, n)):
        gw, prefix = c.gateway()
        c.add(f"event-{i}", f"{prefix}/{gw}/events", encode_event(ev))


def _commands(c: Corpus, n: int) -> None:
    for enc in Encoding:
        leaves = json_values if enc is Encoding.JSON else msgpack_values
        for i, resp in enumerate(draw(responses(leaves), n)):
            gw, prefix = c.gateway()
            c.add(f"response-{enc.value}-{i}", f"{prefix}/{gw}/cmd/res",
                  encode_response(resp, encoding=enc))
        for i, req in enumerate(draw(requests(leaves), n)):
            gw, prefix = c.gateway()
            topic = f"{prefix}/{gw}/cmd/req" if i % 2 else f"{prefix}/groups/g-{i}/cmd/req"
            c.add(f"request-{enc.value}-{i}", topic, encode_request(req, encoding=enc))


def _feed(c: Corpus, street: list[tuple[str, bytes]]) -> None:
    """Decoder.feed: batches held until the state message that brings their catalogue."""
    bench = load_uplink_bench()
    cat = bench.street_catalogue(4)
    gw, prefix = c.gateway()
    first = encode_batch(1, bench.street(4, 1), cat)
    second = encode_batch(2, bench.street(4, 2, start_poll=1), cat)
    c.add("feed-held-1", f"{prefix}/{gw}/telemetry", first, feed=True)
    c.add("feed-held-2", f"{prefix}/{gw}/telemetry", second, feed=True)
    c.add("feed-will", f"{prefix}/{gw}/state", b'{"online":false}', feed=True)
    out = c.add("feed-birth", f"{prefix}/{gw}/state",
                encode_state(online=True, catalogue=cat), feed=True)
    assert [m["kind"] for m in out] == ["state", "telemetry", "telemetry"]
    c.add("feed-after", f"{prefix}/{gw}/telemetry", second, feed=True)


def _bad(c: Corpus) -> None:
    """Designed bad payloads: each must be an error naming the problem, in both decoders."""
    bench = load_uplink_bench()
    cat = bench.street_catalogue(2)
    gw, prefix = c.gateway()
    tel, state = f"{prefix}/{gw}/telemetry", f"{prefix}/{gw}/state"
    good = encode_batch(9, bench.street(2, 3), cat, compression=Compression.NONE)
    c.add("bad-no-catalogue", tel, good, match="no catalogue is known yet")
    c.add("bad-birth", state, encode_state(online=True, catalogue=cat))
    body = msgpack.unpackb(good[2:])

    def batch(fields: list[Any], *, flags: int = 0) -> bytes:
        return bytes((1, flags)) + msgpack.packb(fields, use_bin_type=True)

    def with_field(i: int, v: Any) -> bytes:
        return batch([*body[:i], v, *body[i + 1:]])

    zbody = msgpack.packb(body)
    bomb = b"\x00" * (17 * 1024 * 1024)
    cases: list[tuple[str, bytes, str]] = [
        ("empty", b"", "truncated batch: 0 bytes"),
        ("short", b"\x01", "truncated"),
        ("version", b"\x07\x00\x90", "unknown batch format version 7"),
        ("json", b'{"ts":1}', "(a JSON text?)"),
        ("flags", b"\x01\x04\x90", "unknown flags 0x04"),
        ("compression-3", b"\x01\x03\x90", "unknown compression id 3"),
        ("zstd-garbage", b"\x01\x02garbage", "zstd: corrupt"),
        ("zlib-garbage", b"\x01\x01garbage", "zlib: corrupt"),
        ("zlib-truncated", b"\x01\x01" + zlib.compress(zbody)[:-9], "zlib"),
        ("zlib-bad-check", b"\x01\x01" + zlib.compress(zbody)[:-1] + b"\x00", "zlib"),
        ("zlib-bomb", b"\x01\x01" + zlib.compress(bomb, 9), "larger than"),
        ("zstd-bomb", b"\x01\x02" + zstandard.ZstdCompressor().compress(bomb), "larger than"),
        ("zstd-truncated", b"\x01\x02" + zstandard.ZstdCompressor().compress(zbody)[:-5],
         "zstd"),
        ("zstd-bad-checksum", b"\x01\x02" + _flip_last(
            zstandard.ZstdCompressor(write_checksum=True).compress(zbody)), "zstd"),
        ("msgpack", b"\x01\x00\xc1", "msgpack"),
        ("trailing", good + b"\x00", "trailing bytes"),
        ("fields", b"\x01\x00\x93\x01\x02\x03", "expected an array of 11 fields"),
        ("epoch", with_field(0, cat.epoch + 1), "the known catalogue has epoch"),
        ("seq-type", with_field(2, "9"), "seq must be an integer"),
        ("seq-float", with_field(2, 9.5), "seq must be an integer"),
        ("ncols", with_field(5, [1]), "differ in length"),
        ("ids-type", with_field(6, ["x"] * len(body[6])), "`ids` must be a list of integers"),
        ("unknown-id", with_field(6, [10**6, *body[6][1:]]), "not in the known catalogue"),
        ("code", with_field(7, [99] * len(body[7])), "unknown column code 99"),
        ("values", with_field(9, body[9][:-1]), "values expected"),
        ("quality", with_field(10, [[10**6, 1]]), "bad quality entry"),
        ("quality-code", with_field(10, [[0, 9]]), "bad quality entry"),
        ("raw-ref", with_field(8, [1] * len(body[8])), "refers to"),
        ("text-in-numeric-column", with_field(9, ["x"] * len(body[9])),
         "column 0 must hold integers or nil"),
    ]
    for name, payload, match in cases:
        c.add(f"bad-{name}", tel, payload, match=match)
    for name, topic, payload, match in [
        ("topic", "nonsense", b"{}", "not a gateway topic"),
        ("event-utf8", f"{prefix}/{gw}/events", b"\xff", "not UTF-8"),
        ("event-json", f"{prefix}/{gw}/events", b'{"ts": 1,', "not valid JSON"),
        ("event-ts", f"{prefix}/{gw}/events", b'{"ts": 1.0, "type": "x"}', "ts must be"),
        ("event-severity", f"{prefix}/{gw}/events", b'{"ts":1,"type":"x","severity":"meh"}',
         "severity 'meh'"),
        ("state-online", state, b'{"online": "yes"}', "online must be"),
        ("state-catalogue", f"{prefix}/gw-bad-cat/state",
         b'{"online":true,"detail":{"catalogue":{"epoch":1}}}', "catalogue"),
        ("state-catalogue-kind", f"{prefix}/gw-bad-cat/state",
         b'{"online":true,"detail":{"catalogue":{"epoch":1,"version":0,'
         b'"points":[["d","p","complex",null,null]]}}}', "kind 'complex'"),
        ("state-catalogue-twice", f"{prefix}/gw-bad-cat/state",
         b'{"online":true,"detail":{"catalogue":{"epoch":1,"version":0,'
         b'"points":[["d","p","int",null,null],["d","p","int",null,null]]}}}', "twice"),
        ("response-msgpack", f"{prefix}/{gw}/cmd/res", b"\xc1\xc1", "nor valid msgpack"),
        ("response-ok", f"{prefix}/{gw}/cmd/res", b'{"id":"c","ok":1}', "ok must be"),
        ("response-id", f"{prefix}/{gw}/cmd/res", b'{"id":true,"ok":true}', "id must be"),
        ("response-error", f"{prefix}/{gw}/cmd/res", b'{"id":"c","ok":false}', "error must"),
        ("request-json", f"{prefix}/{gw}/cmd/req", b"{nope", "not valid JSON"),
        ("request-cmd", f"{prefix}/{gw}/cmd/req", b'{"id":"c-9","args":{}}', "cmd must be"),
        ("request-args", f"{prefix}/{gw}/cmd/req",
         msgpack.packb({"id": "c-3", "cmd": "ping", "args": [1]}), "args must be an object"),
    ]:
        c.add(f"bad-{name}", topic, payload, match=match)


def _flip_last(frame: bytes) -> bytes:
    return frame[:-1] + bytes((frame[-1] ^ 1,))


def _mutations(c: Corpus, street: list[tuple[str, bytes]], n: int) -> None:
    """Random corruptions of valid batches: whatever the Python decoder says (an error, or
    points), the JavaScript decoder must say too."""
    rng = random.Random(20251206)
    bench = load_uplink_bench()
    gw, prefix = c.gateway()
    cat = bench.street_catalogue(4)
    c.add("mutation-birth", f"{prefix}/{gw}/state", encode_state(online=True, catalogue=cat))
    sources = [encode_batch(3, bench.street(4, 2), cat, compression=comp)
               for comp in Compression]
    for i in range(n):
        buf = bytearray(sources[i % len(sources)])
        for _ in range(rng.randint(1, 3)):
            action = rng.choice(["flip", "set", "cut", "insert", "delete"])
            pos = rng.randrange(max(1, len(buf)))
            if action == "flip" and buf:
                buf[pos] ^= 1 << rng.randrange(8)
            elif action == "set" and buf:
                buf[pos] = rng.randrange(256)
            elif action == "cut":
                del buf[pos:]
            elif action == "insert":
                buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif buf:
                del buf[pos:pos + rng.randint(1, 8)]
        c.add(f"mutation-{i}", f"{prefix}/{gw}/telemetry", bytes(buf), ok=False)


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE:
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _structural(c: Corpus, n: int) -> None:
    """Batch bodies with fields replaced by junk of any type (the codec's own robustness
    strategy). A float that holds a whole number (up to 2^53) where an integer is due is refused
    by the Python decoder and read as that integer by the JavaScript one (clients/js/README.md
    says why): such lines carry ``lenient``, the points Python reads once those floats are integers,
    and the JavaScript decoder may refuse the line or read exactly those points."""
    bench = load_uplink_bench()
    gw, prefix = c.gateway()
    cat = bench.street_catalogue(2)
    c.add("structural-birth", f"{prefix}/{gw}/state", encode_state(online=True, catalogue=cat))
    good = encode_batch(9, bench.street(2, 3), cat, compression=Compression.NONE)
    for i, body in enumerate(draw(corrupt_bodies(msgpack.unpackb(good[2:])), n)):
        payload = bytes((1, 0)) + msgpack.packb(body, use_bin_type=True)
        got = c.add(f"structural-{i}", f"{prefix}/{gw}/telemetry", payload, ok=False)
        if got["kind"] != "error":
            continue
        try:
            lenient = decode_batch(bytes((1, 0)) + msgpack.packb(
                _integral_floats_as_ints(body), use_bin_type=True), cat)
        except DecodeError:
            continue
        c.lines[-1]["lenient"] = [[p.device, p.point, exact(p.ts)] for p in lenient.points]


def build(*, examples: int = 60, mutations: int = 300) -> Corpus:
    """The whole corpus in memory: ``examples`` hypothesis examples per strategy."""
    c = Corpus()
    _telemetry(c, examples * 2)
    _columns(c, examples // 2)
    _edge_batches(c)
    _crafted(c)
    street = _street(c)
    _births(c, examples // 2)
    _events(c, examples)
    _commands(c, examples // 2)
    _feed(c, street)
    _bad(c)
    _mutations(c, street, mutations)
    _structural(c, mutations)
    return c


def write_corpus(directory: Path, *, examples: int = 60, mutations: int = 300) -> Path:
    """Write ``corpus.jsonl`` into ``directory`` (created if needed); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "corpus.jsonl"
    corpus = build(examples=examples, mutations=mutations)
    with path.open("w", encoding="utf-8") as f:
        for line in corpus.lines:
            f.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def commands_from_js(path: Path) -> Iterator[tuple[str, bytes, CommandRequest]]:
    """Read what the JavaScript tests wrote (EDGEGW_JS_OUT/commands.jsonl): for each command,
    its encoding, the bytes the JS encoder made and the request as the JS side meant it."""
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        req = from_exact(obj["request"])
        yield (obj["format"], base64.b64decode(obj["payload_b64"]),
               CommandRequest(id=req.get("id"), cmd=req["cmd"], args=req.get("args", {})))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.js_corpus DIR", file=sys.stderr)
        return 2
    path = write_corpus(Path(argv[0]))
    print(f"{path}: {path.read_text(encoding='utf-8').count(chr(10))} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
