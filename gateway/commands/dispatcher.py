"""The command dispatcher: request bytes in, response bytes out (DESIGN.md 4.5).

For each message on ``{prefix}/{gateway}/cmd/req`` or ``{prefix}/groups/{group}/cmd/req``,
:meth:`Dispatcher.handle` runs these steps and returns the response for ``cmd/res``, in the
request's encoding. It never raises (a bug answers ``internal`` and is logged).

1. rate limit: a token bucket per source topic (``rate_limited``; reported as one
   ``command_rate_limited`` event per episode and minute, not one per request);
2. size limit (``too_large``, not parsed);
3. parse JSON or msgpack; an object with a usable ``id`` and ``cmd`` (``malformed``; the id is
   null in the answer when it could not be read);
4. signature, when signing is configured and the request is signed, or when it is required
   (``unsigned``, ``bad_signature``, ``expired``, ``malformed`` for a broken envelope);
5. idempotency: a command that changes something and whose id is remembered is not run again:
   the same request gets the first response, another request under that id ``duplicate_id``,
   a signed id remembered only as a guard ``replayed``;
6. the command: typed arguments (``unknown_command``, ``bad_args``), then the agent
   (:class:`~gateway.commands.target.CommandTarget`), its typed exceptions mapped to codes
   (anything else is a bug: ``internal``, logged with its traceback).

Requests are handled concurrently (the link gives each its own task): a slow command (a read
from a silent device) never holds up another. Commands that change the same thing take effect
in the order they arrived: each takes a lock named by what it changes (the lighting, a device,
the clock), so two overrides for a group never overtake each other, while a write to a silent
device holds up only writes to that device.

Every request that was not rate limited becomes an audit event ``command`` with its id, command
name, outcome and source topic: never its arguments, and never a signature or key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from drivers.errors import BadValue, DeviceError, NotFound, Unsupported, WriteRejected
from gateway.codec import (
    CommandErrorInfo,
    CommandResponse,
    DecodeError,
    EncodeError,
    Encoding,
    TopicKind,
    encode_response,
    load_any,
    parse_topic,
    sniff_encoding,
)
from gateway.commands.args import (
    CheckArgs,
    ClearOverrideArgs,
    NoArgs,
    PointArgs,
    SetConfigArgs,
    SetOverrideArgs,
    SetRulesArgs,
    SyncTimeArgs,
    WritePointArgs,
    parse_args,
)
from gateway.commands.codes import CommandFailure, ErrorCode
from gateway.commands.config import CommandsCfg
from gateway.commands.memory import IdMemory, Outcome, digest_of, id_key
from gateway.commands.ratelimit import RateLimiter
from gateway.commands.target import CommandTarget, RulesRejected
from gateway.signing import (
    BadSignature,
    EnvelopeError,
    Expired,
    SignatureError,
    Unsigned,
    Verifier,
    is_signed,
    open_unverified,
)
from gateway.store import KeyValue
from policies.validation import BaseModel

__all__ = ["COMMANDS", "LOCAL_COMMANDS", "Dispatcher", "DispatcherStats", "Emit"]

log = logging.getLogger("edgegw.commands")

Emit = Callable[[str, str | None, dict[str, Any]], None]
"""``Uplink.emit(type, device, detail)``: how audit events leave."""

MAX_ID_CHARS = 128
MAX_MESSAGE_CHARS = 2000
_INT64 = (-(2**63), 2**64 - 1)        # what msgpack can carry
_REPORT_EVERY_S = 60.0                # a continuing rate-limit episode is reported this often
_RULES_PROBLEMS_SHOWN = 20
A = TypeVar("A", bound=BaseModel)


@dataclass(slots=True)
class DispatcherStats:
    """Counters since start (``get_state`` reports them under ``commands``)."""

    received: int = 0
    executed: int = 0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    malformed: int = 0
    too_large: int = 0
    rate_limited: int = 0
    by_code: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["by_code"] = dict(sorted(self.by_code.items()))
        return d


@dataclass(frozen=True, slots=True)
class _Request:
    """A request after parsing (and verification): what the command steps work on."""

    id: str | int
    cmd: str
    args: Mapping[str, Any]
    source: str
    encoding: Encoding
    signed_ts: int | None = None
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Spec(Generic[A]):
    args: type[A]
    run: Callable[[Dispatcher, A], Awaitable[Mapping[str, Any]]]
    changes: bool          # changes state: executed at most once per id
    # what it changes: commands with the same key run one at a time, in arrival order
    key: Callable[[A], str] | None = None
    signed: bool = False   # only with a verified signature (never from a local user either)


class _Inflight:
    """A mutating command being executed; a duplicate arriving meanwhile waits for it."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.done = asyncio.Event()
        self.outcome: Outcome | None = None


