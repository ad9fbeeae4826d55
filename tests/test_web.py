"""The technician's page over real HTTPS (aiohttp's client) against the running agent and the
simulated street: log-in and its limits, an anonymous request, the override through the
command path (audited, below the cabinet switch), roles, CSRF and origin checks, request
limits, the check and lamp test inside the agent with its report, the status line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.control import render_status
from gateway.events import Emitted
from tests.web_helpers import TECH, TECH_PW, VIEWER, VIEWER_PW, Site, csrf_of, web_site

pytestmark = pytest.mark.timeout(90)


async def _login(s: aiohttp.ClientSession, site: Site, user: str, pw: str) -> str:
    async with s.post(f"{site.url}/login", data={"user": user, "password": pw},
                      headers={"Origin": site.url}, ssl=site.ssl) as r:
        assert r.status == 200, await r.text()
        return await r.text()


def _session() -> aiohttp.ClientSession:
    # the cookie is Secure and set for "localhost": the jar must accept it
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_anonymous_gets_only_the_login_page(tmp_path: Path) -> None:
    async with web_site(tmp_path) as site, _session() as s:
        for path in ("/", "/lighting", "/check", "/events", "/tag", "/check/report.json",
                     "/lighting/chart.svg?date=2026-12-01", "/nowhere"):
            async with s.get(site.url + path, ssl=site.ssl) as r:
                body = await r.text()
                assert r.url.path == "/login", path
                assert "Log in" in body and "lamp-1" not in body and "street" not in body
        async with s.get(site.url + "/live", ssl=site.ssl) as r:
            assert r.status == 401
        async with s.post(site.url + "/lighting/override", ssl=site.ssl,
                          data={"group": "street", "level": "0", "minutes": "5"},
                          headers={"Origin": site.url}) as r:
            assert r.status == 401
        assert site.sim.devices["lamp-1"].peek("dim_level") == 60
        async with s.get(site.url + "/login", ssl=site.ssl) as r:
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"


async def test_login_wrong_password_refused_then_rate_limited(tmp_path: Path) -> None:
    async with web_site(tmp_path, web={"login_per_minute": 3}) as site, _session() as s:
        events: list[Emitted] = []
        site.agent.on_event(events.append)
        for n in range(3):
            async with s.post(f"{site.url}/login", ssl=site.ssl, headers={"Origin": site.url},
                              data={"user": TECH, "password": "wrong-password!"}) as r:
                assert r.status == 401 and "Wrong user or password" in await r.text()
            # the platform hears of it once the address is locked out, not at each attempt
            failed = [e for e in events if e.type == "web_login_failed"]
            assert len(failed) == (1 if n == 2 else 0), (n, failed)
        # the right password now waits: refused without being checked
        async with s.post(f"{site.url}/login", ssl=site.ssl, headers={"Origin": site.url},
                          data={"user": TECH, "password": TECH_PW}) as r:
            assert r.status == 429 and "Too many" in await r.text()
        assert site.agent.web is not None
        snap = site.agent.state_snapshot()["web"]
        assert snap["logins_failed"] == 3 and snap["logins_refused"] >= 1
        assert snap["logins_ok"] == 0
        [failed] = [e for e in events if e.type == "web_login_failed"]   # still one
        assert failed.detail["user"] == TECH and failed.detail["blocked_s"] >= 1
        assert failed.severity == "warning" and failed.detail["from"] == "127.0.0.1"
        assert TECH_PW not in str(failed.detail) and "wrong-password" not in str(failed.detail)


async def test_override_from_the_page_reaches_the_driver_audited(tmp_path: Path) -> None:
    async with web_site(tmp_path) as site, _session() as s:
        events: list[Emitted] = []
        site.agent.on_event(events.append)
        html = await _login(s, site, TECH, TECH_PW)
        assert "gw-web" in html and "lamp-1" in html and "temperature" in html
        async with s.get(site.url + "/lighting", ssl=site.ssl) as r:
            page = await r.text()
        csrf = csrf_of(page)
        assert 'max=999' in page and "Overrides in force" in page
        async with s.post(site.url + "/lighting/override", ssl=site.ssl,
                          headers={"Origin": site.url},
                          data={"csrf": csrf, "group": "street", "level": "25",
                                "minutes": "10", "priority": "2000"}) as r:
            page = await r.text()
            assert "street at 25 % for 10 min (priority 999)" in page
        async with asyncio.timeout(5):
            while site.sim.devices["lamp-1"].peek("dim_level") != 25:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        audit = [e for e in events if e.type == "command"]
        assert audit and audit[-1].detail["cmd"] == "set_override"
        assert audit[-1].detail["source"] == f"web:{TECH}" and audit[-1].detail["ok"]
        over = site.agent.state_snapshot()["lighting"]["overrides"]
        assert over == [{"group": "street", "id": f"web:{TECH}", "level": 25.0,
                         "priority": 999, "expires_at": over[0]["expires_at"]}]
        # cleared from the page: the program's level again
        async with s.post(site.url + "/lighting/clear", ssl=site.ssl,
                          headers={"Origin": site.url},
                          data={"csrf": csrf, "group": "street", "source": f"web:{TECH}"}) as r:
            assert "Override on street cleared" in await r.text()
        async with asyncio.timeout(5):
            while site.sim.devices["lamp-1"].peek("dim_level") != 60:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert [e.detail["cmd"] for e in events if e.type == "command"][-1] == "clear_override"
        # the asset tag: a QR code of the id and site
        async with s.get(site.url + "/tag", ssl=site.ssl) as r:
            tag = await r.text()
            assert r.status == 200 and "<svg" in tag and "EDGEGW;ID:gw-web;SITE:rue-de-test;" in tag


async def test_viewer_csrf_and_origin_are_refused(tmp_path: Path) -> None:
    async with web_site(tmp_path) as site, _session() as s:
        page = await _login(s, site, VIEWER, VIEWER_PW)
        assert "Set override" not in page
        csrf = csrf_of(page)       # the log-out form's
        form = {"csrf": csrf, "group": "street", "level": "0", "minutes": "5"}
        async with s.post(site.url + "/lighting/override", ssl=site.ssl, data=form,
                          headers={"Origin": site.url}) as r:
            assert r.status == 403 and "viewer" in await r.text()
        async with s.post(site.url + "/check", ssl=site.ssl, data={"csrf": csrf},
                          headers={"Origin": site.url}) as r:
            assert r.status == 403
    async with web_site(tmp_path / "2") as site, _session() as s:
        page = await _login(s, site, TECH, TECH_PW)
        form = {"csrf": "forged", "group": "street", "level": "0", "minutes": "5"}
        async with s.post(site.url + "/lighting/override", ssl=site.ssl, data=form,
                          headers={"Origin": site.url}) as r:
            assert r.status == 403
        form["csrf"] = csrf_of(page)
        async with s.post(site.url + "/lighting/override", ssl=site.ssl, data=form,
                          headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        # a body larger than the page ever sends
        async with s.post(site.url + "/lighting/override", ssl=site.ssl,
                          data={**form, "pad": "x" * 100_000},
                          headers={"Origin": site.url}) as r:
            assert r.status == 413
        assert site.sim.devices["lamp-1"].peek("dim_level") == 60


async def test_connections_are_capped(tmp_path: Path) -> None:
    async with web_site(tmp_path, web={"max_connections": 2}) as site:
        host, port = "localhost", int(site.url.rsplit(":", 1)[1])
        held = [await asyncio.open_connection(host, port, ssl=site.ssl) for _ in range(2)]
        # a third is closed at once (during or right after the handshake)
        with pytest.raises((ConnectionError, OSError, asyncio.IncompleteReadError)):
            r, w = await asyncio.open_connection(host, port, ssl=site.ssl)
            w.write(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await w.drain()
            got = await asyncio.wait_for(r.read(100), 5)
            if not got:
                raise ConnectionError("closed")
        for _r, w in held:
            w.close()
        # the lamps never noticed
        assert site.agent.lighting is not None and site.agent.supervisor is not None
        assert site.agent.supervisor.components["lighting"].state.value == "running"


async def test_check_and_lamp_test_run_inside_the_agent(tmp_path: Path) -> None:
    async with web_site(tmp_path) as site, _session() as s:
        events: list[Emitted] = []
        site.agent.on_event(events.append)
        page = await _login(s, site, TECH, TECH_PW)
        async with s.post(site.url + "/check", ssl=site.ssl, headers={"Origin": site.url},
                          data={"csrf": csrf_of(page), "lamp_test": "1"}) as r:
            assert r.status == 200
        checks = site.agent.commands.site_checks
        assert checks is not None
        seen_held = False
        async with asyncio.timeout(60):
            while checks.last is None:
                lighting = site.agent.state_snapshot()["lighting"]["groups"]["street"]
                seen_held = seen_held or lighting.get("held") == "lamp test"
                await asyncio.sleep(0.05)
        assert seen_held
        report = checks.last.report
        assert report is not None
        rows = {r.key: r for r in report.results}
        assert rows["agent"].status.value == "pass" and "inside the agent" in rows["agent"].detail
        assert rows["device:lamp-1"].status.value == "pass"
        lamp = rows["lamp-test:street"]
        assert lamp.status.value == "pass", lamp.detail
        assert [s["level"] for s in lamp.data["steps"]] == [0.0, 50.0, 100.0]
        assert rows["web"].status.value == "pass" and site.agent.web is not None
        assert site.agent.web.fingerprint in rows["web"].detail
        # the previous levels are back, and the lighting drives the group again
        assert site.sim.devices["lamp-1"].peek("dim_level") == 60
        assert "held" not in site.agent.state_snapshot()["lighting"]["groups"]["street"]
        audit = [e for e in events if e.type == "command" and e.detail["cmd"] == "check"]
        assert audit and audit[-1].detail["source"] == f"web:{TECH}"
        async with s.get(site.url + "/check/report.json", ssl=site.ssl) as r:
            assert r.status == 200
            assert "attachment" in r.headers["Content-Disposition"]
            doc: dict[str, Any] = json.loads(await r.text())
            assert doc["kind"] == "edgegw-commissioning-report"
            assert any(c["key"] == "lamp-test:street" for c in doc["checks"])
        async with s.get(site.url + "/check/report.html", ssl=site.ssl) as r:
            assert "commissioning report" in await r.text()


async def test_status_shows_the_page_and_its_fingerprint(tmp_path: Path) -> None:
    async with web_site(tmp_path) as site:
        snap = site.agent.state_snapshot()
        web = snap["web"]
        assert web["listening"] and len(web["fingerprint"]) == 95
        text = render_status(snap)
        assert f"certificate SHA-256 {web['fingerprint']}" in text
        assert "password" not in json.dumps(snap).lower()


def test_the_page_off_imports_nothing_of_it(tmp_path: Path) -> None:
    """A gateway without `web:` loads neither the page nor aiohttp, argon2 or segno."""
    code = (
        "import asyncio, sys, yaml\n"
        "from gateway.config import parse_config\n"
        "from gateway.runtime import Agent\n"
        f"cfg = parse_config(yaml.safe_dump({{'gateway': {{'id': 'gw-off'}}, 'store': "
        f"{{'path': {str(tmp_path / 's.db')!r}}}}}))\n"
        "async def main():\n"
        "    async with Agent(cfg, uplink=False):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'argon2', 'segno')\n"
        "       or m.startswith('gateway.web')]\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                         cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_provision_web_user_makes_the_account_and_switches_the_page_on(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.web.accounts import read_accounts, verify_password
    from provisioning.provision import BadAnswer, ProvisionRequest, provision

    base = {"out_dir": tmp_path, "gateway_id": "gw-p", "site": "d1",
            "broker": "mqtt://127.0.0.1:1883", "store_path": str(tmp_path / "s.db")}
    with pytest.raises(BadAnswer, match="at least 10"):
        provision(ProvisionRequest(**base, web_user="alice", web_password="short"))
    assert not (tmp_path / "config.yaml").exists()          # nothing written
    result = provision(ProvisionRequest(**base, web_user="alice",
                                        web_password="a-long-password"))
    users = tmp_path / "web-users"
    assert (users.stat().st_mode & 0o777) == 0o600
    assert any(c.path == users for c in result.changes)
    account = read_accounts(users)["alice"]
    assert account.role.value == "technician" and account.hash.startswith("$argon2id$")
    assert "a-long-password" not in users.read_text() and "a-long-password" not in repr(account)
    assert verify_password(account, "a-long-password")
    assert not verify_password(account, "a-wrong-password")
    cfg = load_config(tmp_path / "config.yaml")
    assert cfg.web is not None and cfg.web.listens == ["0.0.0.0:8443"]
    assert cfg.web.users == str(users)
    # a second account, a viewer, on the same file; the first stays
    provision(ProvisionRequest(out_dir=tmp_path, web_user="victor", web_role="viewer",
                               web_password="another-password"))
    assert set(read_accounts(users)) == {"alice", "victor"}


def test_web_config_is_checked(tmp_path: Path) -> None:
    import yaml

    from gateway.config import load_config
    from gateway.errors import ConfigError

    path = tmp_path / "c.yaml"
    raw: dict[str, Any] = {"gateway": {"id": "gw-c"}, "store": {"path": str(tmp_path / "s.db")},
                           "web": {"listen": "0.0.0.0:8443", "password": "admin"}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"web\.password"):
        load_config(path)                  # unknown keys refused: no password in the config
    raw["web"] = {"listen": "0.0.0.0:8443"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="provision --web-user"):
        load_config(path)                  # no accounts file: said at validate time
    (tmp_path / "web-users").write_text("")
    os.chmod(tmp_path / "web-users", 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_config(path)
    os.chmod(tmp_path / "web-users", 0o600)
    assert load_config(path).web is not None
