"""The local control socket: ``edgegw status`` asks the running agent for its live picture.

A unix stream socket (default :data:`DEFAULT_SOCKET`, inside systemd's ``RuntimeDirectory``)
that only the service user, its group and root can use: the directory is 0750 and the socket
0660. The protocol is one request line, one JSON response line, then the server closes::

    -> status\\n                      (or {"cmd": "status"}\\n)
    <- {"ok": true, "result": {...snapshot...}}\\n
    -> frobnicate\\n
    <- {"ok": false, "error": "unknown command 'frobnicate' (commands: ping, status)"}\\n

The snapshot is the agent's one status (:mod:`gateway.status`, what ``get_state`` returns too);
:func:`render_status` prints it and :func:`status_line` folds it into systemd's one-line
status. In short (the full layout is in :mod:`gateway.status`)::

    {"schema": 1, "gateway": "gw-1", "site": "...", "version": "0.1.0", "pid": 812,
     "now": 1764032400.0, "started_at": ..., "uptime_s": 3600.0,
     "link": {"state": "connected", "url": "mqtts://...", "reconnects": 2, "last_error": null},
     "backlog": {"points": 0, "batches": 0, "bytes": 0, "events": 0},
     "devices": {"env-1": {"bus": "rs485-1", "health": "online", "last_ok": ...,
                           "last_error": null, "polls": 360, "errors": 0, "failures": 0}},
     "devices_online": 1, "devices_total": 1,
     "buses": [{"name": "rs485-1", "requests": ..., "timeouts": ..., "exceptions": ...,
                "errors": ..., "reconnects": ...}],
     "lighting": {"groups": {"main": {"level": 70.0, "reason": "...", "source": "program"}},
                  ...},
     "clock": {"trusted": true, "source": "ntp", "since": ...}}

Times are Unix seconds. Keys may be added in later schemas, never renamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger("edgegw.control")

__all__ = [
    "DEFAULT_SOCKET",
    "SCHEMA",
    "ControlError",
    "ControlServer",
    "fetch_status",
    "render_status",
    "request",
    "status_line",
]

DEFAULT_SOCKET = "/run/edgegw/control.sock"
SCHEMA = 1
SOCKET_MODE = 0o660
DIR_MODE = 0o750
MAX_REQUEST = 1024             # bytes: a request is one short line
REQUEST_TIMEOUT = 5.0          # seconds a client may take to send its line
_SUN_PATH_MAX = 107            # sockaddr_un.sun_path holds 108 bytes with the NUL

Snapshot = dict[str, Any]
# device health values that count as down (Modbus `offline`; serial `stale`, `unavailable`)
_DOWN = frozenset({"offline", "stale", "unavailable", "closed"})


class ControlError(GatewayError, ConnectionError):
    """The control socket cannot be served or reached; ``hint`` says what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


