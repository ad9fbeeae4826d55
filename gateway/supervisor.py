"""The supervisor: every long-running task of the agent, started, watched and restarted here.

Each component (a bus, a serial reader, the lighting loop, the alert monitor, the pipeline,
the publisher, the outbox's writer, the MQTT link, the control socket, health, the systemd
notifier) is a coroutine ``serve()`` that runs until cancelled. The supervisor runs it in a
named task and:

- when it raises, logs the traceback, reports ``component_failed`` (through ``on_failure``)
  and starts it again after a capped, jittered backoff; the backoff starts over once the
  component ran for a while;
- when a *critical* component (the gateway cannot work without it) fails more than
  ``max_failures`` times within ``window`` seconds, gives up: :attr:`Supervisor.failed` is set
  and the agent exits non-zero, so systemd starts a fresh process;
- when a component raises one of its ``permanent`` exceptions (a configuration it cannot
  change), reports it once and leaves it stopped;
- keeps each watched component's heartbeat: a component calls its ``beat()`` as it makes
  progress, and one that has not for ``stall_after`` seconds is *stalled*. :meth:`alive` is
  False while a watched component is stalled or a critical one gave up: the systemd watchdog
  is petted only while it is True, so a wedged loop gets the agent restarted.

``beat()`` is also the components' test seam: :meth:`Component.inject` makes the next beat
raise, so a test crashes a real component from inside its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from drivers.backoff import Backoff
from gateway.errors import GatewayError

__all__ = ["Component", "ComponentFailed", "ComponentState", "Supervisor"]

log = logging.getLogger("edgegw.supervisor")

_HEALTHY_RUN = 60.0          # a component that ran this long has its backoff reset


class ComponentState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"      # failed, waiting for its backoff
    FAILED = "failed"              # gave up (critical, or a permanent error)
    STOPPED = "stopped"


class ComponentFailed(GatewayError):
    """A critical component kept failing: the agent cannot work and exits."""

    def __init__(self, component: str, error: BaseException) -> None:
        super().__init__(f"component {component} kept failing; last: "
                         f"{type(error).__name__}: {error}")
        self.component = component
        self.error = error


@dataclass(eq=False)
class Component:
    name: str
    run: Callable[[], Awaitable[None]]
    critical: bool = False
    stall_after: float | None = None
    permanent: tuple[type[BaseException], ...] = ()
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.5, cap=60.0))
    state: ComponentState = ComponentState.RUNNING
    restarts: int = 0
    last_error: str | None = None
    failed_at: float | None = None            # wall clock of the last failure
    last_beat: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    _inject: BaseException | None = None
    _inject_always: bool = False

    def beat(self) -> None:
        """Progress: called by the component from its own loop."""
        self.last_beat = time.monotonic()
        if self._inject is not None:
            exc = self._inject
            if self._inject_always:
                raise type(exc)(*exc.args)
            self._inject = None
            raise exc

    def inject(self, exc: BaseException, *, always: bool = False) -> None:
        """Test seam: the component's next ``beat()`` raises ``exc`` (every beat from now
        on with ``always``)."""
        self._inject, self._inject_always = exc, always

    def stalled(self, now: float | None = None) -> bool:
        if self.stall_after is None or self.state is not ComponentState.RUNNING:
            return False
        return (now if now is not None else time.monotonic()) - self.last_beat > self.stall_after

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        return {"state": "stalled" if self.stalled(now) else self.state.value,
                "critical": self.critical, "restarts": self.restarts,
                "last_error": self.last_error, "failed_at": self.failed_at}


OnFailure = Callable[[Component, BaseException, bool], None]


class Supervisor:
    """Runs and watches the components (see the module docstring)."""

    def __init__(self, *, on_failure: OnFailure | None = None, max_failures: int = 5,
                 window: float = 300.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.components: dict[str, Component] = {}
        self._on_failure = on_failure
        self.max_failures = max_failures
        self.window = window
        self._wall = wall_clock
        self.failed: asyncio.Future[ComponentFailed] = (
            asyncio.get_running_loop().create_future())

    def start(self, name: str, run: Callable[[], Awaitable[None]], *, critical: bool = False,
              stall_after: float | None = None,
              permanent: tuple[type[BaseException], ...] = (),
              backoff_cap: float = 60.0) -> Component:
        if name in self.components and self.components[name].task is not None:
            raise ValueError(f"component {name!r} is already running")
        c = Component(name, run, critical=critical, stall_after=stall_after,
                      permanent=permanent, backoff=Backoff(first=min(0.5, backoff_cap),
                                                           cap=backoff_cap))
        self.components[name] = c
        c.task = asyncio.create_task(self._supervise(c), name=name)
        return c

    def set_failure_handler(self, on_failure: OnFailure) -> None:
        self._on_failure = on_failure

    async def _supervise(self, c: Component) -> None:
        failures: deque[float] = deque()
        while True:
            c.state = ComponentState.RUNNING
            c.last_beat = started = time.monotonic()
            try:
                await c.run()
            except asyncio.CancelledError:
                c.state = ComponentState.STOPPED
                raise
            except Exception as err:
                now = time.monotonic()
                if now - started >= _HEALTHY_RUN:
                    c.backoff.reset()
                failures.append(now)
                while failures and now - failures[0] > self.window:
                    failures.popleft()
                permanent = isinstance(err, c.permanent)
                give_up = permanent or (c.critical and len(failures) > self.max_failures)
                c.restarts += 0 if give_up else 1
                c.last_error = f"{type(err).__name__}: {err}"[:500]
                c.failed_at = self._wall()
                f = {"component": c.name, "event": "component_failed"}   # journal fields
                if permanent:
                    log.error("%s: %s (not restarted)", c.name, err, extra=f)
                else:
                    log.error("%s failed%s", c.name, "; giving up" if give_up else
                              "; restarting", exc_info=err, extra=f)
                self._report(c, err, restarting=not give_up)
                if give_up:
                    c.state = ComponentState.FAILED
                    if c.critical and not self.failed.done():
                        self.failed.set_result(ComponentFailed(c.name, err))
                    return
                c.state = ComponentState.RESTARTING
                await asyncio.sleep(c.backoff.next())
            else:
                c.state = ComponentState.STOPPED
                return

    def _report(self, c: Component, err: BaseException, *, restarting: bool) -> None:
        if self._on_failure is None:
            return
        try:
            self._on_failure(c, err, restarting)
        except Exception:
            log.exception("reporting the failure of %s failed", c.name)

    # ------------------------------------------------------------------ health
    def alive(self) -> bool:
        """False while a watched component is stalled or a critical one gave up."""
        if self.failed.done():
            return False
        now = time.monotonic()
        return not any(c.stalled(now) for c in self.components.values())

    def stalled(self) -> list[str]:
        now = time.monotonic()
        return [c.name for c in self.components.values() if c.stalled(now)]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {name: c.snapshot(now) for name, c in self.components.items()}

    # ------------------------------------------------------------------ stopping
    async def stop(self, name: str, *, within: float = 5.0) -> None:
        """Cancel one component and wait for it (at most ``within`` s)."""
        c = self.components.get(name)
        if c is None or c.task is None:
            return
        task, c.task = c.task, None
        if not task.done():
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=within)
            if not done:
                log.warning("%s did not stop within %g s; leaving it", name, within)
                return
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None:
                log.warning("%s ended with %r", name, exc)
        c.state = ComponentState.STOPPED

    async def stop_all(self, *, within: float = 5.0) -> None:
        """Stop what is still running, the last started first."""
        for name in reversed(list(self.components)):
            await self.stop(name, within=within)
