"""Screenshots of the technician's page for docs/field-guide.md, made by the real page in the
real browser (Debian's chromium, headless, at a phone's width) against the example street's
simulators. Rerun after changing the page:

    .venv/bin/python docs/screenshots.py            # writes docs/img/web-*.png

Needs what `make test` installs (chromium, chromium-driver, the dev extra)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser, available  # noqa: E402
from tests.web_helpers import TECH, TECH_PW, web_site  # noqa: E402

OUT = ROOT / "docs" / "img"
SHOTS = [("/", "web-overview.png"), ("/lighting", "web-lighting.png"),
         ("/check", "web-check.png"), ("/tag", "web-tag.png")]


async def main() -> int:
    why = available()
    if why:
        print(f"cannot run the browser: {why}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgegw-shots-") as tmp:
        async with web_site(Path(tmp)) as site:
            b = Browser(site.cert.read_bytes())

            async def on(fn: Any, *args: Any) -> Any:
                return await asyncio.to_thread(fn, *args)

            try:
                await on(b.phone, True)
                await on(b.driver.get, site.url + "/login")
                await on(b.driver.save_screenshot, str(OUT / "web-login.png"))
                await on(b.run, "document.querySelector('[name=user]').value = arguments[0];"
                                "document.querySelector('[name=password]').value = arguments[1];"
                                "document.querySelector('form').submit();", TECH, TECH_PW)
                await asyncio.sleep(1.5)
                # the lamp test first, so the check screen shows a finished run
                await on(b.driver.get, site.url + "/check")
                await on(b.run, "document.getElementById('run-lamp-test').click()")
                deadline = time.monotonic() + 60
                done = "return !!document.querySelector('a[href=\"/check/report.json\"]')"
                while time.monotonic() < deadline:
                    if await on(b.run, done):
                        break
                    await asyncio.sleep(0.3)
                for path, name in SHOTS:
                    await on(b.driver.get, site.url + path)
                    await asyncio.sleep(2.0)          # live values in, chart drawn
                    height = await on(b.run, "return document.documentElement.scrollHeight")
                    b.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": 360, "height": min(int(height), 2400),
                        "deviceScaleFactor": 1, "mobile": False})
                    await on(b.driver.save_screenshot, str(OUT / name))
                    await on(b.phone, True)
                    print(f"wrote docs/img/{name}")
            finally:
                await on(b.close)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
