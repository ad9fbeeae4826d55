"""Command requests and responses, JSON or msgpack (DESIGN.md 4.5, docs/protocol.md section 6)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.codec.errors import DecodeError, RequestError
from gateway.codec.wire import Encoding, _dump_any, _load_any, sniff_encoding


@dataclass(frozen=True, slots=True)
class CommandRequest:
    id: str | int | None
    cmd: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandErrorInfo:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """``ok`` with ``result``, or not ``ok`` with ``error`` (DESIGN.md 4.5)."""

    id: str | int | None
    ok: bool
    result: Mapping[str, Any] | None = None
    error: CommandErrorInfo | None = None


def decode_request(payload: bytes) -> tuple[CommandRequest, Encoding]:
    """Parse a command request; raises :class:`RequestError` (with the id when it was readable,
    and the encoding to answer in) for anything unusable."""
    enc = sniff_encoding(payload)
    try:
        obj, enc = _load_any(payload, "command")
    except DecodeError as err:
        raise RequestError(str(err), request_id=None, encoding=enc) from None
    if not isinstance(obj, dict):
        raise RequestError("command: expected an object {id, cmd, args}", request_id=None,
                           encoding=enc)
    rid = obj.get("id")
    if (rid is not None and not isinstance(rid, (str, int))) or isinstance(rid, bool):
        raise RequestError("command: id must be a string or a number", request_id=None,
                           encoding=enc)
    cmd, args = obj.get("cmd"), obj.get("args", {})
    if not isinstance(cmd, str) or not cmd:
        raise RequestError("command: cmd must be a non-empty string", request_id=rid,
                           encoding=enc)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RequestError(f"command {cmd}: args must be an object", request_id=rid,
                           encoding=enc)
    return CommandRequest(id=rid, cmd=cmd, args=args), enc


def encode_request(request: CommandRequest, *, encoding: Encoding = Encoding.JSON) -> bytes:
    obj = {"id": request.id, "cmd": request.cmd, "args": dict(request.args)}
    return _dump_any(obj, encoding, f"command {request.cmd}")


def encode_response(response: CommandResponse, *, encoding: Encoding) -> bytes:
    """The response in the request's encoding."""
    obj: dict[str, Any] = {"id": response.id, "ok": response.ok}
    if response.ok:
        obj["result"] = dict(response.result or {})
    else:
        err = response.error or CommandErrorInfo(code="error", message="")
        obj["error"] = {"code": err.code, "message": err.message}
    return _dump_any(obj, encoding, "response")


def decode_response(payload: bytes) -> tuple[CommandResponse, Encoding]:
    obj, enc = _load_any(payload, "response")
    if not isinstance(obj, dict):
        raise DecodeError("response: expected an object {id, ok, result|error}")
    rid, ok = obj.get("id"), obj.get("ok")
    if (rid is not None and not isinstance(rid, (str, int))) or isinstance(rid, bool):
        raise DecodeError("response: id must be a string, a number or null")
    if not isinstance(ok, bool):
        raise DecodeError("response: ok must be true or false")
    if ok:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise DecodeError("response: result must be an object")
        return CommandResponse(id=rid, ok=True, result=result), enc
    err = obj.get("error")
    if (not isinstance(err, dict) or not isinstance(err.get("code"), str)
            or not isinstance(err.get("message", ""), str)):
        raise DecodeError("response: error must be an object {code, message}")
    return CommandResponse(id=rid, ok=False, error=CommandErrorInfo(
        code=err["code"], message=err.get("message", ""))), enc
