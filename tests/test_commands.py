"""The command dispatcher: request bytes in, response bytes out (DESIGN.md 4.5).

The dispatcher's real input is bytes from the broker; its other side is the agent, stood in for
here by :class:`FakeAgent`, a small model of the agent's command surface (overrides per group,
rules with a version, points with writability) that records what it was asked to do.
tests/test_agent_commands.py runs the model and the real agent side by side so that the model's
answers and errors cannot drift from the real ones. Persistence goes through a real SQLite
store. End-to-end runs through Mosquitto live with the agent's tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import (
    BadValue,
    BusError,
    DeviceError,
    DeviceTimeout,
    NotFound,
    Unsupported,
    WriteRejected,
)
from drivers.modbus.registers import Value
from drivers.sample import Quality, Sample
from gateway.codec import (
    CommandRequest,
    Encoding,
    decode_response,
    encode_request,
    sniff_encoding,
)
from gateway.commands import (
    COMMANDS,
    CommandsCfg,
    CommandTarget,
    Dispatcher,
    ErrorCode,
    RulesRejected,
    parse_commands,
)
from gateway.errors import ConfigError
from gateway.store import Store
from simulators.broker import MosquittoBroker, find_mosquitto

GW = "gw-1"
PREFIX = "city/v1"
OWN = f"{PREFIX}/{GW}/cmd/req"
GROUP = f"{PREFIX}/groups/district-1/cmd/req"
NOW = 1_764_032_400.0


# ==================================================================================== doubles
class FakeAgent:
    """The agent's command surface, modelled: what each command would change, and a log."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.groups = {"main-street", "side-street"}
        self.overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self.lighting: dict[str, Any] = {"groups": [{"name": "main-street"}]}
        self.points: dict[tuple[str, str], Value] = {("lamp-1", "dim_level"): 40,
                                                     ("env-1", "temperature"): 23.4}
        self.writable = {("lamp-1", "dim_level")}
        self.broken: set[str] = set()            # devices that time out
        self.trusted = True
        self.clock_offset_ms: int | None = None
        self.gate: asyncio.Event | None = None   # set_override waits for it when present
        self.fail_with: BaseException | None = None

    def _raise(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    @staticmethod
    def version_of(lighting: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(lighting, sort_keys=True).encode()).hexdigest()[:12]

    def state_snapshot(self) -> dict[str, Any]:
        self._raise()
        return {"levels": {"main-street": 40}, "clock_trusted": self.trusted,
                "since": dt.datetime(2025, 11, 25, 1, 0, tzinfo=dt.UTC),
                "quality": Quality.GOOD, "overrides": list(self.overrides.values()),
                "nan": float("nan"), "tags": ("a", "b")}

    def clock_trusted(self) -> bool:
        return self.trusted

    async def read_point(self, device: str, point: str) -> Sample:
        self.calls.append(("read_point", {"device": device, "point": point}))
        self._raise()
        if device in self.broken:
            raise DeviceTimeout(f"modbus lan unit 3: read {point} timed out after 0.5 s")
        if (device, point) not in self.points:
            raise NotFound(f"no point {device}.{point}")
        return Sample(device, point, 1_764_032_400_000, self.points[device, point])

    async def write_point(self, device: str, point: str, value: Value) -> None:
        self.calls.append(("write_point", {"device": device, "point": point, "value": value}))
        self._raise()
        if device in self.broken:
            raise DeviceError(f"modbus lan: {device} is offline")
        if (device, point) not in self.points:
            raise NotFound(f"no point {device}.{point}")
        if (device, point) not in self.writable:
            raise WriteRejected(f"{device}.{point} is not writable")
        self.points[device, point] = value

    def set_override(self, *, group: str, level: float, duration_s: float | None,
                     priority: int, source: str) -> dict[str, Any]:
        self.calls.append(("set_override", {"group": group, "level": level,
                                            "duration_s": duration_s, "priority": priority,
                                            "source": source}))
        self._raise()
        if group not in self.groups and group != "*":
            raise NotFound(f"no lighting group {group!r}")
        expires = (dt.datetime.fromtimestamp(NOW + duration_s, dt.UTC).isoformat()
                   if duration_s else None)
        ov = {"group": group, "level": float(level), "priority": priority,
              "expires_at": expires}
        self.overrides[group, source] = ov
        return ov

    def clear_override(self, *, group: str, source: str | None) -> dict[str, Any]:
        self.calls.append(("clear_override", {"group": group, "source": source}))
        if group not in self.groups and group != "*":
            raise NotFound(f"no lighting group {group!r}")
        gone = [k for k in self.overrides if k[0] == group and source in (None, k[1])]
        for k in gone:
            del self.overrides[k]
        return {"group": group, "cleared": len(gone)}

    def get_rules(self) -> dict[str, Any]:
        return {"version": self.version_of(self.lighting), "lighting": self.lighting}

    async def set_rules(self, lighting: dict[str, Any] | None,
                        alerts: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(("set_rules", {"lighting": lighting}))
        if lighting is None:
            raise RulesRejected([("lighting", "this model only knows lighting rules")])
        groups = lighting.get("groups")
        if not isinstance(groups, list):
            raise RulesRejected([("lighting.groups", "must be a list of groups")])
        problems = [(f"lighting.groups[{i}].name", "required") for i, g in enumerate(groups)
                    if not isinstance(g, dict) or "name" not in g]
        if problems:
            raise RulesRejected(problems)
        self.lighting = lighting
        return {"version": self.version_of(lighting), "warnings": []}

    def sync_time(self, *, epoch_ms: int, set_clock: bool) -> dict[str, Any]:
        self.calls.append(("sync_time", {"epoch_ms": epoch_ms, "set_clock": set_clock}))
        self.trusted = True
        self.clock_offset_ms = epoch_ms - int(NOW * 1000)
        return {"clock_trusted": True, "clock_set": set_clock,
                "offset_ms": self.clock_offset_ms}

    def get_config(self) -> dict[str, Any]:
        self.calls.append(("get_config", {}))
        return {"digest": "d0", "config": {"gateway": {"id": "gw1"}}}

    def set_config(self, config: Any, probation_s: float | None) -> dict[str, Any]:
        self.calls.append(("set_config", {"probation_s": probation_s}))
        return {"accepted": True, "changed": True, "digest": "d1"}


class SlowAgent(FakeAgent):
    """set_override waits on a gate, so two deliveries of one request overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def set_rules(self, lighting: dict[str, Any] | None,
                        alerts: dict[str, Any] | None = None) -> dict[str, Any]:
        self.entered.set()
        assert self.gate is not None
        await self.gate.wait()
        return await super().set_rules(lighting, alerts)


class Clock:
    """A wall clock and a monotonic clock that only move when told."""

    def __init__(self, wall: float = NOW) -> None:
        self.wall = wall
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


Events = list[tuple[str, str | None, dict[str, Any]]]


def make(agent: FakeAgent | None = None, *, store: Store | None = None,
         clock: Clock | None = None, events: Events | None = None,
         **cfg: Any) -> Dispatcher:
    clock = clock or Clock()
    sink = events if events is not None else []
    return Dispatcher(agent or FakeAgent(), cfg=CommandsCfg.model_validate(cfg), store=store,
                      emit=lambda t, d, detail: sink.append((t, d, detail)),
                      gateway_id=GW, topic_prefix=PREFIX, clock=clock.time,
                      monotonic=clock.monotonic)


def request(rid: str | int | None, cmd: str, args: dict[str, Any] | None = None, *,
            encoding: Encoding = Encoding.JSON) -> bytes:
    return encode_request(CommandRequest(id=rid, cmd=cmd, args=args or {}), encoding=encoding)


async def ask(d: Dispatcher, rid: str | int | None, cmd: str,
              args: dict[str, Any] | None = None, *, topic: str = OWN) -> dict[str, Any]:
    return answer(await d.handle(topic, request(rid, cmd, args)))


def answer(payload: bytes) -> dict[str, Any]:
    """The response as the platform reads it."""
    r, _ = decode_response(payload)
    out: dict[str, Any] = {"id": r.id, "ok": r.ok}
    if r.ok:
        out["result"] = dict(r.result or {})
    else:
        assert r.error is not None
        out["code"], out["message"] = r.error.code, r.error.message
    return out


# ================================================================================== commands
def test_the_fake_agent_is_a_command_target() -> None:
    assert isinstance(FakeAgent(), CommandTarget)


async def test_ping_is_answered_by_the_dispatcher() -> None:
    agent = FakeAgent()
    d = make(agent)
    r = await ask(d, "c-1", "ping")
    assert r == {"id": "c-1", "ok": True,
                 "result": {"pong": True, "gateway": GW, "ts": int(NOW * 1000)}}
    assert agent.calls == []


async def test_get_state_is_plain_data_with_the_dispatchers_counters() -> None:
    d = make()
    await ask(d, "c-0", "nope")
    r = await ask(d, "c-1", "get_state")
    state = r["result"]
    assert state["levels"] == {"main-street": 40}
    assert state["since"] == "2025-11-25T01:00:00+00:00"      # datetimes become ISO text
    assert state["quality"] == "good" and state["nan"] is None and state["tags"] == ["a", "b"]
    assert state["commands"]["received"] == 2
    assert state["commands"]["by_code"] == {"unknown_command": 1}


async def test_set_override_validates_and_passes_typed_arguments() -> None:
    agent = FakeAgent()
    d = make(agent)
    r = await ask(d, "c-1", "set_override",
                  {"group": "main-street", "level": 100, "duration_s": 3600, "priority": 50})
    assert r["ok"] and r["result"]["level"] == 100
    assert r["result"]["expires_at"].startswith("2025-11-25T02:00")
    assert agent.calls == [("set_override", {"group": "main-street", "level": 100.0,
                                             "duration_s": 3600.0, "priority": 50,
                                             "source": "platform"})]
    r = await ask(d, "c-2", "set_override", {"group": "main-street", "level": 20})
    assert r["ok"]
    assert agent.calls[-1][1]["duration_s"] is None and agent.calls[-1][1]["priority"] == 50


@pytest.mark.parametrize(("args", "field", "problem"), [
    ({"group": "main-street", "level": 150}, "level", "less than or equal to 100"),
    ({"group": "main-street", "level": "100"}, "level", "must be a number"),
    ({"group": "main-street", "level": 50, "priority": True}, "priority",
     "must be an integer"),
    ({"group": "main-street", "level": 50, "priority": 1000}, "priority", "999"),
    ({"group": "main-street", "level": 50, "duration_s": 0}, "duration_s", "greater than 0"),
    ({"group": "main-street", "level": 50, "colour": "red"}, "colour", "unexpected"),
    ({"level": 50}, "group", "required"),
    ({"group": "", "level": 50}, "group", "at least 1 character"),
    ({"group": 7, "level": 50}, "group", "must be a string"),
])
async def test_set_override_wrong_arguments_name_the_field(args: dict[str, Any], field: str,
                                                           problem: str) -> None:
    agent = FakeAgent()
    r = await ask(make(agent), "c-1", "set_override", args)
    assert r["code"] == "bad_args" and r["id"] == "c-1"
    assert f"{field}: " in r["message"] and problem in r["message"]
    assert agent.calls == []


async def test_set_override_unknown_group_is_not_found() -> None:
    r = await ask(make(), "c-1", "set_override", {"group": "nowhere", "level": 10})
    assert r["code"] == "not_found" and "nowhere" in r["message"]


async def test_clear_override() -> None:
    agent = FakeAgent()
    d = make(agent)
    await ask(d, "c-1", "set_override", {"group": "main-street", "level": 100})
    r = await ask(d, "c-2", "clear_override", {"group": "main-street"})
    assert r == {"id": "c-2", "ok": True, "result": {"group": "main-street", "cleared": 1}}
    assert agent.calls[-1] == ("clear_override", {"group": "main-street", "source": None})
    r = await ask(d, "c-3", "clear_override", {"group": "atlantis"})
    assert r["code"] == "not_found"
    r = await ask(d, "c-4", "clear_override", {})
    assert r["code"] == "bad_args" and "group: required" in r["message"]


async def test_rules_set_and_get_and_invalid_rules_keep_the_old_ones() -> None:
    agent = FakeAgent()
    d = make(agent)
    before = (await ask(d, "c-1", "get_rules"))["result"]
    new = {"groups": [{"name": "main-street"}, {"name": "park"}]}
    r = await ask(d, "c-2", "set_rules", {"lighting": new})
    assert r["ok"] and r["result"]["version"] == FakeAgent.version_of(new)
    assert r["result"]["version"] != before["version"]
    assert (await ask(d, "c-3", "get_rules"))["result"]["lighting"] == new

    bad = {"groups": [{"name": "a"}, {"level": 3}, {}]}
    r = await ask(d, "c-4", "set_rules", {"lighting": bad})
    assert r["code"] == "invalid_rules"
    assert "lighting.groups[1].name: required" in r["message"]
    assert "lighting.groups[2].name: required" in r["message"]
    assert "old rules stay in force" in r["message"]
    assert (await ask(d, "c-5", "get_rules"))["result"]["lighting"] == new


async def test_set_rules_without_the_lighting_key_says_how_to_send_it() -> None:
    r = await ask(make(), "c-1", "set_rules", {"groups": []})
    assert r["code"] == "bad_args"
    assert "groups: unexpected (takes alerts, lighting)" in r["message"]
    assert '{"lighting": {...}, "alerts": {...}}' in r["message"]
    r = await ask(make(), "c-1", "set_rules", {})
    assert r["code"] == "bad_args" and "give `lighting`, `alerts` or both" in r["message"]
    r = await ask(make(), "c-1", "set_rules", {"lighting": [1, 2]})
    assert r["code"] == "bad_args" and "lighting: must be an object" in r["message"]


async def test_many_rules_problems_are_cut_short() -> None:
    r = await ask(make(), "c-1", "set_rules", {"lighting": {"groups": [{}] * 200}})
    assert r["code"] == "invalid_rules" and "and 180 more" in r["message"]
    assert len(r["message"]) <= 2000


async def test_read_point() -> None:
    agent = FakeAgent()
    agent.broken.add("env-9")
    d = make(agent)
    r = await ask(d, "c-1", "read_point", {"device": "env-1", "point": "temperature"})
    assert r["result"] == {"device": "env-1", "point": "temperature", "ts": 1_764_032_400_000,
                           "value": 23.4, "quality": "good"}
    r = await ask(d, "c-2", "read_point", {"device": "env-1", "point": "nope"})
    assert r["code"] == "not_found" and r["message"] == "read_point: no point env-1.nope"
    r = await ask(d, "c-3", "read_point", {"device": "env-9", "point": "temperature"})
    assert r["code"] == "device_error" and "timed out" in r["message"]
    r = await ask(d, "c-4", "read_point", {"device": "env-1"})
    assert r["code"] == "bad_args" and "point: required" in r["message"]


async def test_write_point() -> None:
    agent = FakeAgent()
    agent.points["lamp-2", "dim_level"] = 0
    agent.writable.add(("lamp-2", "dim_level"))
    agent.broken.add("lamp-2")
    d = make(agent)
    r = await ask(d, "c-1", "write_point", {"device": "lamp-1", "point": "dim_level",
                                            "value": 75})
    assert r == {"id": "c-1", "ok": True,
                 "result": {"device": "lamp-1", "point": "dim_level", "value": 75}}
    assert agent.points["lamp-1", "dim_level"] == 75
    r = await ask(d, "c-2", "write_point", {"device": "env-1", "point": "temperature",
                                            "value": 1.5})
    assert r["code"] == "rejected" and "not writable" in r["message"]
    r = await ask(d, "c-3", "write_point", {"device": "lamp-2", "point": "dim_level",
                                            "value": 1})
    assert r["code"] == "device_error" and "offline" in r["message"]
    r = await ask(d, "c-4", "write_point", {"device": "lamp-1", "point": "dim_level",
                                            "value": [75]})
    assert r["code"] == "bad_args"
    assert r["message"] == ("write_point: value: must be true or false, an integer, a number "
                            "or a string")
    r = await ask(d, "c-4b", "write_point", {"device": "lamp-1", "point": "dim_level",
                                             "value": "x" * 300})
    assert r["message"] == "write_point: value: string should have at most 256 characters"
    r = await ask(d, "c-4c", "set_override", {"group": "main-street", "level": 10**400})
    assert r["code"] == "bad_args" and "level" in r["message"]
    r = await ask(d, "c-5", "write_point", {"device": "lamp-1", "point": "dim_level",
                                            "value": True})
    assert r["ok"] and agent.points["lamp-1", "dim_level"] is True


@pytest.mark.parametrize("allowed", [False, True])
async def test_sync_time_sets_the_clock_only_where_permitted(allowed: bool) -> None:
    agent = FakeAgent()
    agent.trusted = False
    d = make(agent, allow_set_time=allowed)
    r = await ask(d, "c-1", "sync_time", {"epoch_ms": 1_764_032_401_500})
    assert r["ok"] and r["result"]["clock_set"] is allowed
    assert agent.calls == [("sync_time", {"epoch_ms": 1_764_032_401_500,
                                          "set_clock": allowed})]
    assert agent.trusted


@pytest.mark.parametrize("epoch_ms", [0, 1_000_000_000, 10**17, 1.7e12, "1764032400000"])
async def test_sync_time_refuses_an_implausible_time(epoch_ms: object) -> None:
    agent = FakeAgent()
    r = await ask(make(agent), "c-1", "sync_time", {"epoch_ms": epoch_ms})
    assert r["code"] == "bad_args" and "epoch_ms" in r["message"]
    assert agent.calls == []


@pytest.mark.parametrize("cmd", ["ping", "get_state", "get_rules"])
async def test_commands_without_arguments_refuse_some(cmd: str) -> None:
    r = await ask(make(), "c-1", cmd, {"verbose": True})
    assert r["code"] == "bad_args" and "verbose: unexpected" in r["message"]


async def test_unknown_command_lists_the_known_ones() -> None:
    r = await ask(make(), "c-1", "reboot")
    assert r["code"] == "unknown_command"
    assert "'reboot'" in r["message"] and all(name in r["message"] for name in COMMANDS)


# ====================================================================== exceptions -> codes
@pytest.mark.parametrize(("exc", "code"), [
    (NotFound("no group 'x'"), "not_found"),
    (RulesRejected([("groups", "bad")]), "invalid_rules"),
    (WriteRejected("not writable"), "rejected"),
    (BadValue("level above the group's maximum"), "bad_args"),
    (DeviceError("gone"), "device_error"),
    (DeviceTimeout("slow"), "device_error"),
    (BusError("port gone"), "device_error"),
    (Unsupported("no lighting configured"), "unsupported"),
    # only our own typed errors are named: the built-in ones are bugs, not answers
    (KeyError("a dict lookup in a bug"), "internal"),
    (ValueError("a bug"), "internal"),
    (TimeoutError(), "internal"),
    (ConnectionRefusedError("refused"), "internal"),
    (NotImplementedError("a stub"), "internal"),
    (RuntimeError("bug"), "internal"),
    (ZeroDivisionError(), "internal"),
])
async def test_target_exceptions_become_codes(exc: BaseException, code: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    agent = FakeAgent()
    agent.fail_with = exc
    d = make(agent)
    r = await ask(d, "c-1", "set_override", {"group": "main-street", "level": 1})
    assert r["id"] == "c-1" and r["code"] == code
    r = await ask(d, "c-2", "read_point", {"device": "env-1", "point": "temperature"})
    assert r["code"] == code
    if code == "internal":
        assert "Traceback" in caplog.text and type(exc).__name__ in r["message"]


async def test_an_unencodable_result_is_an_internal_error() -> None:
    class Weird(FakeAgent):
        def get_rules(self) -> dict[str, Any]:
            return {"version": 10**30}         # msgpack cannot carry it

    r = answer(await make(Weird()).handle(OWN, request("c-1", "get_rules",
                                                       encoding=Encoding.MSGPACK)))
    assert r == {"id": "c-1", "ok": False, "code": "internal",
                 "message": "the result could not be encoded"}


async def test_results_are_made_plain() -> None:
    class Color(Enum):
        RED = "red"

    class Rich(FakeAgent):
        def get_rules(self) -> dict[Any, Any]:
            return {"version": "v", "set": {3, 1, 2}, "enum": Color.RED, "bytes": b"\x01\xff",
                    "date": dt.date(2025, 1, 2), "inf": float("inf"), 5: "int key",
                    "sample": Sample("d", "p", 1, 2.0)}

    r = await ask(make(Rich()), "c-1", "get_rules")
    assert r["result"] == {"version": "v", "set": [1, 2, 3], "enum": "red", "bytes": "01ff",
                           "date": "2025-01-02", "inf": None, "5": "int key",
                           "sample": {"device": "d", "point": "p", "ts": 1, "value": 2.0,
                                      "quality": "good"}}


async def test_a_failing_audit_sink_does_not_fail_the_command(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object) -> None:
        raise OSError("disk full")

    d = Dispatcher(FakeAgent(), cfg=CommandsCfg(), store=None, emit=broken, gateway_id=GW)
    assert (await ask(d, "c-1", "ping"))["ok"]
    assert "could not emit" in caplog.text


# =============================================================================== malformed
@pytest.mark.parametrize(("payload", "problem"), [
    (b"{", "not valid JSON"),
    (b'{"id": "c-1", "cmd": "ping"', "not valid JSON"),
    (b"{\xff\xfe}", "not UTF-8"),
    (b"", "nor valid msgpack"),
    (b"hello", "nor valid msgpack"),
    (b"[1, 2]", "nor valid msgpack"),
    (msgpack.packb([1, 2]), "expected an object"),
    (b'{"cmd": "ping"}', "id is required"),
    (b'{"id": null, "cmd": "ping"}', "id is required"),
    (b'{"id": true, "cmd": "ping"}', "id must be"),
    (b'{"id": 1.5, "cmd": "ping"}', "id must be"),
    (b'{"id": "", "cmd": "ping"}', "id must be"),
    (b'{"id": "' + b"x" * 200 + b'", "cmd": "ping"}', "id must be"),
    (b'{"id": ["c-1"], "cmd": "ping"}', "id must be"),
    (b'{"id": "\\ud800", "cmd": "ping"}', "id must be"),
    (b'{"id": 100000000000000000000, "cmd": "ping"}', "id must be"),
])
async def test_unparseable_requests_get_id_null(payload: bytes, problem: str) -> None:
    events: Events = []
    d = make(events=events)
    r = answer(await d.handle(OWN, payload))
    assert r["id"] is None and r["code"] == "malformed" and problem in r["message"]
    assert d.stats.malformed == 1
    assert events[-1][2]["code"] == "malformed" and events[-1][2]["id"] is None


@pytest.mark.parametrize(("payload", "problem"), [
    (b'{"id": "c-1"}', "cmd must be a non-empty string"),
    (b'{"id": "c-1", "cmd": 5}', "cmd must be a non-empty string"),
    (b'{"id": "c-1", "cmd": "ping", "args": [1]}', "args must be an object"),
])
async def test_parseable_but_unusable_requests_keep_their_id(payload: bytes,
                                                             problem: str) -> None:
    r = answer(await make().handle(OWN, payload))
    assert r == {"id": "c-1", "ok": False, "code": "malformed",
                 "message": r["message"]} and problem in r["message"]


async def test_null_args_mean_none() -> None:
    r = answer(await make().handle(OWN, b'{"id": 7, "cmd": "ping", "args": null}'))
    assert r["id"] == 7 and r["ok"]


async def test_user_text_in_messages_is_escaped_and_short() -> None:
    payload = json.dumps({"id": "c-1", "cmd": "\ud800" + "x" * 5000}).encode()
    raw = await make().handle(OWN, payload)
    r = answer(raw)
    assert r["code"] == "unknown_command" and "\\ud800" in r["message"]
    assert len(raw) < 1000


# ========================================================================== encoding, size
async def test_msgpack_request_gets_a_msgpack_response() -> None:
    d = make()
    raw = await d.handle(OWN, request("c-1", "set_override",
                                      {"group": "main-street", "level": 40},
                                      encoding=Encoding.MSGPACK))
    assert sniff_encoding(raw) is Encoding.MSGPACK
    obj = msgpack.unpackb(raw)
    assert obj["id"] == "c-1" and obj["ok"] is True
    raw = await d.handle(OWN, msgpack.packb({"id": 9, "cmd": "nope"}))
    assert msgpack.unpackb(raw)["error"]["code"] == "unknown_command"
    raw = await d.handle(OWN, b"\xc1")                     # never valid msgpack
    assert msgpack.unpackb(raw) == {"id": None, "ok": False, "error": {
        "code": "malformed", "message": "neither JSON (starting with '{') nor valid msgpack"}}


async def test_msgpack_bytes_are_not_strings() -> None:
    raw = await make().handle(OWN, msgpack.packb(
        {"id": "c-1", "cmd": "read_point", "args": {"device": b"env-1", "point": "t"}},
        use_bin_type=True))
    r = answer(raw)
    assert r["code"] == "bad_args" and "device: must be a string" in r["message"]


async def test_oversize_payload_is_refused_unparsed() -> None:
    agent = FakeAgent()
    events: Events = []
    d = make(agent, events=events, max_payload_bytes=1024)
    big = request("c-1", "set_rules", {"lighting": {"groups": [{"name": "x" * 2000}]}})
    r = answer(await d.handle(OWN, big))
    assert r["id"] is None and r["code"] == "too_large"
    assert f"{len(big)} bytes" in r["message"] and "1024" in r["message"]
    assert agent.calls == [] and d.stats.too_large == 1
    assert events == [("command", None, {"id": None, "cmd": None, "ok": False, "source": OWN,
                                         "ms": 0.0, "code": "too_large"})]
    big_mp = request("c-2", "set_rules", {"lighting": {"x": "y" * 2000}},
                     encoding=Encoding.MSGPACK)
    assert sniff_encoding(await d.handle(OWN, big_mp)) is Encoding.MSGPACK


# ============================================================================== rate limit
async def test_rate_limit_per_source_with_one_event_per_episode() -> None:
    clock = Clock()
    events: Events = []
    agent = FakeAgent()
    d = make(agent, clock=clock, events=events,
             rate_limit={"per_source_per_minute": 60, "burst": 3})
    codes = [(await ask(d, f"c-{i}", "ping"))["ok"] for i in range(6)]
    assert codes == [True, True, True, False, False, False]
    r = await ask(d, "c-9", "ping")
    assert r["code"] == "rate_limited" and r["id"] == "c-9" and "60" in r["message"]
    # another source has its own bucket
    assert (await ask(d, "g-1", "ping", topic=GROUP))["ok"]
    limited = [e for e in events if e[0] == "command_rate_limited"]
    assert len(limited) == 1 and limited[0][2]["source"] == OWN
    assert not any(e[2].get("id") == "c-9" for e in events)   # no event per refused request
    clock.advance(1.0)                                         # one token back
    assert (await ask(d, "c-10", "ping"))["ok"]
    assert len([e for e in events if e[0] == "command_rate_limited"]) == 1
    clock.advance(60.0)                                        # a quiet minute: reported
    assert (await ask(d, "c-11", "ping"))["ok"]
    reports = [e[2] for e in events if e[0] == "command_rate_limited"]
    assert reports == [
        {"source": OWN, "refused": 1, "ended": False, "per_minute": 60, "burst": 3},
        {"source": OWN, "refused": 3, "ended": True, "per_minute": 60, "burst": 3}]
    assert d.stats.rate_limited == 4


async def test_a_flood_makes_a_bounded_number_of_events() -> None:
    clock = Clock()
    events: Events = []
    d = make(clock=clock, events=events, rate_limit={"per_source_per_minute": 60, "burst": 5})
    for i in range(3000):                       # 50 requests a second for a minute
        await d.handle(OWN, b"garbage" if i % 2 else request(f"c-{i}", "ping"))
        clock.advance(0.02)
    assert d.stats.rate_limited > 2000
    assert len([e for e in events if e[0] == "command_rate_limited"]) <= 2
    assert len(events) < 100                    # the accepted ones (one a second) and those


async def test_oversize_and_malformed_requests_count_against_the_limit() -> None:
    d = make(rate_limit={"per_source_per_minute": 1, "burst": 2}, max_payload_bytes=1024)
    assert answer(await d.handle(OWN, b"x" * 2000))["code"] == "too_large"
    assert answer(await d.handle(OWN, b"{"))["code"] == "malformed"
    assert answer(await d.handle(OWN, b"x" * 2000))["code"] == "rate_limited"
    assert (await ask(d, "c-1", "ping"))["code"] == "rate_limited"


# ============================================================================= idempotency
async def test_a_repeated_id_gets_the_first_response_without_running_again() -> None:
    agent = FakeAgent()
    events: Events = []
    d = make(agent, events=events)
    args = {"group": "main-street", "level": 100, "duration_s": 60}
    first = await d.handle(OWN, request("c-1", "set_override", args))
    again = await d.handle(OWN, request("c-1", "set_override", args))
    assert again == first
    assert [c[0] for c in agent.calls] == ["set_override"]
    assert events[-1][2]["duplicate"] is True and d.stats.duplicates == 1
    # the same request in msgpack is the same request: answered in msgpack
    mp = await d.handle(OWN, request("c-1", "set_override", args, encoding=Encoding.MSGPACK))
    assert answer(mp) == answer(first) and len(agent.calls) == 1
    # a failure is remembered too: the command ran
    r1 = await ask(d, "c-2", "set_override", {"group": "nowhere", "level": 1})
    r2 = await ask(d, "c-2", "set_override", {"group": "nowhere", "level": 1})
    assert r1 == r2 and r1["code"] == "not_found" and len(agent.calls) == 2


async def test_an_id_reused_for_another_request_is_refused() -> None:
    agent = FakeAgent()
    d = make(agent)
    await ask(d, "c-1", "set_override", {"group": "main-street", "level": 100})
    r = await ask(d, "c-1", "set_override", {"group": "main-street", "level": 0})
    assert r["code"] == "duplicate_id" and "'c-1'" in r["message"]
    r = await ask(d, "c-1", "get_state")
    assert r["code"] == "duplicate_id"
    assert len(agent.calls) == 1
    # ids are typed: 1 and "1" are different requests
    assert (await ask(d, 1, "set_override", {"group": "main-street", "level": 5}))["ok"]
    assert (await ask(d, "1", "set_override", {"group": "main-street", "level": 5}))["ok"]


async def test_reads_are_answered_afresh_and_bad_requests_are_not_remembered() -> None:
    agent = FakeAgent()
    d = make(agent)
    for _ in range(2):
        await ask(d, "r-1", "read_point", {"device": "env-1", "point": "temperature"})
    assert len(agent.calls) == 2
    r = await ask(d, "c-1", "set_override", {"group": "main-street", "level": "x"})
    assert r["code"] == "bad_args"
    r = await ask(d, "c-1", "set_override", {"group": "main-street", "level": 30})
    assert r["ok"]                           # the fixed request may reuse the refused id


async def test_overlapping_deliveries_run_once() -> None:
    agent = SlowAgent()
    d = make(agent)
    payload = request("c-1", "set_rules", {"lighting": {"groups": []}})
    first = asyncio.create_task(d.handle(OWN, payload))
    await agent.entered.wait()
    second = asyncio.create_task(d.handle(OWN, payload))
    other = asyncio.create_task(d.handle(OWN, request("c-1", "set_rules",
                                                      {"lighting": {"groups": [{}]}})))
    assert answer(await other)["code"] == "duplicate_id"
    assert agent.gate is not None
    agent.gate.set()
    a, b = await first, await second
    assert a == b and answer(a)["ok"]
    assert agent.calls == [("set_rules", {"lighting": {"groups": []}})]


async def test_a_duplicate_waiting_on_a_cancelled_one_still_gets_an_answer() -> None:
    agent = SlowAgent()
    d = make(agent)
    payload = request("c-1", "set_rules", {"lighting": {"groups": []}})
    first = asyncio.create_task(d.handle(OWN, payload))
    await agent.entered.wait()
    second = asyncio.create_task(d.handle(OWN, payload))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    r = answer(await second)
    assert r["code"] == "internal" and "interrupted" in r["message"]


async def test_idempotency_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    args = {"group": "main-street", "level": 100}
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store)
        first = await d.handle(OWN, request("c-1", "set_override", args))
        await ask(d, "c-2", "write_point", {"device": "lamp-1", "point": "dim_level",
                                            "value": 10})
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store)
        assert await d.handle(OWN, request("c-1", "set_override", args)) == first
        r = await ask(d, "c-2", "write_point", {"device": "lamp-1", "point": "dim_level",
                                                "value": 10})
        assert r["ok"] and agent.calls == []
        r = await ask(d, "c-1", "set_override", {"group": "main-street", "level": 1})
        assert r["code"] == "duplicate_id"
        assert (await ask(d, "c-3", "set_override", args))["ok"]
        assert len(agent.calls) == 1


async def test_the_memory_keeps_the_last_ids_only(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store, remember_ids=3)
        for i in range(5):
            await ask(d, f"c-{i}", "set_override", {"group": "main-street", "level": i})
        assert len(d.memory) == 3
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store, remember_ids=3)
        for i in (4, 3, 2, 0):
            await ask(d, f"c-{i}", "set_override", {"group": "main-street", "level": i})
        assert [c[1]["level"] for c in agent.calls] == [0.0]    # c-0 was forgotten


@pytest.mark.parametrize(("before", "after"), [(6, 3), (3, 6)])
async def test_changing_remember_ids_keeps_the_newest(tmp_path: Path, before: int,
                                                      after: int) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        d = make(store=store, remember_ids=before)
        for i in range(5):
            await ask(d, f"c-{i}", "set_override", {"group": "main-street", "level": i})
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store, remember_ids=after)
        for i in reversed(range(5)):
            await ask(d, f"c-{i}", "set_override", {"group": "main-street", "level": i})
        kept = min(before, after, 5)
        assert len(agent.calls) == 5 - kept
    with Store(path) as store:       # and the new layout reads back
        d = make(store=store, remember_ids=after)
        assert len(d.memory) == min(after, 5)


async def test_a_corrupt_memory_row_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        d = make(store=store)
        await ask(d, "c-1", "set_override", {"group": "main-street", "level": 1})
        await ask(d, "c-2", "set_override", {"group": "main-street", "level": 2})
        store.kv_set("commands.ids.0", b"{not json")
    with Store(path) as store:
        agent = FakeAgent()
        d = make(agent, store=store)
        await ask(d, "c-1", "set_override", {"group": "main-street", "level": 1})
        await ask(d, "c-2", "set_override", {"group": "main-street", "level": 2})
        assert [c[1]["level"] for c in agent.calls] == [1.0]


# ==================================================================================== audit
async def test_every_command_is_an_audit_event_without_its_arguments() -> None:
    events: Events = []
    d = make(events=events)
    await ask(d, "c-1", "write_point", {"device": "lamp-1", "point": "dim_level",
                                        "value": "SECRET-VALUE"})
    await ask(d, "c-2", "set_override", {"group": "nowhere", "level": 1}, topic=GROUP)
    assert [e[0] for e in events] == ["command", "command"]
    first, second = events[0][2], events[1][2]
    assert first == {"id": "c-1", "cmd": "write_point", "ok": True, "source": OWN, "ms": 0.0}
    assert second["source"] == GROUP and second["code"] == "not_found"
    assert "SECRET-VALUE" not in json.dumps(events)


async def test_log_lines_carry_no_arguments(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgegw")
    d = make()
    await ask(d, "c-1", "set_rules", {"lighting": {"groups": [{"name": "SECRET-NAME"}]}})
    assert "c-1" in caplog.text and "set_rules" in caplog.text
    assert "SECRET-NAME" not in caplog.text


# ======================================================================================= config
def test_config_section_defaults_and_problems(tmp_path: Path) -> None:
    cfg = parse_commands(None)
    assert cfg == CommandsCfg() and cfg.max_payload_bytes == 65536
    assert cfg.rate_limit.per_source_per_minute == 120 and cfg.rate_limit.burst == 20
    assert cfg.remember_ids == 5000 and not cfg.require_signature and not cfg.allow_set_time
    with pytest.raises(ConfigError) as err:
        parse_commands({"rate_limit": {"burst": 0}, "colour": 1}, source="site.yaml")
    problems = dict(err.value.problems)
    assert set(problems) == {"commands.rate_limit.burst", "commands.colour"}
    assert str(err.value).startswith("site.yaml: commands.")
    with pytest.raises(ConfigError) as err:
        parse_commands({"require_signature": True})
    assert err.value.problems == [("commands", "require_signature needs a `signing:` section "
                                               "with the key file")]
    cfg = parse_commands({"signing": {"public_key_file": "keys/platform.pub"}},
                         base_dir=tmp_path)
    assert cfg.signing is not None
    assert cfg.signing.public_key_file == str(tmp_path / "keys/platform.pub")
    with pytest.raises(ConfigError, match="public_key_file"):
        parse_commands({"signing": {"scheme": "ed25519", "key_file": "x"}})
    with pytest.raises(ConfigError, match="key_file"):
        parse_commands({"signing": {"scheme": "hmac-sha256"}})


# ================================================================================== fuzzing
FUZZ_LIMIT = 4096
FUZZ_CFG: dict[str, Any] = {"rate_limit": {"per_source_per_minute": 60_000, "burst": 10_000},
                            "max_payload_bytes": FUZZ_LIMIT}


def expected_id(payload: bytes, limit: int) -> str | int | None:
    """What the response's id must be: the request's, when it is an object with a usable id."""
    if len(payload) > limit:
        return None
    try:
        if sniff_encoding(payload) is Encoding.JSON:
            obj = json.loads(payload.decode("utf-8"))
        else:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(obj, dict):
        return None
    rid = obj.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int):
        return rid if -(2**63) <= rid < 2**64 else None
    if isinstance(rid, str) and 0 < len(rid) <= 128:
        try:
            rid.encode()
        except UnicodeEncodeError:
            return None
        return rid
    return None


def check_answers(payloads: list[bytes], *, topic: str = OWN) -> None:
    """Every payload gets exactly one decodable response in its encoding, with its id."""
    async def run() -> list[bytes]:
        d = make(rate_limit=FUZZ_CFG["rate_limit"], max_payload_bytes=FUZZ_LIMIT)
        return [await d.handle(topic, p) for p in payloads]

    for payload, raw in zip(payloads, asyncio.run(run()), strict=True):
        response, encoding = decode_response(raw)
        assert encoding is sniff_encoding(payload)
        assert response.id == expected_id(payload, FUZZ_LIMIT), payload
        assert response.ok or (response.error is not None and response.error.code
                               in {c.value for c in ErrorCode})


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
ids = st.one_of(st.text(max_size=140), st.integers(), st.none(), st.booleans(),
                st.floats(), json_values)
commands = st.sampled_from([*COMMANDS, "reboot", "", "PING"])
topics = st.sampled_from([OWN, GROUP, f"{PREFIX}/other/cmd/req", "odd"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_fuzz_random_bytes(payloads: list[bytes]) -> None:
    check_answers(payloads)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["id", "cmd", "args", "sig", "signed", "x"]),
                       json_values, max_size=5),
       ids, commands, json_values, st.booleans(), topics)
def test_fuzz_random_json(extra: dict[str, Any], rid: object, cmd: str, args: object,
                          as_msgpack: bool, topic: str) -> None:
    obj: dict[str, Any] = {"id": rid, "cmd": cmd, "args": args, **extra}
    check_answers([encode(obj, as_msgpack=as_msgpack)] * 2, topic=topic)


def encode(obj: Any, *, as_msgpack: bool) -> bytes:
    """msgpack when it can carry the values (integers beyond 64 bits it cannot), else JSON."""
    if as_msgpack:
        try:
            packed: bytes = msgpack.packb(obj)
            return packed
        except (OverflowError, ValueError):
            pass
    return json.dumps(obj).encode()


VALID: list[dict[str, Any]] = [
    {"cmd": "ping", "args": {}},
    {"cmd": "get_state", "args": {}},
    {"cmd": "get_rules", "args": {}},
    {"cmd": "set_rules", "args": {"lighting": {"groups": [{"name": "main-street"}]}}},
    {"cmd": "set_override", "args": {"group": "main-street", "level": 100, "duration_s": 3600,
                                     "priority": 50}},
    {"cmd": "clear_override", "args": {"group": "main-street"}},
    {"cmd": "read_point", "args": {"device": "env-1", "point": "temperature"}},
    {"cmd": "write_point", "args": {"device": "lamp-1", "point": "dim_level", "value": 75}},
    {"cmd": "sync_time", "args": {"epoch_ms": 1_764_032_400_000}},
]


def mutate(obj: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Drop, replace or retype some fields of a valid request, all the way down."""
    if isinstance(obj, dict) and depth < 4:
        out = {}
        for k, v in obj.items():
            action = data.draw(st.sampled_from(["keep", "keep", "mutate", "drop", "replace"]))
            if action == "keep":
                out[k] = v
            elif action == "mutate":
                out[k] = mutate(v, data, depth + 1)
            elif action == "replace":
                out[k] = data.draw(json_values)
        if data.draw(st.booleans()):
            out[data.draw(st.text(max_size=6))] = data.draw(json_values)
        return out
    if isinstance(obj, list) and depth < 4:
        return [mutate(v, data, depth + 1) for v in obj]
    return data.draw(st.one_of(st.just(obj), scalars))


@settings(max_examples=2000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(VALID), st.text(min_size=1, max_size=10) | st.integers(), st.data())
def test_fuzz_mutated_valid_requests(base: dict[str, Any], rid: str | int,
                                     data: st.DataObject) -> None:
    obj = mutate({"id": rid, **base}, data)
    payload = encode(obj, as_msgpack=data.draw(st.booleans()))
    if data.draw(st.integers(0, 4)) == 0 and payload:          # and sometimes the bytes
        i = data.draw(st.integers(0, len(payload) - 1))
        payload = payload[:i] + bytes([payload[i] ^ data.draw(st.integers(1, 255))]) + \
            payload[i + 1:]
    check_answers([payload])


def test_every_valid_request_works_in_both_encodings() -> None:
    def payloads() -> Iterator[bytes]:
        for n, base in enumerate(VALID):
            yield json.dumps({"id": f"j-{n}", **base}).encode()
            yield msgpack.packb({"id": n, **base})

    async def run() -> list[dict[str, Any]]:
        d = make()
        return [answer(await d.handle(OWN, p)) for p in payloads()]

    answers = asyncio.run(run())
    assert all(a["ok"] for a in answers), [a for a in answers if not a["ok"]]


# ================================================================= the documented broker ACL
DOCS = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def documented_acl() -> str:
    """The Mosquitto ACL that docs/security.md recommends, as written there."""
    text = DOCS.read_text()
    block = text.split("<!-- acl:mosquitto -->", 1)[1]
    return block.split("```text\n", 1)[1].split("```", 1)[0]


class AclBroker(MosquittoBroker):
    """A private Mosquitto with passwords and an ACL file (usernames stand in for the
    certificates' CNs that `use_identity_as_username` maps in production)."""

    def __init__(self, workdir: Path, *, acl: str, users: list[str]) -> None:
        super().__init__(workdir)
        self.acl_path = workdir / "edgegw.acl"
        self.acl_path.write_text(acl)
        self.passwd = workdir / "passwd"
        for n, user in enumerate(users):
            subprocess.run([PASSWD or "mosquitto_passwd", "-b", *(["-c"] if n == 0 else []),
                            str(self.passwd), user, f"pw-{user}"], check=True,
                           capture_output=True)
        self.passwd.chmod(0o600)

    def _write_config(self) -> Path:
        conf = super()._write_config()
        text = conf.read_text().replace(
            "allow_anonymous true",
            f"allow_anonymous false\npassword_file {self.passwd}\nacl_file {self.acl_path}")
        conf.write_text(text)
        return conf


PASSWD = shutil.which("mosquitto_passwd")


@pytest.mark.skipif(find_mosquitto() is None or PASSWD is None,
                    reason="mosquitto and mosquitto_passwd are not installed")
async def test_the_documented_mosquitto_acl_confines_each_gateway(tmp_path: Path) -> None:
    async with AclBroker(tmp_path, acl=documented_acl(),
                         users=["platform", "gw-1", "gw-2"]) as broker:
        def client(user: str) -> aiomqtt.Client:
            return aiomqtt.Client("127.0.0.1", broker.port, username=user,
                                  password=f"pw-{user}", identifier=user,
                                  protocol=aiomqtt.ProtocolVersion.V311)

        async def until_end(c: aiomqtt.Client) -> list[tuple[str, bytes]]:
            seen: list[tuple[str, bytes]] = []
            async with asyncio.timeout(10):
                async for m in c.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    seen.append((str(m.topic), payload))
                    if payload == b"end":
                        return seen
            raise AssertionError("unreachable")

        async with client("platform") as plat, client("gw-1") as g1, client("gw-2") as g2:
            for f in ("city/v1/+/cmd/res", "city/v1/+/events"):
                await plat.subscribe(f, qos=1)
            await g1.subscribe("city/v1/gw-1/cmd/req", qos=1)
            await g1.subscribe("city/v1/groups/district-1/cmd/req", qos=1)
            for f in ("city/v1/gw-1/cmd/req", "city/v1/groups/district-1/cmd/req",
                      "city/v1/gw-2/cmd/req", "city/v1/#"):
                await g2.subscribe(f, qos=1)     # only its own is granted
            await plat.publish("city/v1/gw-1/cmd/req", b"to-gw-1", qos=1)
            await plat.publish("city/v1/groups/district-1/cmd/req", b"to-district-1", qos=1)
            await g1.publish("city/v1/gw-1/cmd/res", b"gw-1-answers", qos=1)
            await g1.publish("city/v1/gw-1/cmd/req", b"gw-1-commands-itself", qos=1)
            for topic in ("city/v1/gw-1/cmd/req", "city/v1/groups/district-1/cmd/req",
                          "city/v1/gw-1/cmd/res", "city/v1/gw-1/events"):
                await g2.publish(topic, b"forged", qos=1)   # PUBACKed, silently dropped
            await plat.publish("city/v1/gw-1/cmd/req", b"end", qos=1)
            await plat.publish("city/v1/gw-2/cmd/req", b"end", qos=1)
            await g2.publish("city/v1/gw-2/cmd/res", b"end", qos=1)
            got_g1, got_g2, got_plat = await until_end(g1), await until_end(g2), \
                await until_end(plat)
    assert [p for _, p in got_g1] == [b"to-gw-1", b"to-district-1", b"end"]
    assert got_g2 == [("city/v1/gw-2/cmd/req", b"end")]
    assert got_plat == [("city/v1/gw-1/cmd/res", b"gw-1-answers"),
                        ("city/v1/gw-2/cmd/res", b"end")]


async def test_sync_time_never_throws_a_trusted_clock_far_away() -> None:
    """73 years ahead was accepted and marked the clock trusted: now refused while the clock
    is trusted, accepted (and logged) only to set an untrusted one."""
    far = int((NOW + 73 * 365 * 86_400) * 1000)
    agent = FakeAgent()
    r = await ask(make(agent), "c-1", "sync_time", {"epoch_ms": far})
    assert r["code"] == "bad_args" and "commands.max_clock_step_s (86400 s)" in r["message"]
    assert agent.calls == []
    near = int((NOW + 3600) * 1000)                    # an hour: within the bound
    assert (await ask(make(agent), "c-2", "sync_time", {"epoch_ms": near}))["ok"]
    agent.trusted = False
    assert (await ask(make(agent), "c-3", "sync_time", {"epoch_ms": far}))["ok"]


def test_signed_ids_stay_guarded_for_the_whole_window() -> None:
    """The guard list is bounded by what the rate limit lets in during one signature window,
    not by a multiple of remember_ids (which let a replay in after 4 x remember_ids ids)."""
    from gateway.commands.memory import IdMemory, Outcome

    now = [1_000_000]
    mem = IdMemory(capacity=2, store=None, window_ms=300_000, wall_ms=lambda: now[0],
                   max_guards=1000)
    for i in range(50):                                # 25 x capacity, all inside the window
        mem.remember(f"s-{i}", digest="d", outcome=Outcome(ok=True, result={}),
                     signed_ts=now[0])
    assert all(mem.get(f"s-{i}") is not None for i in range(50))
    now[0] += 301_000                                  # the window passed: guards may go
    mem.remember("s-new", digest="d", outcome=Outcome(ok=True, result={}), signed_ts=now[0])
    assert mem.get("s-0") is None and mem.guards == 0
