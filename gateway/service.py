"""Talking to systemd: readiness, the watchdog and the status line (``sd_notify``), no library.

The protocol is one datagram per notification to the unix socket named by ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace), holding newline-separated ``KEY=VALUE``
lines: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``. Outside systemd the
variable is unset and :class:`SystemdNotifier` does nothing, so the agent runs the same in a
terminal, in tests and under the unit.

The watchdog (``WatchdogSec=`` in the unit, seen here as ``$WATCHDOG_USEC``) is petted by a task
*on the event loop* at half the interval. A loop that hangs (a blocking call, a busy loop, a
deadlock on a lock) stops petting, and systemd kills and restarts the service: a hung agent
is caught, not only a dead one. Each pet may also ask an optional ``alive()`` check, so a
deeper fault (a stuck bus task, say) can withhold the pet as well.

Typical use (the agent reports ready only once config, store and buses are up)::

    async with SystemdNotifier(status=lambda: status_line(snapshot())) as sd:
        async with agent:
            sd.ready("running")
            await agent.run(stop)
        sd.stopping()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("edgegw.service")

__all__ = ["SystemdNotifier", "notify_address", "watchdog_interval"]

STATUS_MAX = 200          # characters: `systemctl status` shows one line, keep it readable


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``: a path, or ``\\0name`` for ``@name``
    (Linux's abstract namespace). None when unset or empty."""
    raw = environ.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    return raw


def watchdog_interval(environ: Mapping[str, str], *, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when there is no
    watchdog for this process (unset, not a positive integer, or ``$WATCHDOG_PID`` names
    another process, e.g. a child that inherited the environment)."""
    raw = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


class SystemdNotifier:
    """sd_notify client and its background tasks; an async context manager.

    Entering starts, when systemd asked for them, the watchdog task (a pet every half
    interval) and, with ``status``, a task that sends ``STATUS=`` every ``status_interval``
    seconds when the text changed (with ``own_tasks=False`` the agent's supervisor runs
    :meth:`serve_watchdog` and :meth:`serve_status` instead). Leaving sends ``STOPPING=1``
    (if :meth:`stopping` was not called yet) and stops the tasks; it is safe twice. With no
    ``$NOTIFY_SOCKET`` every method is a no-op (``enabled`` is False).
    """

    def __init__(self, *, status: Callable[[], str] | None = None,
                 status_interval: float = 5.0,
                 alive: Callable[[], bool] | None = None,
                 environ: Mapping[str, str] | None = None, own_tasks: bool = True) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env)
        self.watchdog_timeout = watchdog_interval(env) if self.address else None
        self.status_fn = status
        self._status_interval = status_interval
        self.alive = alive
        self._own_tasks = own_tasks       # False: a supervisor runs serve_watchdog/serve_status
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_status: str | None = None
        self._stopping = False
        self._entered = False
        self._failed_once = False
        self.pets = 0                   # watchdog datagrams sent (for tests and the status)
        self.withheld = 0               # pets skipped because alive() said no
        self.withheld_now = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> SystemdNotifier:
        if self._entered:
            return self
        self._entered = True
        if not self.enabled:
            return self
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        if self._own_tasks:
            self.start_tasks()
        return self

    def start_tasks(self) -> None:
        """Run the watchdog and status loops in tasks of its own (without a supervisor)."""
        if not self.enabled or self._tasks:
            return
        if self.watchdog_timeout is not None:
            self._tasks.append(asyncio.create_task(self.serve_watchdog(), name="sd-watchdog"))
        if self.status_fn is not None:
            self._tasks.append(asyncio.create_task(self.serve_status(), name="sd-status"))

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Say STOPPING (once), stop the tasks, close the socket. Safe to call twice."""
        if not self._entered:
            return
        self._entered = False
        self.stopping()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------------ messages
    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram. True when sent; False when disabled or
        the socket refused (logged once: a lost notification must never stop the agent)."""
        if self.address is None:
            return False
        sock = self._sock
        own = sock is None
        if sock is None:      # before entering or after closing: a one-off socket
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as err:
            if not self._failed_once:
                self._failed_once = True
                log.warning("systemd notify socket %s: %s (notifications will be lost)",
                            self.address.replace("\0", "@"), err)
            return False
        finally:
            if own:
                sock.close()
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: the unit leaves "activating"; `systemctl start` returns."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
            self._last_status = status
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """The free-text line `systemctl status` shows under the unit."""
        self._last_status = text
        return self.notify(_status_field(text))

    def stopping(self) -> bool:
        """``STOPPING=1``: the shutdown began (sent once)."""
        if self._stopping:
            return False
        self._stopping = True
        return self.notify("STOPPING=1", _status_field("stopping: flushing the store"))

    def watchdog(self) -> bool:
        """One ``WATCHDOG=1`` pet."""
        sent = self.notify("WATCHDOG=1")
        if sent:
            self.pets += 1
        return sent

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more time to start or stop (a long store check)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    # ------------------------------------------------------------------ tasks
    async def serve_watchdog(self) -> None:
        """A pet every half interval while ``alive()`` says so, until cancelled."""
        if self.watchdog_timeout is None:
            return
        period = self.watchdog_timeout / 2
        while True:
            if self.alive is None or self.alive():
                if self.withheld_now:
                    log.warning("watchdog: the agent makes progress again; petting")
                    self.withheld_now = False
                self.watchdog()
            else:
                self.withheld += 1
                if not self.withheld_now:
                    self.withheld_now = True
                    log.error("watchdog: the liveness check failed; not petting (systemd "
                              "restarts the agent after %g s)", self.watchdog_timeout)
            # sleeping on the loop is the point: a blocked loop never comes back here
            await asyncio.sleep(period)

    async def serve_status(self) -> None:
        """``STATUS=`` every ``status_interval`` seconds when the text changed."""
        while True:
            if self.status_fn is None:
                await asyncio.sleep(self._status_interval)
                continue
            try:
                text = self.status_fn()
            except Exception:
                log.exception("status line failed")
                text = None
            if text is not None and text != self._last_status and not self._stopping:
                self.status(text)
            await asyncio.sleep(self._status_interval)


def _status_field(text: str) -> str:
    line = " ".join(text.split())       # one line: systemd shows STATUS= verbatim
    if len(line) > STATUS_MAX:
        line = line[:STATUS_MAX - 1] + "…"
    return f"STATUS={line}"
