"""Error codes of command responses (``error.code``), and the exception that carries one.

Every code, when it is produced, and whether the command ran:

================  ===========================================================  ============
code              meaning                                                      executed?
================  ===========================================================  ============
malformed         not JSON/msgpack, not an object, no usable id or cmd,        no
                  a malformed signed envelope
too_large         the payload exceeds ``commands.max_payload_bytes``           no
rate_limited      the source topic exceeded its token bucket                   no
unsigned          signing is required and the request is not signed            no
bad_signature     wrong key, altered body, other scheme, or signed for         no
                  another gateway or group
expired           the signing time is outside the window                       no
replayed          a signed id already executed, whose response is no longer    no
                  held (a replay beyond the idempotency memory)
duplicate_id      the id was already used for a different command or args      no
unknown_command   no such command                                              no
bad_args          an argument is missing, of the wrong type or out of range,   no
                  or the agent refused a value (ValueError)
not_found         unknown device, point or lighting group                      tried
rejected          a write refused before it reached the wire (not writable)    tried
invalid_rules     set_rules: the rules are invalid (old rules kept)            tried
device_error      the device failed, timed out or its bus is down              tried
unsupported       the gateway is not set up for this (e.g. no lighting)        tried
internal          a bug; logged with its traceback                             tried
================  ===========================================================  ============
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CommandFailure", "ErrorCode"]


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    INVALID_RULES = "invalid_rules"
    DEVICE_ERROR = "device_error"
    UNSUPPORTED = "unsupported"
    INTERNAL = "internal"


class CommandFailure(Exception):
    """Raised inside the dispatcher to answer with an error; never escapes it."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
