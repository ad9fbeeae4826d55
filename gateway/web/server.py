"""The technician's page: an aiohttp application on the agent's own event loop.

Why aiohttp: it is the asyncio web framework with its own server (no ASGI server to add and
to embed: Starlette needs uvicorn or another), well kept, one package plus small C-accelerated
helpers, and it runs as a few tasks on the loop the agent already has: no thread, no process,
nothing between the page and the agent's state. It is imported only when ``web:`` is
configured (the agent's runtime imports this module in that case only).

Never in the way of the lighting and the uplink:

- connections are capped (``web.max_connections``; one over the cap is closed at once), a TLS
  handshake gets 10 s, an idle keep-alive connection 15 s, a request line or header 4 kB, a
  request body 16 kB (``client_max_size``); the live streams are capped
  (``web.max_streams``) and one that does not take its data within 5 s is dropped;
- every handler is quick and never waits on a device or the disk: state changes go to the
  command dispatcher (which answers as soon as the lamps changed), the check runs as a
  background job, password checks (argon2, memory-hard on purpose) one at a time in a thread,
  the night chart in a thread;
- nothing secret is shown: the status snapshot holds no key or password, and the page never
  reads a key file; log lines are the agent's, which never carry secrets.

Log-in: the accounts file (:mod:`gateway.web.accounts`, re-read when it changes), failed
attempts rate-limited per address (:mod:`gateway.web.sessions`), a session cookie
``Secure; HttpOnly; SameSite=Strict``, a CSRF token in every form, the request's ``Origin``
checked on every POST, and a strict Content-Security-Policy (scripts and styles from the
gateway only). An anonymous request gets the log-in page and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway.commands.args import MAX_OVERRIDE_S
from gateway.config import NAME_RE, WebCfg
from gateway.errors import ConfigError, GatewayError
from gateway.web import pages
from gateway.web.accounts import Account, read_accounts, verify_password
from gateway.web.feed import EventRing, EventRow, LogTail
from gateway.web.sessions import LoginLimiter, Session, Sessions
from gateway.web.tls import ensure_certificate, urls
from gateway.web.view import Cell, live_values, point_rows, tz_of

if TYPE_CHECKING:
    from gateway.runtime import Agent
    from gateway.sitecheck import CheckJob

__all__ = ["COOKIE", "WebError", "WebServer"]

log = logging.getLogger("edgegw.web")

COOKIE = "edgegw_session"
STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0
KEEPALIVE = 15.0
STREAM_WRITE_TIMEOUT = 5.0
STREAM_QUEUE = 32
TICK = 1.0
WEB_PRIORITY_MAX = 999         # an override from the page stays below the cabinet switch
LEVEL_SOURCE_PREFIX = "web:"
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


SESSION = web.RequestKey("session", Session)
FORM = web.RequestKey("form", MultiDictProxy)  # type: ignore[var-annotated]


class WebError(GatewayError, RuntimeError):
    """The page cannot start (no accounts, a certificate that does not load, an address in
    use): a configuration to fix, reported once; the agent goes on without its page."""


class _Stream:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE)

    def put(self, data: bytes) -> bool:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True


class WebServer:
    """The page of one agent: :meth:`serve` is its supervised component."""

    def __init__(self, agent: Agent) -> None:
        assert agent.config.web is not None
        self.agent = agent
        self.cfg: WebCfg = agent.config.web
        self.sessions = Sessions(idle=self.cfg.session_idle, max_age=self.cfg.session_max)
        self.limiter = LoginLimiter(self.cfg.login_per_minute)
        self.events = EventRing(wall_clock=agent.wall)
        self.log_tail = LogTail()
        self.fingerprint: str | None = None
        self.urls = urls(self.cfg)
        self.streams: set[_Stream] = set()
        self.logins = {"ok": 0, "failed": 0}
        self._accounts: dict[str, Account] = {}
        self._accounts_stamp: tuple[float, int] | None = None
        self._verify = asyncio.Semaphore(1)
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._check_task: asyncio.Task[None] | None = None
        self._last: dict[str, Cell] = {}
        self._last_overrides = ""
        self._chart_cache: dict[tuple[str, str], bytes] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._unsubscribe.append(agent.events.subscribe(self.events))
        self.events.listeners.append(self._on_event)
        checks = agent.commands.site_checks
        if checks is not None:
            self._unsubscribe.append(checks.subscribe(self._on_check))
        self.log_tail.attach()

    # ------------------------------------------------------------------ status
    def snapshot(self) -> dict[str, Any]:
        """What ``edgegw status`` shows of the page (never a secret)."""
        return {"urls": self.urls, "fingerprint": self.fingerprint,
                "listening": bool(self._servers), "sessions": len(self.sessions),
                "streams": len(self.streams), "logins_ok": self.logins["ok"],
                "logins_failed": self.logins["failed"], "logins_refused": self.limiter.refused}

    # ------------------------------------------------------------------ life
    async def serve(self) -> None:
        """Listen until cancelled (the supervisor's component)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self._stop_listening()

    async def start(self) -> None:
        if self._servers:
            return
        self._load_accounts()
        if not self._accounts:
            raise WebError(f"web: no account in {self.cfg.users}: make one with edgegw "
                           "provision --web-user NAME (there is no default account)")
        try:
            cert, key, fp, made = await asyncio.to_thread(ensure_certificate, self.agent.config)
        except (OSError, ValueError) as err:
            raise WebError(f"web: the page's certificate: {err}") from err
        self.fingerprint = fp
        if made:
            log.info("web: made a self-signed certificate %s", cert)
        try:
            from gateway.link import check_secret_file

            check_secret_file(key, what="web.tls.key" if self.cfg.tls else "the page's key")
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
        except (ConfigError, ssl.SSLError, OSError) as err:
            raise WebError(f"web: cannot load {cert} and its key: {err}") from err
        app = self._app()
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               keepalive_timeout=KEEPALIVE, max_line_size=4096,
                               max_field_size=4096, max_headers=48, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        cap = self.cfg.max_connections

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= cap:
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        try:
            for listen in self.cfg.listens:
                host, _, port = listen.rpartition(":")
                host = host.strip("[]")
                self._servers.append(await loop.create_server(
                    factory, host, int(port), ssl=ctx, backlog=cap,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT, reuse_address=True))
        except OSError as err:
            await self._stop_listening()
            raise WebError(f"web: cannot listen on {listen}: {err.strerror or err}") from err
        self._tick_task = asyncio.create_task(self._ticker(), name="web-live")
        log.info("web: the technician's page is at %s (certificate SHA-256 %s)",
                 ", ".join(self.urls), fp)

    def bound_ports(self) -> list[int]:
        """The ports listened on (a test asks for port 0)."""
        return [int(s.getsockname()[1]) for srv in self._servers
                for s in (srv.sockets or ())]

    async def _stop_listening(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        for st in list(self.streams):
            st.put(b"")
            with contextlib.suppress(asyncio.QueueFull):
                st.queue.put_nowait(None)
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        # a browser that keeps its connection (keep-alive, a stream) does not hold the stop
        # up: its socket is dropped, not shut down politely (a TLS close waits for the peer)
        server = self._runner.server if self._runner is not None else None
        for proto in list(server.connections if server is not None else ()):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Stop a running check (the lamps are restored on the way out), then listening."""
        task, self._check_task = self._check_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_listening()
        for unsub in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsub()
        self._unsubscribe.clear()
        self.log_tail.detach()

    # ------------------------------------------------------------------ accounts
    def _load_accounts(self) -> None:
        """Read the accounts file when it changed (a new account needs no restart)."""
        path = Path(self.cfg.users)
        try:
            st = path.stat()
        except OSError as err:
            if self._accounts_stamp is None:
                raise WebError(f"web: cannot read the accounts file {path}: {err.strerror}; "
                               "make an account with edgegw provision --web-user NAME") from err
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._accounts_stamp:
            return
        try:
            self._accounts = read_accounts(path)
        except ConfigError as err:
            if self._accounts_stamp is None:
                raise WebError(f"web: {err}") from err
            log.error("web: accounts file unusable, keeping the accounts read before: %s", err)
            return
        self._accounts_stamp = stamp

    # ------------------------------------------------------------------ application
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.on_response_prepare.append(_headers)
        r = app.router
        r.add_get("/login", self._login_form)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_get("/", self._overview)
        r.add_get("/lighting", self._lighting)
        r.add_get("/lighting/overrides", self._overrides_fragment)
        r.add_get("/lighting/chart.svg", self._chart)
        r.add_post("/lighting/override", self._set_override)
        r.add_post("/lighting/clear", self._clear_override)
        r.add_get("/check", self._check_page)
        r.add_get("/check/rows", self._check_rows)
        r.add_post("/check", self._start_check)
        r.add_get("/check/report.json", self._report_json)
        r.add_get("/check/report.html", self._report_html)
        r.add_get("/events", self._events_page)
        r.add_get("/tag", self._tag)
        r.add_get("/live", self._live)
        r.add_get("/static/{name}", self._static)
        return app

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        path = request.path
        if request.method == "POST" and not _same_origin(request):
            return web.Response(status=403, text="refused: the request did not come from this "
                                                 "page")
        if path == "/login" or (path.startswith("/static/") and request.method == "GET"):
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and path != "/live":
                raise web.HTTPSeeOther("/login")
            return web.Response(status=401, text="log in first")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not session.csrf_ok(_text(form.get("csrf"))):
                return web.Response(status=403, text="refused: stale form, reload the page")
            request[FORM] = form
            if path != "/logout" and not session.may_change:
                return web.Response(status=403, text=f"{session.user} may look, not change "
                                                     "(role viewer)")
        return await handler(request)

    def _kw(self, request: web.Request) -> dict[str, Any]:
        s: Session = request[SESSION]
        return {"gateway": self.agent.config.gateway.id, "user": s.user, "role": s.role.value,
                "csrf": s.csrf, "flash": s.data.pop("flash", None), "now": self.agent.wall()}

    # ------------------------------------------------------------------ log-in
    async def _login_form(self, request: web.Request) -> web.Response:
        if self.sessions.get(request.cookies.get(COOKIE)) is not None:
            raise web.HTTPSeeOther("/")
        return _html(pages.login_page(self.agent.config.gateway.id))

    async def _login(self, request: web.Request) -> web.Response:
        gid = self.agent.config.gateway.id
        addr = request.remote or "?"
        wait = self.limiter.retry_after(addr)
        if wait:
            return _html(pages.login_page(gid, error=f"Too many failed log-ins: wait "
                                                     f"{wait:.0f} s."), status=429)
        form = await request.post()
        user = (_text(form.get("user")) or "")[:32]
        password = (_text(form.get("password")) or "")[:256]
        self._load_accounts()
        account = self._accounts.get(user)
        async with self._verify:
            ok = await asyncio.to_thread(verify_password, account, password)
        if not ok or account is None:
            self.limiter.failed(addr)
            self.logins["failed"] += 1
            log.warning("web: failed log-in as %r from %s", user[:32], addr)
            blocked = self.limiter.retry_after(addr, count=False)
            if blocked:     # this failure locked the address (or all) out: once per lock-out
                self.agent.emit_event("web_login_failed", None, {
                    "user": user[:32], "from": addr, "blocked_s": round(blocked),
                    "failed": self.logins["failed"]})
            return _html(pages.login_page(gid, error="Wrong user or password."), status=401)
        self.limiter.succeeded(addr)
        self.logins["ok"] += 1
        session = self.sessions.new(account.name, account.role)
        log.info("web: %s (%s) logged in from %s", account.name, account.role.value, addr)
        self.agent.emit_event("web_login", None, {"user": account.name,
                                                  "role": account.role.value, "from": addr})
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(COOKIE, session.token, secure=True, httponly=True, samesite="Strict",
                        path="/")
        raise resp

    async def _logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    # ------------------------------------------------------------------ screens
    def _values(self, snap: dict[str, Any]) -> dict[str, Cell]:
        return live_values(self.agent, snap, point_rows(self.agent))

    async def _overview(self, request: web.Request) -> web.Response:
        snap = self.agent.state_snapshot()
        snap["groups_cfg"] = self.agent.config.gateway.groups
        return _html(pages.overview_page(snap, self._values(snap), point_rows(self.agent),
                                         web_fp=self.fingerprint, **self._kw(request)))

    async def _lighting(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        snap = self.agent.state_snapshot()
        tz = tz_of(self.agent.config)
        chart = None
        if self.agent.lighting is not None and self.agent.lighting.rules.location is not None:
            now = dt.datetime.fromtimestamp(self.agent.wall(), tz)
            # the night that is on now, or tonight's before noon's change of night
            night = now.date() - dt.timedelta(days=1) if now.hour < 12 else now.date()
            chart = night.isoformat()
        return _html(pages.lighting_page(snap, self._values(snap), may_change=s.may_change,
                                         tz=tz, chart_date=chart,
                                         max_priority=WEB_PRIORITY_MAX, **self._kw(request)))

    async def _overrides_fragment(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        lighting = self.agent.lighting
        overrides = (lighting.snapshot()["overrides"] if lighting is not None else [])
        return _html(pages.overrides_list(overrides, csrf=s.csrf, may_change=s.may_change,
                                          tz=tz_of(self.agent.config)))

    async def _chart(self, request: web.Request) -> web.Response:
        lighting = self.agent.lighting
        try:
            day = dt.date.fromisoformat(request.query.get("date", "")[:10])
        except ValueError:
            return web.Response(status=400, text="date=YYYY-MM-DD")
        if lighting is None:
            return web.Response(status=404, text="no lighting groups")
        key = (lighting.version, day.isoformat())
        svg = self._chart_cache.get(key)
        if svg is None:
            from policies.lighting import preview
            from policies.lighting.chart import preview_svg

            rules = lighting.rules

            def draw() -> bytes:
                return preview_svg([preview(rules, None, day)],
                                   title=f"lighting of {self.agent.config.gateway.id}").encode()

            try:
                svg = await asyncio.to_thread(draw)
            except ValueError as err:
                return web.Response(status=404, text=f"no chart: {err}")
            if len(self._chart_cache) > 8:
                self._chart_cache.clear()
            self._chart_cache[key] = svg
        return web.Response(body=svg, content_type="image/svg+xml")

    async def _check_page(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        checks = self.agent.commands.site_checks
        job = self._job()
        return _html(pages.check_page(job.as_dict() if job else None,
                                      running=checks is not None and checks.current is not None,
                                      may_change=s.may_change, **self._kw(request)))

    async def _check_rows(self, request: web.Request) -> web.Response:
        job = self._job()
        return _html(pages.check_rows(job.as_dict() if job else None))

    def _job(self) -> CheckJob | None:
        checks = self.agent.commands.site_checks
        if checks is None:
            return None
        return checks.current or checks.last

    async def _events_page(self, request: web.Request) -> web.Response:
        return _html(pages.events_page(self.events.rows, self.log_tail.lines,
                                       tz=tz_of(self.agent.config), **self._kw(request)))

    async def _tag(self, request: web.Request) -> web.Response:
        import segno

        gw = self.agent.config.gateway
        payload = f"EDGEGW;ID:{gw.id};SITE:{gw.site};"
        qr = segno.make(payload, error="m")
        svg = qr.svg_inline(scale=6, border=4, dark="#000", light="#fff")
        return _html(pages.tag_page(gw.id, gw.site, svg, payload, **self._kw(request)))

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ("app.css", "app.js"):
            raise web.HTTPNotFound()
        ctype = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(body=(STATIC / name).read_bytes(), content_type=ctype,
                            headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ changes
    async def _command(self, request: web.Request, cmd: str, args: dict[str, Any]) -> str:
        """Through the agent's command path, in the technician's name; a line for the page."""
        s: Session = request[SESSION]
        dispatcher = self.agent.dispatcher
        if dispatcher is None:
            return "commands are not available on this gateway"
        answer = await dispatcher.handle_local(cmd, args, source=f"{LEVEL_SOURCE_PREFIX}"
                                                                 f"{s.user}")
        if answer.get("ok"):
            return ""
        err = answer.get("error") or {}
        return f"{err.get('code')}: {err.get('message')}"

    async def _set_override(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        form = request[FORM]
        try:
            group = _name(form.get("group"), allow_star=True)
            level = float(_text(form.get("level")) or "")
            minutes = float(_text(form.get("minutes")) or "")
            priority = int(_text(form.get("priority")) or str(WEB_PRIORITY_MAX))
            if not 0 < minutes * 60 <= MAX_OVERRIDE_S:
                raise ValueError("minutes")
        except ValueError:
            s.data["flash"] = "Override refused: give a level 0-100, minutes and a priority."
            raise web.HTTPSeeOther("/lighting") from None
        problem = await self._command(request, "set_override", {
            "group": group, "level": level, "duration_s": minutes * 60,
            "priority": min(priority, WEB_PRIORITY_MAX),
            "source": f"{LEVEL_SOURCE_PREFIX}{s.user}"})
        s.data["flash"] = (f"Override refused: {problem}" if problem else
                           f"{group if group != '*' else 'Every group'} at {level:g} % for "
                           f"{minutes:g} min (priority {min(priority, WEB_PRIORITY_MAX)}).")
        raise web.HTTPSeeOther("/lighting")

    async def _clear_override(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        form = request[FORM]
        try:
            group = _name(form.get("group"), allow_star=True)
            source = (_text(form.get("source")) or "")[:128]
        except ValueError:
            raise web.HTTPSeeOther("/lighting") from None
        problem = await self._command(request, "clear_override",
                                      {"group": group, "source": source or None})
        s.data["flash"] = f"Not cleared: {problem}" if problem else f"Override on {group} cleared."
        raise web.HTTPSeeOther("/lighting")

    async def _start_check(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        checks = self.agent.commands.site_checks
        lamp_test = _text(request[FORM].get("lamp_test")) == "1"
        if checks is None or self.agent.dispatcher is None:
            s.data["flash"] = "The check is not available on this gateway."
        elif checks.current is not None or (self._check_task is not None
                                            and not self._check_task.done()):
            s.data["flash"] = "A check is already running."
        else:
            dispatcher = self.agent.dispatcher
            user = s.user

            async def run() -> None:
                await dispatcher.handle_local("check", {"lamp_test": lamp_test},
                                              source=f"{LEVEL_SOURCE_PREFIX}{user}")

            self._check_task = asyncio.create_task(run(), name="web-check")
        raise web.HTTPSeeOther("/check")

    def _report(self) -> Any:
        checks = self.agent.commands.site_checks
        job = checks.last if checks is not None else None
        if job is None or job.report is None:
            raise web.HTTPNotFound(text="no report yet: run the check first")
        return job.report

    def _report_name(self, ext: str) -> str:
        stamp = dt.datetime.fromtimestamp(self._report().finished_at, dt.UTC)
        return f"commissioning-{self.agent.config.gateway.id}-{stamp:%Y%m%dT%H%M%SZ}.{ext}"

    async def _report_json(self, request: web.Request) -> web.Response:
        from provisioning.check import report_json

        body = json.dumps(report_json(self._report()), indent=2, default=str) + "\n"
        return web.Response(text=body, content_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="{self._report_name("json")}"'})

    async def _report_html(self, request: web.Request) -> web.Response:
        from provisioning.check import report_html

        return web.Response(text=report_html(self._report()), content_type="text/html",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{self._report_name("html")}"'})

    # ------------------------------------------------------------------ live stream
    async def _live(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        if len(self.streams) >= self.cfg.max_streams:
            return web.Response(status=503, text="too many live pages open; close one",
                                headers={"Retry-After": "10"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        stream = _Stream(session)
        self.streams.add(stream)
        try:
            snap = self.agent.state_snapshot()
            await self._send(resp, _sse({"t": _full(self._values(snap)),
                                         "now": self.agent.wall()}))
            while self.sessions.alive(session):
                try:
                    data = await asyncio.wait_for(stream.queue.get(), 15.0)
                except TimeoutError:
                    data = b": keep-alive\n\n"
                if data is None or not data:
                    break
                await self._send(resp, data)
            else:
                await self._send(resp, _sse({"logout": True}))
        except (ConnectionError, TimeoutError):
            pass                        # a browser gone or not reading: dropped
        finally:
            self.streams.discard(stream)
        return resp

    async def _send(self, resp: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(STREAM_WRITE_TIMEOUT):
            await resp.write(data)

    def _broadcast(self, data: bytes) -> None:
        for st in list(self.streams):
            if not st.put(data):         # not reading: let it go
                self.streams.discard(st)
                with contextlib.suppress(asyncio.QueueEmpty):
                    st.queue.get_nowait()
                st.queue.put_nowait(None)

    async def _ticker(self) -> None:
        """Once a second while someone watches: what changed, to every live page."""
        while True:
            await asyncio.sleep(TICK)
            if not self.streams:
                self._last = {}
                continue
            snap = self.agent.state_snapshot()
            values = self._values(snap)
            changed = {k: v for k, v in values.items() if self._last.get(k) != v}
            self._last = values
            msg: dict[str, Any] = {"now": self.agent.wall()}
            if changed:
                msg["t"] = _full(changed)
            overrides = json.dumps((snap.get("lighting") or {}).get("overrides"),
                                   sort_keys=True)
            if overrides != self._last_overrides:
                self._last_overrides = overrides
                msg["reload"] = ["overrides"]
            self._broadcast(_sse(msg))

    def _on_event(self, row: EventRow) -> None:
        if self.streams:
            self._broadcast(_sse({"prepend": {"events": pages.event_item(
                row, tz_of(self.agent.config))}}))

    def _on_check(self, job: CheckJob) -> None:
        if self.streams:
            self._broadcast(_sse({"html": {"check-rows": pages.check_rows(job.as_dict())},
                                  "running": not job.done}))


# ---------------------------------------------------------------------------- helpers
class _Refuse(asyncio.Protocol):
    """A connection over the cap: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"   # Origin sent to us only
    response.headers.setdefault("Cache-Control", "no-store")


def _same_origin(request: web.Request) -> bool:
    """A POST must come from a page of this gateway (a browser sends Origin with a form)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        referer = request.headers.get("Referer")
        if referer is None:
            return origin is None        # a non-browser client; the CSRF token still applies
        origin = referer
    host = request.headers.get("Host", "")
    return origin.startswith(f"https://{host}/") or origin == f"https://{host}"


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/html", status=status)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _name(value: object, *, allow_star: bool = False) -> str:
    import re

    text = _text(value) or ""
    if allow_star and text == "*":
        return text
    if not re.match(NAME_RE, text) or len(text) > 128:
        raise ValueError("name")
    return text


def _full(values: dict[str, Cell]) -> dict[str, list[Any]]:
    return {k: [text, state, ts] for k, (text, state, ts) in values.items()}


def _sse(msg: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(msg, separators=(',', ':'), default=str)}\n\n".encode()

