"""What the technician's page costs the agent: resident memory (RSS) of `edgegw run` on the
example street (examples/street.yaml against `edgegw simulate --spec examples/sim-street.yaml`,
a private Mosquitto), with the page off, with it on and idle, and while a technician uses it
(logged in, every screen loaded, a live stream open), plus the CPU the agent used meanwhile.

    .venv/bin/python bench/web_bench.py [--settle 20] [--use 20]

Each run is a fresh agent process; RSS is read from /proc/PID/status (VmRSS, and VmHWM for the
peak). The simulators and the broker are other processes and are not counted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.broker import MosquittoBroker  # noqa: E402

EDGEGW = str(Path(sys.executable).parent / "edgegw")
USER, PASSWORD = "bench", "bench-password-1"


def rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_s(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def config(tmp: Path, broker_url: str, *, web: bool) -> Path:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "street.yaml").read_text())
    raw["mqtt"]["url"] = broker_url
    raw["store"]["path"] = str(tmp / "var" / "store.db")
    raw["service"]["control_socket"] = str(tmp / "var" / "control.sock")
    for b in raw["buses"]:
        if b["type"] == "modbus-rtu":
            b["port"] = str(tmp / "var" / "rs485-1")
    if web:
        from gateway.web.accounts import Role, set_account
        from gateway.web.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY, make_self_signed

        set_account(tmp / "web-users", USER, Role.TECHNICIAN, PASSWORD)
        # as after the first start: the certificate exists (making it loads cryptography,
        # about 7 MB, once)
        make_self_signed(tmp / "var" / SELF_SIGNED_CERT, tmp / "var" / SELF_SIGNED_KEY,
                         gateway_id=raw["gateway"]["id"], site=raw["gateway"]["site"])
        raw["web"] = {"listen": "127.0.0.1:18443", "users": str(tmp / "web-users")}
    path = tmp / ("web.yaml" if web else "plain.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


async def use_page(cert: Path, seconds: float) -> int:
    """Log in, load every screen, keep a live stream open; the stream's message count."""
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False      # the bench connects by IP; the chain is still verified
    url = "https://127.0.0.1:18443"
    jar = aiohttp.CookieJar(unsafe=True)
    messages = 0
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.post(url + "/login", data={"user": USER, "password": PASSWORD},
                          headers={"Origin": url}, ssl=ctx) as r:
            assert r.status == 200, r.status
        for path in ("/", "/lighting", "/check", "/events", "/tag"):
            async with s.get(url + path, ssl=ctx) as r:
                await r.read()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds), s.get(url + "/live", ssl=ctx) as r:
                async for _line in r.content:
                    messages += 1
    return messages


def run(tmp: Path, cfg: Path, *, settle: float, use: float, web: bool) -> dict[str, Any]:
    proc = subprocess.Popen([EDGEGW, "run", "--config", str(cfg)], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        idle, _ = rss_kb(proc.pid)
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        out: dict[str, Any] = {"idle_kb": idle}
        if web:
            out["messages"] = asyncio.run(use_page(tmp / "var" / "web-selfsigned.crt", use))
            out["used_kb"] = rss_kb(proc.pid)[0]
        else:
            time.sleep(use)
        out["cpu_pct"] = 100 * (cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
        out["peak_kb"] = rss_kb(proc.pid)[1]
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def broker_url(stack: contextlib.AsyncExitStack, tmp: Path) -> str:
    b = await stack.enter_async_context(MosquittoBroker(tmp / "broker"))
    return str(b.url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    ap.add_argument("--use", type=float, default=20.0, help="seconds of page use")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgegw-webbench-"))
    (tmp / "var").mkdir()
    sim = subprocess.Popen([EDGEGW, "simulate", "--spec",
                            str(ROOT / "examples" / "sim-street.yaml")], cwd=tmp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        url = loop.run_until_complete(broker_url(stack, tmp))
        time.sleep(2)
        results = {}
        for web in (False, True):
            for name in ("store.db", "store.db-wal", "store.db-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (tmp / "var" / name).unlink()
            results[web] = run(tmp, config(tmp, url, web=web), settle=args.settle,
                               use=args.use, web=web)
        off, on = results[False], results[True]
        mb = 1024.0
        print("edgegw run on the example street (6 devices, 3 lighting outputs), "
              f"RSS after {args.settle:g} s, then {args.use:g} s more")
        print(f"{'':34}{'RSS MB':>9}{'peak MB':>9}{'CPU %':>8}")
        print(f"{'page off':34}{off['idle_kb'] / mb:9.1f}{off['peak_kb'] / mb:9.1f}"
              f"{off['cpu_pct']:8.2f}")
        print(f"{'page on, nobody logged in':34}{on['idle_kb'] / mb:9.1f}")
        print(f"{'page on, in use (log-in, 5 screens,':34}")
        print(f"{'  live stream)':34}{on['used_kb'] / mb:9.1f}{on['peak_kb'] / mb:9.1f}"
              f"{on['cpu_pct']:8.2f}")
        print(f"the page costs {(on['idle_kb'] - off['idle_kb']) / mb:+.1f} MB idle, "
              f"{(on['used_kb'] - off['idle_kb']) / mb:+.1f} MB in use "
              f"(peak {(on['peak_kb'] - off['peak_kb']) / mb:+.1f} MB: the argon2 check of "
              f"the log-in); {on['messages']} stream messages in {args.use:g} s")
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