# =============================================================================== server
class ControlServer:
    """Serves :data:`SCHEMA` snapshots from ``snapshot()`` on a unix socket; an async context
    manager (closing removes the socket; safe twice).

    A missing directory is created 0750; an existing one is left as it is (systemd's
    ``RuntimeDirectoryMode=0750`` owns it) but a warning is logged if others can enter it. A
    stale socket left by a crash is replaced; a live one (another agent answers) is an error.
    """

    def __init__(self, path: str | os.PathLike[str], snapshot: Callable[[], Snapshot], *,
                 mode: int = SOCKET_MODE, dir_mode: int = DIR_MODE) -> None:
        self.path = Path(path)
        self._snapshot = snapshot
        self._mode = mode
        self._dir_mode = dir_mode
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve(self) -> None:
        """Listen until cancelled (the supervisor's component)."""
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def start(self) -> None:
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ControlError(f"control socket {self.path}: the path is longer than the "
                               f"{_SUN_PATH_MAX} bytes a unix socket allows",
                               hint="configure a shorter service.control_socket")
        self._prepare_dir()
        self._remove_stale()
        try:
            server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                     limit=MAX_REQUEST * 2)
        except OSError as err:
            raise ControlError(f"control socket {self.path}: cannot listen: {err.strerror}",
                               hint="check the directory's owner and mode") from err
        # the directory (0750) keeps others out during the moment before this chmod
        os.chmod(self.path, self._mode)
        self._server = server
        log.info("control socket listening on %s", self.path)

    def _prepare_dir(self) -> None:
        d = self.path.parent
        if not d.exists():
            try:
                d.mkdir(parents=True, mode=self._dir_mode)
                os.chmod(d, self._dir_mode)       # mkdir's mode is filtered by the umask
            except OSError as err:
                raise ControlError(f"control socket {self.path}: cannot create {d}: "
                                   f"{err.strerror}",
                                   hint="run under systemd (RuntimeDirectory=edgegw) or "
                                        "configure a writable service.control_socket") from err
            return
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & 0o007:
            log.warning("control socket directory %s is open to others (mode %o); the socket "
                        "itself is %o", d, mode, self._mode)

    def _remove_stale(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"control socket {self.path}: a file that is not a socket is in "
                               "the way", hint=f"remove {self.path} or configure another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)    # nobody listens: left by a crash
            return
        finally:
            probe.close()
        raise ControlError(f"control socket {self.path}: another agent is already serving it",
                           hint="systemctl status edgegw; stop the other instance first")

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for t in list(self._clients):
            t.cancel()
        for t in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except TimeoutError:
                response = _error(f"no request line within {REQUEST_TIMEOUT:g} s")
            except (ValueError, asyncio.LimitOverrunError):
                response = _error(f"request longer than {MAX_REQUEST} bytes")
            else:
                response = self.handle(line)
            writer.write(json.dumps(response, separators=(",", ":"), default=str).encode()
                         + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ConnectionError:
            pass                    # the client went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)

    def handle(self, line: bytes) -> dict[str, Any]:
        """One request line -> one response object (never raises)."""
        self.requests += 1
        if len(line) > MAX_REQUEST:
            return _error(f"request longer than {MAX_REQUEST} bytes")
        text = line.decode("utf-8", "replace").strip()
        cmd = text
        if text.startswith("{"):
            try:
                obj = json.loads(text)
                cmd = str(obj["cmd"])
            except (ValueError, KeyError, TypeError):
                return _error('a JSON request needs {"cmd": "status"}')
        if cmd == "ping":
            return {"ok": True, "result": {"pong": True}}
        if cmd == "status":
            try:
                return {"ok": True, "result": self._snapshot()}
            except Exception as err:    # a snapshot bug must not take the agent down
                log.exception("control: snapshot failed")
                return _error(f"the agent could not build its status: {err}")
        return _error(f"unknown command {cmd!r} (commands: ping, status)")


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


# =============================================================================== client
def fetch_status(path: str | os.PathLike[str] = DEFAULT_SOCKET, *,
                 timeout: float = 5.0) -> Snapshot:
    """Ask the agent at ``path`` for its snapshot. ControlError (with a hint) when nothing
    listens, access is denied, the agent does not answer in time, or it answered an error."""
    response = request(path, "status", timeout=timeout)
    result = response.get("result")
    if not isinstance(result, dict):
        raise ControlError(f"control socket {path}: the answer has no snapshot")
    return result


def request(path: str | os.PathLike[str], command: str, *,
            timeout: float = 5.0) -> dict[str, Any]:
    """Send one command line; return the response object (``ok`` true) or raise."""
    p = str(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(p)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ControlError(
                f"no agent is answering on {p}: is the service running? "
                "systemctl status edgegw",
                hint="journalctl -u edgegw -n 50 shows why it stopped") from err
        except PermissionError as err:
            raise ControlError(
                f"{p}: permission denied: the control socket is for the service user and root",
                hint="sudo edgegw status (or add yourself to group edgegw)") from err
        except OSError as err:
            raise ControlError(f"{p}: cannot connect: {err.strerror or err}") from err
        try:
            sock.sendall(command.encode() + b"\n")
            data = _read_all(sock)
        except TimeoutError as err:
            raise ControlError(
                f"the agent at {p} did not answer within {timeout:g} s: its event loop may be "
                "hung (the watchdog restarts it)", hint="journalctl -u edgegw -n 50") from err
        except OSError as err:
            raise ControlError(f"{p}: connection failed: {err.strerror or err}") from err
    finally:
        sock.close()
    try:
        response = json.loads(data)
    except ValueError as err:
        raise ControlError(f"{p}: the answer is not JSON ({len(data)} bytes)") from err
    if not isinstance(response, dict):
        raise ControlError(f"{p}: the answer is not a JSON object")
    if not response.get("ok"):
        raise ControlError(f"the agent refused {command!r}: {response.get('error')}")
    return response


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# ============================================================================= snapshot
def _devices(snap: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Devices as a list of dicts with ``name``, from ``{name: info}`` or a list."""
    raw = snap.get("devices") or {}
    if isinstance(raw, Mapping):
        return [{"name": name, **info} for name, info in sorted(raw.items())]
    return [dict(d) for d in raw]


def _groups(snap: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Lighting groups as a list of dicts with ``group``, ``level``, ``reason``."""
    raw = snap.get("lighting") or {}
    if isinstance(raw, Mapping):
        raw = raw.get("groups") or {}
    if isinstance(raw, Mapping):
        return [{"group": name, **info} for name, info in raw.items()]
    return [dict(g) for g in raw]


# ============================================================================== rendering
def status_line(snap: Mapping[str, Any]) -> str:
    """systemd's one-line status: ``mqtt connected · backlog 0 pts · devices 38/40 up``."""
    link = snap.get("link") or {}
    backlog = snap.get("backlog") or {}
    devices = _devices(snap)
    up = sum(1 for d in devices if d.get("health") == "online")
    parts = [f"mqtt {link.get('state', '?')}",
             f"backlog {backlog.get('points', 0)} pts/{_size(backlog.get('bytes', 0))}",
             f"devices {up}/{len(devices)} up"]
    down = [str(d.get("name")) for d in devices if d.get("health") in _DOWN]
    if down:
        parts[-1] += f" (down: {', '.join(down[:3])}{', …' if len(down) > 3 else ''})"
    clock = snap.get("clock") or {}
    if clock and not clock.get("trusted"):
        parts.append("clock untrusted")
    problems = _problems(snap)
    if problems:
        parts.insert(0, "; ".join(problems))
    return " · ".join(parts)


def _problems(snap: Mapping[str, Any]) -> list[str]:
    """What is wrong, most urgent first, in a few words each: a failing store, components
    that failed or stalled, a broker that refuses the gateway."""
    out: list[str] = []
    store = snap.get("store") or {}
    if store.get("state") == "fault":
        mem = store.get("memory") or {}
        out.append(f"STORE FAULT ({store.get('fault')}): {mem.get('points', 0)} pts in memory")
    elif store.get("state") == "opening":
        out.append("store opening")
    bad = [f"{name} {c.get('state')}" for name, c in (snap.get("components") or {}).items()
           if c.get("state") in ("failed", "stalled", "restarting")]
    if bad:
        out.append("COMPONENTS: " + ", ".join(bad[:3]) + (" …" if len(bad) > 3 else ""))
    link = snap.get("link") or {}
    if link.get("state") == "refused":
        out.append("BROKER REFUSES THE GATEWAY")
    return out


def render_status(snap: Mapping[str, Any]) -> str:
    """The human picture printed by ``edgegw status``."""
    now = float(snap.get("now") or time.time())
    link = snap.get("link") or {}
    backlog = snap.get("backlog") or {}
    clock = snap.get("clock") or {}
    lines = [
        f"gateway   {snap.get('gateway')}  (site {snap.get('site') or '-'}, edgegw "
        f"{snap.get('version')}, pid {snap.get('pid')})",
        f"uptime    {_duration(float(snap.get('uptime_s') or 0))}",
        f"link      {link.get('state')}  {link.get('url') or ''}  reconnects "
        f"{link.get('reconnects', 0)}"
        + (f"  last error: {link['last_error']}" if link.get("last_error") else ""),
        f"backlog   {backlog.get('points', 0)} points in {backlog.get('batches', 0)} batches, "
        f"{_size(backlog.get('bytes', 0))}; {backlog.get('events', 0)} events",
        "clock     " + ("trusted" if clock.get("trusted") else "NOT trusted")
        + (f" ({clock['source']})" if clock.get("source") else ""),
    ]
    store = snap.get("store") or {}
    if store:
        mem = store.get("memory") or {}
        dropped = store.get("dropped") or {}
        line = f"store     {store.get('state')}  {store.get('path') or ''}"
        if store.get("state") == "fault":
            since = store.get("since")
            line += (f"\n  FAULT {store.get('fault')} since "
                     f"{_duration(now - float(since)) + ' ago' if since else '?'}: "
                     f"{store.get('error')}\n  in memory: {mem.get('points', 0)} points in "
                     f"{mem.get('batches', 0)} batches, {mem.get('events', 0)} events "
                     "(see docs/operations.md, 'When the SD card fails')")
        if dropped.get("points") or dropped.get("events"):
            line += (f"\n  dropped since start: {dropped.get('points', 0)} points, "
                     f"{dropped.get('events', 0)} events")
        lines.append(line)
    for name, c in sorted((snap.get("components") or {}).items()):
        if c.get("state") != "running" or c.get("restarts"):
            lines.append(f"component {name}: {c.get('state')}, {c.get('restarts', 0)} "
                         f"restarts, last error: {c.get('last_error') or '-'}")
    devices = _devices(snap)
    up = sum(1 for d in devices if d.get("health") == "online")
    lines.append(f"devices   {up}/{len(devices)} online")
    if devices:
        width = max(len(str(d.get("name"))) for d in devices)
        for d in devices:
            last = d.get("last_ok")
            ago = f"last poll ok {_duration(now - float(last))} ago" if last else "never polled ok"
            err = f"  ({d['last_error']})" if d.get("last_error") and d.get(
                "health") != "online" else ""
            lines.append(f"  {d.get('name')!s:<{width}}  {d.get('health')!s:<11} "
                         f"{d.get('bus')!s:<10} {ago}, {d.get('errors', 0)} errors{err}")
    groups = _groups(snap)
    if groups:
        lines.append(f"lighting  {len(groups)} group(s)")
        width = max(len(str(g.get("group"))) for g in groups)
        for g in groups:
            level = g.get("level")
            shown = f"{float(level):5.1f} %" if isinstance(level, (int, float)) else "    ? %"
            nxt = g.get("next") or {}
            after = (f"  (next {str(nxt.get('at', ''))[11:16]} -> {nxt.get('level'):g} %)"
                     if nxt.get("at") and isinstance(nxt.get("level"), (int, float)) else "")
            lines.append(f"  {g.get('group')!s:<{width}}  {shown}  {g.get('reason', '')}"
                         f"{after}")
    else:
        lines.append("lighting  no groups")
    web = snap.get("web")
    if web:
        lines.append(f"web       {', '.join(web.get('urls') or [])}"
                     + ("" if web.get("listening") else "  (not listening: see the log)")
                     + f"  {web.get('sessions', 0)} session(s)")
        if web.get("fingerprint"):
            lines.append(f"  certificate SHA-256 {web['fingerprint']}")
    lines.append(f"as of     {dt.datetime.fromtimestamp(now, dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    return "\n".join(lines)


def _size(n: object) -> str:
    value = float(n) if isinstance(n, (int, float)) else 0.0
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"
