"""The codec's exceptions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.codec.wire import Encoding


class CodecError(GatewayError, ValueError):
    """A payload could not be encoded or decoded."""


class EncodeError(CodecError):
    """Samples or a message could not be encoded (unknown point, unsupported value)."""


class UnknownPoint(EncodeError):
    """A sample's point is not in the catalogue (add it, publish the state, encode again)."""


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
