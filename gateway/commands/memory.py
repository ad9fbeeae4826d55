"""The idempotency memory: request ids already executed, with their responses.

A repeated id with the same command and arguments gets the first response again, without running
the command twice (QoS 1 redeliveries, a platform's retries, a captured request replayed). Only
commands that change something are remembered: a read has no effect to repeat and is answered
afresh.

Persistence in the store's key-value table, cheap per command: a ring of ``capacity`` rows
(``commands.ids.<slot>``, slot = sequence number modulo capacity), so remembering a command is
one small row write that overwrites the oldest; nothing else is rewritten. On start all rows are
read back in sequence order. A signed id pushed out of the ring while its signature could still be
accepted becomes a *guard* (id, digest and signing time, no response) in one small extra row, so a
replay within the window is refused (``replayed``) instead of run again. Guards and ring rows also
give the newest signing time accepted (the anchor used while the clock is not trusted).

A crash between running a command and recording it could let a retry run it again; the commands
that change something (overrides, rules, writes, time) set a state, so running one twice leaves
the same state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import StoreError
from gateway.store import KeyValue

__all__ = ["Entry", "IdMemory", "Outcome", "digest_of", "id_key"]

log = logging.getLogger("edgegw.commands")

_ROW = "commands.ids."
_META = "commands.ids.meta"
_GUARDS = "commands.ids.guards"
MAX_KEPT_RESULT = 8192          # bytes of JSON; a larger first result is not kept verbatim

Write = tuple[str, bytes | None]        # a kv row to set (or delete with None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A response without its id and encoding: what is remembered and replayed."""

    ok: bool
    result: Mapping[str, Any] | None = None
    code: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "result": dict(self.result or {})}
        return {"ok": False, "code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outcome:
        if d.get("ok") is True and isinstance(d.get("result"), dict):
            return cls(ok=True, result=d["result"])
        if d.get("ok") is False and isinstance(d.get("code"), str):
            return cls(ok=False, code=d["code"], message=str(d.get("message") or ""))
        raise ValueError("not an outcome")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    key: str
    digest: str
    outcome: Outcome | None         # None: a guard, the response is no longer held
    signed_ts: int | None           # ms, for a signed request


def id_key(rid: str | int) -> str:
    """Ids 1 and "1" are different ids."""
    return json.dumps(rid)


def digest_of(cmd: str, args: Mapping[str, Any]) -> str:
    """A digest of what a request asks, independent of its encoding and key order."""
    try:
        blob = json.dumps([cmd, args], sort_keys=True, separators=(",", ":"),
                          default=_bytes_hex, ensure_ascii=True).encode()
    except (TypeError, ValueError):     # msgpack bytes keys, mixed key types: still stable
        blob = repr((cmd, sorted(args.items(), key=repr))).encode("utf-8", "backslashreplace")
    return hashlib.sha256(blob).hexdigest()[:32]


def _bytes_hex(o: object) -> str:
    if isinstance(o, bytes):
        return "bytes:" + o.hex()
    raise TypeError(type(o).__name__)


class IdMemory:
    """Remembered ids, oldest first, at most ``capacity`` with responses (see the module
    docstring). ``window_ms`` is the signature window (None: nothing is signed, no guards)."""

    def __init__(self, *, capacity: int, store: KeyValue | None, window_ms: int | None,
                 wall_ms: Callable[[], int], max_guards: int | None = None) -> None:
        self.capacity = capacity
        # guards leave when their signature window has passed; this bound only matters if more
        # signed commands than the rate limit lets through arrived within one window
        self.max_guards = max_guards if max_guards is not None else capacity * 4
        self.store = store
        self.window_ms = window_ms
        self._wall_ms = wall_ms
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._guards: OrderedDict[str, Entry] = OrderedDict()
        self._next = 0
        self.high_water_ms: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def guards(self) -> int:
        return len(self._guards)

    def get(self, rid: str | int) -> Entry | None:
        key = id_key(rid)
        return self._entries.get(key) or self._guards.get(key)

    # ---------------------------------------------------------------------- update
    def remember(self, rid: str | int, *, digest: str, outcome: Outcome,
                 signed_ts: int | None) -> list[Write]:
        """Record an executed command; returns the rows to write (:meth:`persist`)."""
        key = id_key(rid)
        kept = _keepable(outcome)
        entry = Entry(seq=self._next, key=key, digest=digest, outcome=kept, signed_ts=signed_ts)
        self._next += 1
        self._entries.pop(key, None)
        self._guards.pop(key, None)
        self._entries[key] = entry
        if signed_ts is not None:
            self.high_water_ms = max(self.high_water_ms or signed_ts, signed_ts)
        writes: list[Write] = [(self._slot(entry.seq), _row(entry))]
        guards_changed = self._prune_guards()
        while len(self._entries) > self.capacity:
            _, old = self._entries.popitem(last=False)
            if self._protected(old):
                self._guards[old.key] = Entry(seq=old.seq, key=old.key, digest=old.digest,
                                              outcome=None, signed_ts=old.signed_ts)
                guards_changed = True
        while len(self._guards) > self.max_guards:
            _, dropped = self._guards.popitem(last=False)
            log.warning("commands: more signed ids inside the signature window than %d; the "
                        "oldest (%s) can no longer be told from a replay", self.max_guards,
                        dropped.key)
            guards_changed = True
        if guards_changed:
            writes.append((_GUARDS, self._guards_blob()))
        return writes

    def _protected(self, e: Entry) -> bool:
        """Could a replay of this signed request still pass the time check (either mode)?"""
        if e.signed_ts is None or self.window_ms is None:
            return False
        limit = e.signed_ts + self.window_ms
        return self._wall_ms() <= limit or (self.high_water_ms or 0) <= limit

    def _prune_guards(self) -> bool:
        stale = [k for k, g in self._guards.items() if not self._protected(g)]
        for k in stale:
            del self._guards[k]
        return bool(stale)

    def _slot(self, seq: int) -> str:
        return f"{_ROW}{seq % self.capacity}"

    def _guards_blob(self) -> bytes | None:
        if not self._guards:
            return None
        return json.dumps([[g.seq, g.key, g.digest, g.signed_ts] for g in self._guards.values()],
                          separators=(",", ":")).encode()

    # ---------------------------------------------------------------------- persistence
    def persist(self, writes: list[Write]) -> None:
        """Write rows to the store (the agent's outbox commits them in the background).
        StoreError is logged, not raised: the memory in RAM stays right, only a restart would
        forget these ids."""
        if self.store is None:
            return
        try:
            for key, value in writes:
                if value is None:
                    self.store.kv_delete(key)
                else:
                    self.store.kv_set(key, value)
        except StoreError as err:
            log.error("commands: could not persist the idempotency memory: %s", err)

    def restore(self, saved: Mapping[str, bytes]) -> None:
        """The store's rows arrived after commands already ran: load them only if nothing
        was remembered meanwhile (merging two rings could misorder them)."""
        if self._entries or self._guards:
            log.warning("commands: the idempotency memory was read late, after commands "
                        "had run; ids from before this start are not remembered")
            return
        self.load()

    def load(self) -> None:
        """Read the memory back from the store (at start). Unreadable rows are skipped."""
        if self.store is None:
            return
        try:
            meta = _json(self.store.kv_get(_META))
            old_cap = meta.get("capacity") if isinstance(meta, dict) else None
            old_cap = old_cap if isinstance(old_cap, int) and old_cap > 0 else self.capacity
            rows: list[Entry] = []
            for slot in range(old_cap):
                e = _entry(_json(self.store.kv_get(f"{_ROW}{slot}")))
                if e is not None:
                    rows.append(e)
            guards = _json(self.store.kv_get(_GUARDS))
        except StoreError as err:
            log.error("commands: the idempotency memory could not be read (starting empty): "
                      "%s", err)
            return
        rows.sort(key=lambda e: e.seq)
        for g in guards if isinstance(guards, list) else []:
            if (isinstance(g, list) and len(g) == 4 and isinstance(g[0], int)
                    and isinstance(g[1], str) and isinstance(g[2], str)
                    and isinstance(g[3], int)):
                self._guards[g[1]] = Entry(seq=g[0], key=g[1], digest=g[2], outcome=None,
                                           signed_ts=g[3])
        for e in rows:
            self._entries.pop(e.key, None)
            self._entries[e.key] = e
        self._next = (rows[-1].seq + 1) if rows else 0
        stamps = [e.signed_ts for e in [*rows, *self._guards.values()]
                  if e.signed_ts is not None]
        self.high_water_ms = max(stamps) if stamps else None
        if old_cap != self.capacity or not isinstance(meta, dict):
            self._relayout(old_cap)

    def _relayout(self, old_cap: int) -> None:
        """``remember_ids`` changed (or first start): rewrite the rows under the new ring."""
        assert self.store is not None
        while len(self._entries) > self.capacity:
            _, old = self._entries.popitem(last=False)
            if self._protected(old):
                self._guards[old.key] = Entry(seq=old.seq, key=old.key, digest=old.digest,
                                              outcome=None, signed_ts=old.signed_ts)
        writes: list[Write] = [(f"{_ROW}{s}", None) for s in range(old_cap)
                               if old_cap != self.capacity]
        # renumber so the live rows occupy distinct slots of the new ring
        renumbered: OrderedDict[str, Entry] = OrderedDict()
        for i, e in enumerate(self._entries.values()):
            renumbered[e.key] = Entry(seq=i, key=e.key, digest=e.digest, outcome=e.outcome,
                                      signed_ts=e.signed_ts)
        self._entries = renumbered
        self._next = len(renumbered)
        writes += [(self._slot(e.seq), _row(e)) for e in renumbered.values()]
        writes.append((_GUARDS, self._guards_blob()))
        writes.append((_META, json.dumps({"capacity": self.capacity}).encode()))
        self.persist(writes)


def _keepable(outcome: Outcome) -> Outcome:
    if not outcome.ok:
        return outcome
    size = len(json.dumps(dict(outcome.result or {}), default=str))
    if size <= MAX_KEPT_RESULT:
        return outcome
    return Outcome(ok=True, result={"note": "this command already ran; its first result was "
                                            "too large to keep"})


def _row(e: Entry) -> bytes:
    return json.dumps({"n": e.seq, "id": e.key, "d": e.digest, "t": e.signed_ts,
                       "o": e.outcome.to_dict() if e.outcome else None},
                      separators=(",", ":"), default=str).encode()


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _entry(d: Any) -> Entry | None:
    if not isinstance(d, dict):
        return None
    seq, key, digest, ts, o = d.get("n"), d.get("id"), d.get("d"), d.get("t"), d.get("o")
    if not (isinstance(seq, int) and isinstance(key, str) and isinstance(digest, str)
            and (ts is None or isinstance(ts, int)) and isinstance(o, dict)):
        return None
    try:
        outcome = Outcome.from_dict(o)
    except ValueError:
        return None
    return Entry(seq=seq, key=key, digest=digest, outcome=outcome, signed_ts=ts)
