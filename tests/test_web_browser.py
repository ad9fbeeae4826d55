"""The technician's page in a real browser (Debian's chromium, headless, through Selenium):
log-in (a wrong password refused), live values that follow the simulated devices with no page
reload, the lamp test run from the page and its report downloaded, an override set on the page
that reaches the simulated LED driver, no horizontal scroll at a phone's width, and an
anonymous visitor who sees the log-in page only.

Selenium is synchronous: every browser call runs in a thread, so the agent (on this test's
event loop) keeps serving the page meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.web.tls import make_self_signed
from tests.browser import Browser, available
from tests.web_helpers import TECH, TECH_PW, Site, web_site

why = available()
pytestmark = [pytest.mark.skipif(why is not None, reason=why or ""),
              pytest.mark.timeout(120), pytest.mark.slow,
              # chromium drops spare TLS connections at once; on Python 3.11 asyncio's SSL
              # layer then leaves the accepted socket to the garbage collector (a
              # ResourceWarning at the loop's end; the aiohttp-client tests have none)
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("webcert")
    make_self_signed(d / "web.crt", d / "web.key", gateway_id="gw-web", site="rue-de-test")
    return d / "web.crt", d / "web.key"


@pytest.fixture(scope="module")
def browser(cert: tuple[Path, Path]) -> Iterator[Browser]:
    b = Browser(cert[0].read_bytes())
    yield b
    b.close()


@pytest.fixture
async def site(tmp_path: Path, cert: tuple[Path, Path]) -> AsyncIterator[Site]:
    async with web_site(tmp_path, web={"tls": {"cert": str(cert[0]), "key": str(cert[1])}}
                        ) as s:
        yield s


async def on(b: Browser, fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def until(b: Browser, script: str, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await on(b, b.run, script)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never true in the page: {script}")
        await asyncio.sleep(0.1)


async def login(b: Browser, site: Site, user: str = TECH, pw: str = TECH_PW) -> None:
    await on(b, b.driver.delete_all_cookies)
    await on(b, b.driver.get, site.url + "/login")
    await on(b, b.run, "document.querySelector('[name=user]').value = arguments[0];"
                       "document.querySelector('[name=password]').value = arguments[1];"
                       "document.querySelector('form[action=\"/login\"]').submit();", user, pw)
    await until(b, "return document.readyState === 'complete' && "
                   "!location.pathname.startsWith('/login') || "
                   "!!document.querySelector('.flash.bad')")


async def test_login_refuses_a_wrong_password(browser: Browser, site: Site) -> None:
    await login(browser, site, TECH, "not-the-password")
    assert await on(browser, browser.run, "return location.pathname") == "/login"
    assert "Wrong user or password" in await on(browser, browser.run,
                                                "return document.body.innerText")
    await login(browser, site)
    assert await on(browser, browser.run, "return location.pathname") == "/"
    text = await on(browser, browser.run, "return document.body.innerText")
    assert "gw-web" in text and "rue-de-test" in text and "lamp-1" in text


async def test_an_anonymous_visitor_sees_the_login_page_only(browser: Browser,
                                                            site: Site) -> None:
    await on(browser, browser.driver.delete_all_cookies)
    for path in ("/", "/check", "/lighting", "/check/report.json", "/tag"):
        await on(browser, browser.driver.get, site.url + path)
        assert await on(browser, browser.run, "return location.pathname") == "/login"
        text = await on(browser, browser.run, "return document.body.innerText")
        assert "Log in" in text and "lamp-1" not in text and "temperature" not in text


async def test_live_values_follow_the_devices_without_reload(browser: Browser,
                                                           site: Site) -> None:
    await login(browser, site)
    await until(browser, "return document.getElementById('conn').dataset.s === 'live'")
    await on(browser, browser.run, "window.notReloaded = true")
    key = "p:env-1/temperature"
    site.sim.devices["env-1"].set("temperature", 31.7)
    await until(browser, f"return document.querySelector('[data-k=\"{key}\"]')"
                         ".textContent.startsWith('31.7')")
    site.sim.devices["env-1"].set("temperature", 12.3)
    await until(browser, f"return document.querySelector('[data-k=\"{key}\"]')"
                         ".textContent.startsWith('12.3')")
    assert await on(browser, browser.run, "return window.notReloaded === true")
    # the unit and the quality are shown with the value
    shown = await on(browser, browser.run,
                     f"return document.querySelector('[data-k=\"{key}\"]').textContent + '|' +"
                     " document.querySelector('[data-k=\"pq:env-1/temperature\"]').textContent")
    assert shown.split("|")[1] == "good" and shown.split("|")[0].split()[1]


async def test_override_on_the_page_reaches_the_led_driver(browser: Browser,
                                                           site: Site) -> None:
    await login(browser, site)
    await on(browser, browser.driver.get, site.url + "/lighting")
    assert site.sim.devices["lamp-1"].peek("dim_level") == 60
    await on(browser, browser.run,
             "var f = document.getElementById('override');"
             "f.querySelector('[name=level]').value = '15';"
             "f.querySelector('[name=minutes]').value = '20';"
             "f.querySelector('button[type=submit]').click();")
    await until(browser, "return document.querySelector('.flash') && document.querySelector("
                         "'.flash').textContent.includes('15 %')")
    async with asyncio.timeout(10):
        while site.sim.devices["lamp-1"].peek("dim_level") != 15:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert site.sim.devices["lamp-2"].peek("dim_level") == 15
    text = await on(browser, browser.run, "return document.getElementById('overrides')"
                                          ".innerText")
    assert "web:alice" in text and "priority 999" in text


async def test_lamp_test_from_the_page_and_the_report_downloads(browser: Browser,
                                                                site: Site) -> None:
    await login(browser, site)
    await on(browser, browser.driver.get, site.url + "/check")
    await on(browser, browser.run, "document.getElementById('run-lamp-test').click()")
    # the steps appear as they are decided, then the verdict and the report links
    await until(browser, "return document.querySelectorAll('#check-rows li').length > 3",
                within=30)
    await until(browser, "return !!document.querySelector('a[href=\"/check/report.json\"]')",
                within=60)
    text = await on(browser, browser.run, "return document.getElementById('check-rows')"
                                          ".innerText")
    assert "lamp test street" in text and "verdict" in text
    assert site.sim.devices["lamp-1"].peek("dim_level") == 60       # restored
    for link in ("/check/report.json", "/check/report.html"):
        await on(browser, browser.run,
                 f"document.querySelector('a[href=\"{link}\"]').click()")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done = [p for p in browser.downloads.iterdir() if not p.name.endswith(".crdownload")]
        if {p.suffix for p in done} >= {".json", ".html"}:
            break
        await asyncio.sleep(0.1)
    names = sorted(p.name for p in browser.downloads.iterdir())
    assert any(n.startswith("commissioning-gw-web-") and n.endswith(".json") for n in names)
    report = next(p for p in browser.downloads.iterdir() if p.suffix == ".json").read_text()
    assert '"lamp-test:street"' in report


async def test_no_horizontal_scroll_at_a_phones_width(browser: Browser, site: Site) -> None:
    await login(browser, site)
    await on(browser, browser.phone, True)
    try:
        for path in ("/", "/lighting", "/check", "/events", "/tag"):
            await on(browser, browser.driver.get, site.url + path)
            width = await on(browser, browser.run,
                             "return [document.documentElement.scrollWidth, window.innerWidth,"
                             " document.body.scrollWidth]")
            assert width[1] == 360, width
            assert max(width[0], width[2]) <= width[1], (path, width)
            # large targets: every button and link of the navigation at least 44 px high
            small = await on(browser, browser.run,
                             "return [...document.querySelectorAll('button, nav a, input, "
                             "select')].filter(e => e.offsetParent && "
                             "e.getBoundingClientRect().height < 44).map(e => e.outerHTML)")
            assert not small, (path, small)
    finally:
        await on(browser, browser.phone, False)