class Dispatcher:
    """Answers command requests for one gateway (see the module docstring).

    ``store`` keeps the idempotency memory (the agent's outbox, which commits it in the
    background; None: memory only, forgotten on restart).
    ``emit`` receives the audit events. ``clock`` is the wall clock (signature windows, ``ts``
    of ``ping``); ``monotonic`` drives the rate limiter. Loading the signing keys happens here:
    a missing or over-readable key file raises ConfigError, so construct this at start-up.
    """

    def __init__(self, target: CommandTarget, *, cfg: CommandsCfg, store: KeyValue | None,
                 emit: Emit | None, gateway_id: str, topic_prefix: str = "city/v1",
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 verifier: Verifier | None = None, groups: Sequence[str] = ()) -> None:
        self.target = target
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.topic_prefix = topic_prefix.rstrip("/")
        self.stats = DispatcherStats()
        self._emit = emit
        self._clock = clock
        self._monotonic = monotonic
        self._verifier = verifier if verifier is not None else (
            cfg.signing.verifier() if cfg.signing is not None else None)
        self._limiter = RateLimiter(per_minute=cfg.rate_limit.per_source_per_minute,
                                    burst=cfg.rate_limit.burst)
        window_ms = int(self._verifier.window_s * 1000) if self._verifier else None
        # every signed id accepted within a signature window stays a guard: at most what the
        # rate limit lets in during one window, on each source topic (own and group topics)
        max_guards = None
        if self._verifier is not None:
            per_window = (cfg.rate_limit.burst + cfg.rate_limit.per_source_per_minute
                          * self._verifier.window_s / 60)
            max_guards = int(per_window * (1 + len(groups))) + cfg.remember_ids
        self.memory = IdMemory(capacity=cfg.remember_ids, store=store, window_ms=window_ms,
                               wall_ms=self._now_ms, max_guards=max_guards)
        self.memory.load()
        self._inflight: dict[str, _Inflight] = {}
        self._locks: dict[str, asyncio.Lock] = {}    # by what a change touches (see _Spec)
        if self._verifier is not None:
            log.info("commands: signatures %s (%s, keys %s)",
                     "required" if cfg.require_signature else "checked when present",
                     self._verifier.scheme.value, ", ".join(self._verifier.key_ids))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ========================================================================== entry point
    async def handle(self, topic: str, payload: bytes, *, addressee: str | None = None
                     ) -> bytes:
        """The encoded response to ``payload`` received on ``topic``; never raises (but lets
        cancellation through). ``addressee``: the ``to`` a signed request must name, for a
        topic of another format (ThingsBoard, Sparkplug) where the topic does not tell it."""
        started = self._monotonic()
        encoding = Encoding.JSON
        rid: str | int | None = None
        try:
            encoding = sniff_encoding(payload)
            self.stats.received += 1
            allowed = self._admit(topic, started)
            if len(payload) > self.cfg.max_payload_bytes:
                if not allowed:
                    return self._limited(None, encoding, topic)
                self.stats.too_large += 1
                return self._fail(None, None, encoding, topic, started, ErrorCode.TOO_LARGE,
                                  f"payload of {len(payload)} bytes exceeds the limit of "
                                  f"{self.cfg.max_payload_bytes}")
            obj, problem = _decode(payload, encoding)
            rid = _read_id(obj)
            if not allowed:
                return self._limited(rid, encoding, topic)
            if problem is not None:
                self.stats.malformed += 1
                return self._fail(rid, None, encoding, topic, started, ErrorCode.MALFORMED,
                                  problem)
            assert obj is not None
            return await self._serve(obj, rid, encoding, topic, started, addressee)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("commands: internal error on %s", topic)
            return self._encode(CommandResponse(
                id=rid, ok=False, error=CommandErrorInfo(
                    code=ErrorCode.INTERNAL.value,
                    message=_text(f"internal error: {type(err).__name__}"))), encoding)

    # ========================================================================== local users
    async def handle_local(self, cmd: str, args: Mapping[str, Any], *, source: str,
                           request_id: str | None = None) -> dict[str, Any]:
        """A command from a local user already authenticated by the agent (the technician's
        page): the platform commands' own arguments, limits, ordering, at-most-once per id
        and audit event (``source`` names who asked, e.g. ``web:alice``), without the MQTT
        envelope or a signature (the page's log-in stands for it). The local-only commands
        (:data:`LOCAL_COMMANDS`) are accepted here and nowhere else. Returns the response as
        a mapping (``{"id", "ok", "result"}`` or ``{"id", "ok", "error": {code, message}}``);
        never raises (but lets cancellation through)."""
        started = self._monotonic()
        rid: str | int = request_id or f"local-{secrets.token_hex(8)}"
        try:
            self.stats.received += 1
            if not self._admit(source, started):
                out = self._limited(rid, Encoding.JSON, source)
            else:
                req = _Request(id=rid, cmd=cmd, args=dict(args), source=source,
                               encoding=Encoding.JSON)
                spec = COMMANDS.get(cmd) or LOCAL_COMMANDS.get(cmd)
                if spec is not None and spec.signed:
                    out = self._answer(req, started, _failure(
                        ErrorCode.UNSIGNED, f"{cmd} must come signed from the platform"))
                elif spec is None:
                    out = self._answer(req, started, _failure(
                        ErrorCode.UNKNOWN_COMMAND, f"unknown command {_show(cmd)}"))
                else:
                    try:
                        parsed = parse_args(spec.args, cmd, req.args)
                    except CommandFailure as f:
                        out = self._answer(req, started, _failure(f.code, f.message))
                    else:
                        out = (await self._once(spec, parsed, req, started) if spec.changes
                               else self._answer(req, started,
                                                 await self._execute(spec, parsed, req)))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("commands: internal error on a local %s", _show(cmd))
            return {"id": rid, "ok": False, "error": {
                "code": ErrorCode.INTERNAL.value,
                "message": _text(f"internal error: {type(err).__name__}")}}
        answer: dict[str, Any] = json.loads(out)
        return answer

    def lock(self, name: str) -> asyncio.Lock:
        """The lock commands that change ``name`` take (``lighting``, ``device:NAME``,
        ``clock``): whatever else changes that thing takes it too, to stay in order."""
        return self._locks.setdefault(name, asyncio.Lock())

    # ============================================================================ admission
    def _admit(self, source: str, now: float) -> bool:
        """Take a token; report limiting once when it starts, then at most once a period
        (with the count refused meanwhile), and once more when a quiet period follows."""
        bucket = self._limiter.bucket(source, now)
        due = bucket.reported_at is None or now - bucket.reported_at >= _REPORT_EVERY_S
        if bucket.take(now):
            if bucket.reported_at is not None and due:
                if bucket.limited:
                    self._audit_limit(source, bucket.limited, ended=True)
                bucket.limited, bucket.reported_at = 0, None
            return True
        bucket.limited += 1
        if due:
            self._audit_limit(source, bucket.limited, ended=False)
            bucket.limited, bucket.reported_at = 0, now
        return False

    def _audit_limit(self, source: str, refused: int, *, ended: bool) -> None:
        log.warning("commands: %s: rate limit %s (%d refused)", source,
                    "over" if ended else "exceeded", refused)
        self._send_event("command_rate_limited", {
            "source": _text(source, 200), "refused": refused, "ended": ended,
            "per_minute": self.cfg.rate_limit.per_source_per_minute,
            "burst": self.cfg.rate_limit.burst})

    def _limited(self, rid: str | int | None, encoding: Encoding, source: str) -> bytes:
        self.stats.rate_limited += 1
        self.stats.failed += 1
        self._count(ErrorCode.RATE_LIMITED)
        return self._encode(CommandResponse(id=rid, ok=False, error=CommandErrorInfo(
            code=ErrorCode.RATE_LIMITED.value,
            message=(f"more than {self.cfg.rate_limit.per_source_per_minute:g} commands a "
                     f"minute on {_text(source, 200)}; retry later"))), encoding)

    # =============================================================================== serving
    async def _serve(self, obj: dict[Any, Any], rid: str | int | None, encoding: Encoding,
                     source: str, started: float, addressee: str | None = None) -> bytes:
        if rid is None:
            self.stats.malformed += 1
            return self._fail(None, _cmd_name(obj), encoding, source, started,
                              ErrorCode.MALFORMED, _id_problem(obj))
        try:
            req = self._authenticate(obj, rid, encoding, source, addressee)
        except CommandFailure as f:
            if f.code is ErrorCode.MALFORMED:
                self.stats.malformed += 1
            return self._fail(rid, _cmd_name(obj), encoding, source, started, f.code,
                              f.message)
        spec = COMMANDS.get(req.cmd)
        if spec is None:
            return self._answer(req, started, _failure(
                ErrorCode.UNKNOWN_COMMAND, f"unknown command {_show(req.cmd)} (commands: "
                f"{', '.join(sorted(COMMANDS))})"))
        if spec.signed and (req.signed_ts is None or self._verifier is None):
            return self._answer(req, started, _failure(
                ErrorCode.UNSIGNED, f"{req.cmd} must be signed with a key of "
                "commands.signing"))
        try:
            args = parse_args(spec.args, req.cmd, req.args)
        except CommandFailure as f:
            return self._answer(req, started, _failure(f.code, f.message))
        if spec.changes:
            return await self._once(spec, args, req, started)
        if self.memory.get(req.id) is not None:
            # reads are answered afresh, but an id taken by a change stays taken, so a
            # platform reusing ids finds out
            return self._answer(req, started, _duplicate_id(req))
        return self._answer(req, started, await self._execute(spec, args, req))

    def _authenticate(self, obj: dict[Any, Any], rid: str | int, encoding: Encoding,
                      source: str, addressee: str | None = None) -> _Request:
        """The request to run: plain, or the verified content of a signed envelope."""
        signed = is_signed(obj)
        if not signed:
            if self.cfg.require_signature:
                raise CommandFailure(ErrorCode.UNSIGNED,
                                     "this gateway requires signed commands")
            cmd = obj.get("cmd")
            if not isinstance(cmd, str) or not cmd:
                raise CommandFailure(ErrorCode.MALFORMED, "cmd must be a non-empty string")
            args = obj.get("args", {})
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise CommandFailure(ErrorCode.MALFORMED,
                                     f"command {_show(cmd)}: args must be an object")
            return _Request(id=rid, cmd=cmd, args=args, source=source, encoding=encoding)
        try:
            if self._verifier is None:
                body = open_unverified(obj)
            else:
                body = self._verifier.open(
                    obj, expected_to=addressee or self._addressee(source),
                    now_ms=self._now_ms(),
                    clock_trusted=self._clock_trusted(),
                    high_water_ms=self.memory.high_water_ms)
        except SignatureError as err:
            raise CommandFailure(_SIGNATURE_CODES.get(type(err), ErrorCode.BAD_SIGNATURE),
                                 str(err)) from None
        if body.id != rid or _read_id({"id": body.id}) is None:
            raise CommandFailure(ErrorCode.MALFORMED, "signed: the id is not usable")
        return _Request(id=body.id, cmd=body.cmd, args=body.args, source=source,
                        encoding=encoding, signed_ts=body.ts if self._verifier else None,
                        key_id=body.key_id or None)

    def _addressee(self, topic: str) -> str | None:
        """The ``to`` a signed request must name to be valid on ``topic``."""
        try:
            ref = parse_topic(topic, prefix=self.topic_prefix)
        except DecodeError:
            return None
        if ref.kind is TopicKind.CMD_REQ and ref.gateway == self.gateway_id:
            return self.gateway_id
        if ref.kind is TopicKind.GROUP_CMD_REQ:
            return f"group:{ref.group}"
        return None

    def _clock_trusted(self) -> bool:
        try:
            return bool(self.target.clock_trusted())
        except Exception:   # a target bug: keep the strict check
            log.exception("commands: clock_trusted() failed; checking signatures strictly")
            return True

    async def _once(self, spec: _Spec[A], args: A, req: _Request, started: float) -> bytes:
        """Run a state-changing command at most once per id."""
        digest = digest_of(req.cmd, req.args)
        key = id_key(req.id)
        seen = self.memory.get(req.id)
        if seen is not None:
            if seen.digest != digest:
                return self._answer(req, started, _duplicate_id(req))
            if seen.outcome is None:
                return self._answer(req, started, _failure(
                    ErrorCode.REPLAYED, f"request {_show(req.id)} was already executed; "
                    "this is a replay (use a new id to run it again)"))
            return self._answer(req, started, seen.outcome, duplicate=True)
        running = self._inflight.get(key)
        if running is not None:
            if running.digest != digest:
                return self._answer(req, started, _duplicate_id(req))
            await running.done.wait()
            assert running.outcome is not None
            return self._answer(req, started, running.outcome, duplicate=True)
        flight = _Inflight(digest)
        self._inflight[key] = flight
        try:
            lock_name = spec.key(args) if spec.key is not None else req.cmd
            async with self.lock(lock_name):
                outcome = await self._execute(spec, args, req)
            writes = self.memory.remember(req.id, digest=digest, outcome=outcome,
                                          signed_ts=req.signed_ts)
            flight.outcome = outcome
        finally:
            if flight.outcome is None:      # cancelled: waiters get an answer all the same
                flight.outcome = _failure(ErrorCode.INTERNAL, "interrupted (shutting down)")
            flight.done.set()
            del self._inflight[key]
        # kept in the background: the answer says what the command did, whatever the store
        # does (a store failure is reported on its own)
        self.memory.persist(writes)
        return self._answer(req, started, outcome)

    async def _execute(self, spec: _Spec[A], args: A, req: _Request) -> Outcome:
        """Run one command against the target; every failure becomes an Outcome."""
        self.stats.executed += 1
        try:
            result = await spec.run(self, args)
            return Outcome(ok=True, result=_plain(dict(result)))
        except asyncio.CancelledError:
            raise
        except CommandFailure as f:
            return _failure(f.code, f.message)
        except RulesRejected as err:
            shown = err.problems[:_RULES_PROBLEMS_SHOWN]
            more = len(err.problems) - len(shown)
            # paths are from the rules' root (lighting.groups[0]..., alerts.rules[1]...)
            text = "; ".join(f"{p}: {m}" if p else m for p, m in shown)
            if more > 0:
                text += f"; and {more} more"
            return _failure(ErrorCode.INVALID_RULES,
                            f"rules rejected, the old rules stay in force: {text}")
        except NotFound as err:
            return _failure(ErrorCode.NOT_FOUND, f"{req.cmd}: {err}")
        except WriteRejected as err:
            return _failure(ErrorCode.REJECTED, f"{req.cmd}: {err}")
        except BadValue as err:
            return _failure(ErrorCode.BAD_ARGS, f"{req.cmd}: {err}")
        except DeviceError as err:
            return _failure(ErrorCode.DEVICE_ERROR,
                            f"{req.cmd}: {err or type(err).__name__}")
        except Unsupported as err:
            return _failure(ErrorCode.UNSUPPORTED,
                            f"{req.cmd}: not available on this gateway{_colon(err)}")
        except Exception as err:     # not ours to name: a bug (KeyError, ValueError...)
            log.exception("commands: %s %s failed", req.cmd, _show(req.id))
            return _failure(ErrorCode.INTERNAL,
                            f"{req.cmd}: internal error ({type(err).__name__}); see the "
                            "gateway's log")

    # ============================================================================ commands
    async def _ping(self, a: NoArgs) -> Mapping[str, Any]:
        return {"pong": True, "gateway": self.gateway_id, "ts": self._now_ms()}

    async def _get_state(self, a: NoArgs) -> Mapping[str, Any]:
        state = dict(self.target.state_snapshot())
        state.setdefault("commands", self.stats.as_dict())
        return state

    async def _get_rules(self, a: NoArgs) -> Mapping[str, Any]:
        return self.target.get_rules()

    async def _set_rules(self, a: SetRulesArgs) -> Mapping[str, Any]:
        return await self.target.set_rules(a.lighting, a.alerts)

    async def _set_override(self, a: SetOverrideArgs) -> Mapping[str, Any]:
        return self.target.set_override(group=a.group, level=a.level, duration_s=a.duration_s,
                                        priority=a.priority, source=a.source)

    async def _clear_override(self, a: ClearOverrideArgs) -> Mapping[str, Any]:
        return self.target.clear_override(group=a.group, source=a.source)

    async def _read_point(self, a: PointArgs) -> Mapping[str, Any]:
        s = await self.target.read_point(a.device, a.point)
        return {"device": s.device, "point": s.point, "ts": s.ts, "value": s.value,
                "quality": s.quality.value}

    async def _get_config(self, a: NoArgs) -> Mapping[str, Any]:
        return self.target.get_config()

    async def _set_config(self, a: SetConfigArgs) -> Mapping[str, Any]:
        return self.target.set_config(a.config, a.probation_s)

    async def _write_point(self, a: WritePointArgs) -> Mapping[str, Any]:
        await self.target.write_point(a.device, a.point, a.value)
        return {"device": a.device, "point": a.point, "value": a.value}

    async def _check(self, a: CheckArgs) -> Mapping[str, Any]:
        run = getattr(self.target, "run_check", None)
        if run is None:
            raise Unsupported("the commissioning check runs only inside the agent")
        result: Mapping[str, Any] = await run(lamp_test=a.lamp_test, settle=a.settle)
        return result

    async def _sync_time(self, a: SyncTimeArgs) -> Mapping[str, Any]:
        offset_s = (a.epoch_ms - self._now_ms()) / 1000
        if abs(offset_s) > self.cfg.max_clock_step_s:
            if self._clock_trusted():
                # a trusted clock is not thrown away by one command: a wrong epoch_ms (ms vs
                # s, a platform with a broken clock) would send the lamps to another day
                raise CommandFailure(ErrorCode.BAD_ARGS, (
                    f"sync_time: epoch_ms is {offset_s:+.0f} s from this gateway's trusted "
                    f"clock, more than commands.max_clock_step_s ({self.cfg.max_clock_step_s:g}"
                    " s); check the platform's clock"))
            log.warning("sync_time: moves the untrusted clock by %+.0f s", offset_s)
        return self.target.sync_time(epoch_ms=a.epoch_ms, set_clock=self.cfg.allow_set_time)

    # ============================================================================ answering
    def _answer(self, req: _Request, started: float, outcome: Outcome, *,
                duplicate: bool = False) -> bytes:
        if duplicate:
            self.stats.duplicates += 1
        if outcome.ok:
            self.stats.ok += 1
            response = CommandResponse(id=req.id, ok=True, result=outcome.result)
        else:
            self.stats.failed += 1
            code = outcome.code or ErrorCode.INTERNAL.value
            self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1
            response = CommandResponse(id=req.id, ok=False, error=CommandErrorInfo(
                code=code, message=outcome.message or ""))
        self._audit(req.id, req.cmd, req.source, started, outcome, duplicate=duplicate,
                    key_id=req.key_id)
        out = self._encode(response, req.encoding)
        return out

    def _fail(self, rid: str | int | None, cmd: str | None, encoding: Encoding, source: str,
              started: float, code: ErrorCode, message: str) -> bytes:
        """An error answered before a request could be run."""
        self.stats.failed += 1
        self._count(code)
        outcome = _failure(code, message)
        self._audit(rid, cmd, source, started, outcome)
        return self._encode(CommandResponse(id=rid, ok=False, error=CommandErrorInfo(
            code=code.value, message=outcome.message or "")), encoding)

    def _count(self, code: ErrorCode) -> None:
        self.stats.by_code[code.value] = self.stats.by_code.get(code.value, 0) + 1

    def _encode(self, response: CommandResponse, encoding: Encoding) -> bytes:
        try:
            return encode_response(response, encoding=encoding)
        except EncodeError as err:
            log.error("commands: response to %s could not be encoded: %s",
                      _show(response.id), err)
            fallback = CommandResponse(id=response.id, ok=False, error=CommandErrorInfo(
                code=ErrorCode.INTERNAL.value, message="the result could not be encoded"))
            try:
                return encode_response(fallback, encoding=encoding)
            except EncodeError:
                return encode_response(CommandResponse(id=None, ok=False, error=fallback.error),
                                       encoding=encoding)

    def _audit(self, rid: str | int | None, cmd: str | None, source: str, started: float,
               outcome: Outcome, *, duplicate: bool = False, key_id: str | None = None) -> None:
        """The audit event and log line: who asked what and how it ended. Never arguments,
        signatures or keys (``key`` is a key id: a hash naming which key signed)."""
        ms = round((self._monotonic() - started) * 1000, 1)
        detail: dict[str, Any] = {"id": rid, "cmd": _text(cmd, 64) if cmd else None,
                                  "ok": outcome.ok, "source": _text(source, 200), "ms": ms}
        if not outcome.ok:
            detail["code"] = outcome.code
        if duplicate:
            detail["duplicate"] = True
        if key_id:
            detail["key"] = key_id
        if outcome.ok:
            log.info("command %s %s from %s: ok%s (%.1f ms)", _show(rid), detail["cmd"],
                     detail["source"], " (duplicate)" if duplicate else "", ms)
        else:
            log.info("command %s %s from %s: %s: %s", _show(rid), detail["cmd"],
                     detail["source"], outcome.code, _text(outcome.message or "", 300))
        self._send_event("command", detail)

    def _send_event(self, type_: str, detail: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            self._emit(type_, None, detail)
        except Exception:       # the audit trail failing must not fail the command
            log.exception("commands: could not emit a %s event", type_)


COMMANDS: dict[str, _Spec[Any]] = {
    "ping": _Spec(NoArgs, Dispatcher._ping, changes=False),
    "get_state": _Spec(NoArgs, Dispatcher._get_state, changes=False),
    "get_rules": _Spec(NoArgs, Dispatcher._get_rules, changes=False),
    "read_point": _Spec(PointArgs, Dispatcher._read_point, changes=False),
    "set_rules": _Spec(SetRulesArgs, Dispatcher._set_rules, changes=True,
                       key=lambda a: "lighting"),
    "set_override": _Spec(SetOverrideArgs, Dispatcher._set_override, changes=True,
                          key=lambda a: "lighting"),
    "clear_override": _Spec(ClearOverrideArgs, Dispatcher._clear_override, changes=True,
                            key=lambda a: "lighting"),
    "write_point": _Spec(WritePointArgs, Dispatcher._write_point, changes=True,
                         key=lambda a: f"device:{a.device}"),
    "sync_time": _Spec(SyncTimeArgs, Dispatcher._sync_time, changes=True,
                       key=lambda a: "clock"),
    "get_config": _Spec(NoArgs, Dispatcher._get_config, changes=False),
    "set_config": _Spec(SetConfigArgs, Dispatcher._set_config, changes=True,
                        key=lambda a: "config", signed=True),
}
"""Every command (DESIGN.md 4.5) and whether it changes state (then it runs once per id)."""

LOCAL_COMMANDS: dict[str, _Spec[Any]] = {
    # the lamp test writes to the lamps: once per id, one check at a time (its lamp test
    # takes the lighting lock itself, group by group)
    "check": _Spec(CheckArgs, Dispatcher._check, changes=True, key=lambda a: "check"),
}
"""Commands only local users may run (:meth:`Dispatcher.handle_local`), never from MQTT."""

_SIGNATURE_CODES: dict[type[SignatureError], ErrorCode] = {
    Unsigned: ErrorCode.UNSIGNED,
    BadSignature: ErrorCode.BAD_SIGNATURE,
    Expired: ErrorCode.EXPIRED,
    EnvelopeError: ErrorCode.MALFORMED,
}


# ================================================================================== helpers
def _decode(payload: bytes, encoding: Encoding) -> tuple[dict[Any, Any] | None, str | None]:
    """The request object, or None and why it is unusable."""
    try:
        obj, _ = load_any(payload, encoding=encoding)
    except DecodeError as err:
        return None, _text(str(err), 300)
    if not isinstance(obj, dict):
        return None, "expected an object {\"id\", \"cmd\", \"args\"}"
    return obj, None


def _read_id(obj: Mapping[Any, Any] | None) -> str | int | None:
    """The request's id when it is one we can remember and echo, else None."""
    if obj is None:
        return None
    rid = obj.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int):
        return rid if _INT64[0] <= rid <= _INT64[1] else None
    if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS:
        try:
            rid.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return rid
    return None


