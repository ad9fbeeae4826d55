"""Shared fixtures: a private Mosquitto per test on a free loopback port, a hostile loop."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker, find_mosquitto

# no test may touch real hardware or drop lgpio's notify pipe into the checkout
os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """A Mosquitto of this test's own; `await broker.stop()` / `restart()` as needed."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it from Debian's packages)")
    async with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test uses."""
    return "t/" + request.node.name.replace("[", "_").replace("]", "_")[:40]
