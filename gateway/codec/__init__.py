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


The package splits by concern: :mod:`~gateway.codec.catalogue`, :mod:`~gateway.codec.batch`
(telemetry), :mod:`~gateway.codec.messages` (events, state), :mod:`~gateway.codec.commands`,
:mod:`~gateway.codec.wire` (JSON and msgpack), :mod:`~gateway.codec.topics`; every public name is
importable from ``gateway.codec``.
"""

from __future__ import annotations

from gateway.codec.batch import (
    FORMAT_VERSION,
    HAVE_ZSTD,
    MAX_BODY_BYTES,
    BatchInfo,
    Compression,
    DecodedBatch,
    DecodedPoint,
    decode_batch,
    encode_batch,
    read_batch_info,
)
from gateway.codec.catalogue import (
    MAX_DECIMALS,
    Catalogue,
    PointDef,
    PointKind,
    point_def_from_spec,
)
from gateway.codec.commands import (
    CommandErrorInfo,
    CommandRequest,
    CommandResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from gateway.codec.errors import (
    CatalogueMismatch,
    CodecError,
    DecodeError,
    EncodeError,
    RequestError,
    UnknownPoint,
)
from gateway.codec.messages import (
    Event,
    Severity,
    State,
    decode_event,
    decode_state,
    encode_event,
    encode_state,
)
from gateway.codec.topics import TopicKind, TopicRef, Topics, parse_topic
from gateway.codec.wire import Encoding, load_any, sniff_encoding

__all__ = [
    "FORMAT_VERSION",
    "HAVE_ZSTD",
    "MAX_BODY_BYTES",
    "MAX_DECIMALS",
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
    "UnknownPoint",
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
    "load_any",
    "parse_topic",
    "point_def_from_spec",
    "read_batch_info",
    "sniff_encoding",
]