def _id_problem(obj: Mapping[Any, Any]) -> str:
    if "id" not in obj or obj.get("id") is None:
        return "id is required (a string or an integer, unique per request)"
    return (f"id must be a string of 1 to {MAX_ID_CHARS} characters or a 64-bit integer")


def _cmd_name(obj: Mapping[Any, Any]) -> str | None:
    cmd = obj.get("cmd")
    return cmd if isinstance(cmd, str) and cmd else None


def _failure(code: ErrorCode, message: str) -> Outcome:
    return Outcome(ok=False, code=code.value, message=_text(message, MAX_MESSAGE_CHARS))


def _duplicate_id(req: _Request) -> Outcome:
    return _failure(ErrorCode.DUPLICATE_ID,
                    f"id {_show(req.id)} was already used for a different request; "
                    "use a new id for each command")


def _colon(err: BaseException) -> str:
    return f": {err}" if str(err) else ""


def _text(s: str | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Text safe to encode (lone surrogates escaped) and of bounded length."""
    if s is None:
        return ""
    safe = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[:limit - 1] + "…"


def _show(value: object) -> str:
    """A value quoted for a message or a log line, cut short."""
    return _text(repr(value), 80)


def _plain(obj: Any, depth: int = 0) -> Any:
    """A target's result as plain JSON/msgpack data: datetimes as ISO text, enums as their
    values, tuples and sets as lists, dataclasses as objects, non-finite floats as null."""
    if depth > 64:
        raise ValueError("result nested too deeply")
    if obj is None or isinstance(obj, (bool, int)):
        return obj.value if isinstance(obj, Enum) else obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Enum):
        return _plain(obj.value, depth + 1)
    if isinstance(obj, str):
        return _text(obj, 1 << 20)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {_text(str(k), 256): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_plain(v, depth + 1) for v in obj), key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)},
                      depth + 1)
    return _text(str(obj), 1000)
