"""JSON and msgpack: the one reader and writer of the JSON-or-msgpack messages (events and state
are JSON; commands and responses either)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import msgpack

from gateway.codec.errors import DecodeError, EncodeError


# JSON and msgpack, as every message but the telemetry travels
class Encoding(StrEnum):
    """How a command travels: JSON (a payload starting with ``{``) or msgpack."""

    JSON = "json"
    MSGPACK = "msgpack"


def sniff_encoding(payload: bytes) -> Encoding:
    """JSON when the payload's first non-blank byte is ``{``, msgpack otherwise."""
    return Encoding.JSON if bytes(payload[:64]).lstrip()[:1] == b"{" else Encoding.MSGPACK


def load_any(payload: bytes, *, encoding: Encoding | None = None) -> tuple[Any, Encoding]:
    """The one reader of JSON-or-msgpack payloads (commands, responses, signed bodies): the
    object and the encoding it came in (sniffed unless given). DecodeError says why not, in a
    few words meant for the sender."""
    enc = sniff_encoding(payload) if encoding is None else encoding
    if enc is Encoding.JSON:
        try:
            return json.loads(bytes(payload).decode("utf-8")), enc
        except UnicodeDecodeError:
            raise DecodeError("not UTF-8 JSON text") from None
        except (ValueError, RecursionError) as err:
            raise DecodeError(f"not valid JSON ({str(err)[:200]})") from None
    try:
        return msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True), enc
    except Exception:  # msgpack raises a zoo of types for bad input
        raise DecodeError("neither JSON (starting with '{') nor valid msgpack") from None


def _load_any(payload: bytes, what: str) -> tuple[Any, Encoding]:
    try:
        return load_any(payload)
    except DecodeError as err:
        raise DecodeError(f"{what}: {err}") from None


def _dump_any(obj: Any, encoding: Encoding, what: str) -> bytes:
    if encoding is Encoding.JSON:
        return _dumps(obj, what)
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError(f"{what}: not msgpack-serialisable ({err})") from None
    return out


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise EncodeError(f"{what}: not JSON-serialisable ({err})") from None


def _loads(payload: bytes, what: str) -> Any:
    try:
        return load_any(payload, encoding=Encoding.JSON)[0]
    except DecodeError as err:
        raise DecodeError(f"{what}: {err}") from None
