"""The command tests' stand-in (tests/test_commands.py's FakeAgent) against the real thing.

The dispatcher's tests drive a small model of the agent; here the same calls go to both the
model and the real :class:`~gateway.agent_commands.AgentCommands` (a running agent, simulated
LED drivers over Modbus TCP), and each must answer with the same result keys and fail with the
same typed error, so the model cannot drift from what the platform really gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.commands import CommandTarget, RulesRejected
from gateway.errors import NotFound, WriteRejected
from gateway.runtime import Agent
from simulators.runner import open_spec
from tests.helpers import gateway_config
from tests.test_commands import FakeAgent

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"
PARIS = {"lat": 48.8566, "lon": 2.3522, "timezone": "Europe/Paris"}
RULES: dict[str, Any] = {
    "programs": {"all-day": {"steps": [{"at": "00:00", "level": 60}]}},
    "groups": [{"name": "main-street", "program": "all-day",
                "outputs": [{"device": "lamp-1", "point": "dim_level", "watts": 60}]},
               {"name": "side-street", "program": "all-day",
                "outputs": [{"device": "lamp-2", "point": "dim_level", "watts": 60}]}],
}

Call = Callable[[CommandTarget], Awaitable[Any]]


async def _sync(value: Any) -> Any:
    return value


CALLS: list[tuple[str, Call, type[BaseException] | None]] = [
    ("set_override", lambda t: _sync(t.set_override(
        group="main-street", level=100, duration_s=60, priority=50, source="platform")), None),
    ("set_override forever", lambda t: _sync(t.set_override(
        group="main-street", level=30, duration_s=None, priority=50, source="platform")), None),
    ("set_override unknown group", lambda t: _sync(t.set_override(
        group="atlantis", level=1, duration_s=None, priority=1, source="platform")), NotFound),
    ("clear_override", lambda t: _sync(t.clear_override(group="main-street", source=None)),
     None),
    ("clear_override unknown group", lambda t: _sync(t.clear_override(group="atlantis",
                                                                       source=None)), NotFound),
    ("get_rules", lambda t: _sync(t.get_rules()), None),
    ("read_point unknown device", lambda t: t.read_point("nobody", "x"), NotFound),
    ("write_point read-only", lambda t: t.write_point("env-1", "temperature", 1), None),
    ("sync_time", lambda t: _sync(t.sync_time(epoch_ms=1_764_032_400_000, set_clock=False)),
     None),
    ("set_rules invalid", lambda t: t.set_rules({"groups": "not a list"}), RulesRejected),
]


def _shape(value: Any) -> Any:
    """Keys and the JSON kinds of the values, not the values themselves."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


async def _outcome(target: CommandTarget, call: Call) -> tuple[str, Any]:
    try:
        result = await call(target)
    except Exception as err:
        return "raised", type(err)
    return "ok", result


@pytest.mark.parametrize(("name", "call", "raises"), CALLS, ids=[c[0] for c in CALLS])
async def test_the_model_answers_like_the_agent(tmp_path: Path, name: str, call: Call,
                                                raises: type[BaseException] | None) -> None:
    fake = FakeAgent()
    fake.points[("env-1", "temperature")] = 23.4            # read-only in both
    async with open_spec(SPEC, ephemeral=True) as sim:
        cfg = gateway_config(sim, broker_url="mqtt://127.0.0.1:1", store=tmp_path / "s.db",
                             extra={"gateway": {"id": "gw-m", "location": PARIS,
                                                "has_rtc": True},
                                    "lighting": RULES})
        async with Agent(cfg, uplink=False) as agent:
            real = await _outcome(agent.commands, call)
    model = await _outcome(fake, call)
    if name == "write_point read-only":
        # the real point is read-only: both refuse it before the wire
        assert real == ("raised", WriteRejected) and model == ("raised", WriteRejected)
        return
    if raises is not None:
        assert real == ("raised", raises) or (real[0] == "raised"
                                              and issubclass(real[1], raises)), real
        assert model[0] == "raised" and issubclass(model[1], raises), model
        return
    assert real[0] == model[0] == "ok", (real, model)
    if name == "get_rules":      # the rules themselves differ; the envelope must not
        assert set(real[1]) >= {"version", "lighting"} and set(model[1]) >= {"version",
                                                                              "lighting"}
        return
    assert _shape(real[1]) == _shape(model[1]), (real[1], model[1])
