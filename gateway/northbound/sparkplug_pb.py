"""The Sparkplug B payload, from the specification's ``sparkplug_b.proto``, compiled by protoc.

The compiled module comes from a package that ships it (``sparkplug-b-packets``, the
``sparkplug`` extra), not from a copy in this tree; the wire format is protobuf's own. The
better-known ``pysparkplug`` and ``mqtt-spb-wrapper`` cannot be installed beside aiomqtt (both
require paho-mqtt 1.x).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

try:
    from sparkplub_b_packets.core import sparkplug_b_pb2 as _pb
except ImportError as err:        # pragma: no cover - depends on the install
    raise ImportError("mqtt.format: sparkplug needs the Sparkplug payload module: "
                      "pip install 'edgegw[sparkplug]'") from err

__all__ = ["DataType", "Payload", "Quality"]

Payload: Any = _pb.Payload
if Payload.DESCRIPTOR.full_name != "org.eclipse.tahu.protobuf.Payload":   # pragma: no cover
    raise ImportError(f"unexpected Sparkplug payload {Payload.DESCRIPTOR.full_name}")


class DataType(IntEnum):
    """Sparkplug B basic data types (specification 6.4.16)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14


class Quality(IntEnum):
    """The values of a metric's ``Quality`` property (specification 6.4.9.1)."""

    BAD = 0
    GOOD = 192
    STALE = 500
