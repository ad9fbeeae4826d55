"""Hypothesis strategies over the whole value space of the uplink's messages, shared by the codec's
property tests (tests/test_codec.py) and the corpus the JavaScript decoder is checked against
(tests/js_corpus.py), so both cover exactly the same ground."""

from __future__ import annotations

import copy
import importlib.util
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from drivers.sample import Quality, Sample
from gateway.codec import (
    MAX_DECIMALS,
    Catalogue,
    CommandErrorInfo,
    CommandRequest,
    CommandResponse,
    Event,
    PointDef,
    PointKind,
    Severity,
)


def load_uplink_bench() -> ModuleType:
    """bench/uplink_bench.py, whose realistic street of poles is the codec's reference data."""
    path = Path(__file__).resolve().parent.parent / "bench" / "uplink_bench.py"
    spec = importlib.util.spec_from_file_location("uplink_bench", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("uplink_bench", mod)
    spec.loader.exec_module(mod)
    return mod


DEVICES = ["env-1", "env-2", "meter-1"]
POINTS = ["temperature", "energy", "lamp_on", "status", "power"]


def catalogue_for(samples: Sequence[Sample], *, decimals: int | None = None,
                  epoch: int = 7) -> Catalogue:
    """A catalogue holding every point of ``samples`` (in order of first appearance)."""
    cat = Catalogue.new(epoch=epoch)
    return cat.with_points(PointDef(device=s.device, point=s.point, decimals=decimals)
                           for s in samples)


# ------------------------------------------------------------------- exact comparisons
def canon(value: object) -> tuple[str, object]:
    """A value with its exact type and bits: 1 != 1.0 != True, -0.0 != 0.0, NaN == NaN."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, str):
        return ("s", value)
    assert value is None
    return ("n", None)


def canon_tree(obj: object) -> object:
    """A decoded JSON or msgpack value with exact types and bits (see canon)."""
    if isinstance(obj, dict):
        return {k: canon_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canon_tree(v) for v in obj]
    return canon(obj)


# ------------------------------------------------------------------------- sample values
float32s = st.floats(width=32, allow_nan=False).map(float)
decimal_floats = st.builds(lambda n, d: n / 10**d, st.integers(-(10**9), 10**9),
                           st.integers(0, 6))
int64s = st.integers(-(2**63), 2**64 - 1)          # every int64 and uint64 register
values = st.one_of(
    st.none(), st.booleans(), int64s, st.floats(), float32s, decimal_floats,
    st.text(max_size=20))
qualities = st.sampled_from(list(Quality))

# one column of one type: any float (NaN, infinities, -0.0, subnormals) or any 64-bit integer
float_columns = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1,
                         max_size=30)
int_columns = st.lists(int64s, min_size=1, max_size=30)
# the edge cases every run must see (applied with @example, written to the corpus as well)
FLOAT_COLUMN_EXAMPLES: list[list[float]] = [
    [0.1 + 0.2, -0.0, 0.0, 1e308, 5e-324],
    [float("nan"), float("inf"), -float("inf")],
]
INT_COLUMN_EXAMPLES: list[list[int]] = [
    [2**64 - 1, -(2**63), 0],
    [2**62 - 1, -(2**62) + 1],
]


@st.composite
def sample_lists(draw: st.DrawFn, value_strategy: st.SearchStrategy[Any] = values,
                 ) -> list[Sample]:
    """Samples with columns of one type (as real points have) or, sometimes, mixed ones."""
    n = draw(st.integers(1, 40))
    base = draw(st.integers(0, 2**41))
    keys = draw(st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(POINTS)),
                         min_size=1, max_size=8, unique=True))
    per_key = {k: draw(value_strategy) for k in keys}       # one value family per point
    out = []
    for _ in range(n):
        key = draw(st.sampled_from(keys))
        family = per_key[key]
        value = draw(st.one_of(st.just(family), value_strategy) if draw(st.booleans())
                     else st.just(family))
        if isinstance(family, float) and draw(st.booleans()):
            value = draw(decimal_floats)
        quality = draw(st.one_of(st.just(Quality.GOOD), qualities))
        ts = base + draw(st.integers(0, 10**7))
        out.append(Sample(device=key[0], point=key[1], ts=ts, value=value, quality=quality))
    return out


# --------------------------------------------------------------- msgpack and JSON values
big_ints = st.integers(-(2**70), 2**70)
any_floats = st.floats()


def json_trees(*, ints: st.SearchStrategy[int] = big_ints,
               floats: st.SearchStrategy[float] = any_floats) -> st.SearchStrategy[Any]:
    """Nested lists and objects of JSON-ish leaves (big integers and non-finite floats by
    default: narrow them for what an encoder must accept)."""
    return st.recursive(
        st.none() | st.booleans() | ints | floats | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                    max_size=3),
        max_leaves=10)


# anything a corrupt message may hold, for the decoders' robustness tests
msgpack_junk = st.recursive(
    st.none() | st.booleans() | int64s | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=4), max_leaves=10)
json_junk = json_trees()


@st.composite
def corrupt_bodies(draw: st.DrawFn, body: list[Any]) -> list[Any]:
    """A batch body (its msgpack array) with one to three fields, or elements of them,
    replaced by junk of any type."""
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(body) - 1))
        target = body[i]
        if isinstance(target, list) and target and draw(st.booleans()):
            j = draw(st.integers(0, len(target) - 1))
            target[j] = draw(msgpack_junk)
        else:
            body[i] = draw(msgpack_junk)
    return body

# what the encoders accept: JSON has no NaN or infinity, msgpack no integer beyond 64 bits
json_values = json_trees(floats=st.floats(allow_nan=False, allow_infinity=False))
msgpack_values = json_trees(ints=int64s)


def objects(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=8), leaves, max_size=4)


# ------------------------------------------------------------------ messages of each kind
@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    """Any valid catalogue: unicode names, every kind, units, decimals 0..12, 32-bit epochs."""
    keys = draw(st.lists(st.tuples(st.text(min_size=1, max_size=12),
                                   st.text(min_size=1, max_size=12)),
                         max_size=12, unique=True))
    points = tuple(
        PointDef(device=d, point=p, kind=draw(st.sampled_from(list(PointKind))),
                 unit=draw(st.none() | st.text(max_size=6)),
                 decimals=draw(st.none() | st.integers(0, MAX_DECIMALS)))
        for d, p in keys)
    return Catalogue(epoch=draw(st.integers(0, 2**32 - 1)),
                     version=draw(st.integers(0, 2**63)), points=points)


events = st.builds(
    Event, ts=st.integers(-(2**64), 2**64), type=st.text(min_size=1, max_size=20),
    device=st.none() | st.text(max_size=12), detail=objects(json_values),
    severity=st.none() | st.sampled_from(list(Severity)))

ids = st.none() | st.text(max_size=12) | int64s


def responses(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[CommandResponse]:
    ok = st.builds(CommandResponse, id=ids, ok=st.just(True), result=objects(leaves))
    failed = st.builds(CommandResponse, id=ids, ok=st.just(False), error=st.builds(
        CommandErrorInfo, code=st.text(max_size=12), message=st.text(max_size=40)))
    return ok | failed


def requests(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[CommandRequest]:
    return st.builds(CommandRequest, id=ids, cmd=st.text(min_size=1, max_size=16),
                     args=objects(leaves))
