"""A private MQTT broker for tests and the demo: Mosquitto on a free loopback port.

Mosquitto is started as a child process with a config of our own, on a port picked by binding
127.0.0.1:0 (a broker may already hold 1883). It can be stopped and restarted on the same port,
optionally keeping sessions across restarts (persistence), and can serve TLS with client
certificates. Where Mosquitto is not installed, `EmbeddedBroker` runs amqtt in-process
(MQTT 3.1.1 only, about half Mosquitto's speed: a fallback for the demo, not for production).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """An unused loopback TCP port (bind :0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


class BrokerError(RuntimeError):
    """The broker could not be started."""


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Server side of TLS: CA that signed the clients, the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = True


class MosquittoBroker:
    """Mosquitto as a child process; `async with MosquittoBroker(workdir) as b: b.url`."""

    def __init__(self, workdir: str | Path | None = None, *, port: int | None = None,
                 persistence: bool = False, tls: BrokerTls | None = None,
                 anonymous: bool = True) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self._exe = exe
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgegw-mosquitto-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or 0
        self.persistence = persistence
        self.tls = tls
        self.anonymous = anonymous      # False: every client without an account is refused
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        lines = [
            "per_listener_settings false",
            f"persistence {'true' if self.persistence else 'false'}",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "message_size_limit 0",
            "set_tcp_nodelay true",
        ]
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if os.geteuid() == 0:
            # started as root, mosquitto drops to user `mosquitto` before reading the key
            lines.append("user root")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}",
                      f"keyfile {self.tls.key}", "tls_version tlsv1.2"]
            if self.tls.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    async def start(self) -> None:
        if self.running:
            return
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
            self._spawn(self._write_config())
            if await self._wait_ready():
                return
            self._kill()
            log_tail = self.log_path.read_text(errors="replace")[-600:]
            if "Address already in use" in log_tail:
                self.port = 0     # lost the race for the port: pick another
                continue
            raise BrokerError(f"mosquitto did not start:\n{log_tail}")
        raise BrokerError("mosquitto did not start: no free port after 5 attempts")

    def _spawn(self, conf: Path) -> None:
        # the broker's log goes to a file: a full, unread pipe would block it
        with self.log_path.open("ab") as logf:
            self._proc = subprocess.Popen([self._exe, "-c", str(conf)], stdout=logf,
                                          stderr=logf, stdin=subprocess.DEVNULL)

    async def _wait_ready(self, within: float = 10.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            # TLS quirk: the port may accept before the key failed to load; look again
            await asyncio.sleep(0.02)
            return self._proc.poll() is None
        return False

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    async def stop(self) -> None:
        """Stop the broker (keeping its port for a restart)."""
        await asyncio.to_thread(self._kill)

    async def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
        self._proc = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> MosquittoBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class EmbeddedBroker:
    """amqtt in-process on a free loopback port: the demo's fallback when Mosquitto is absent."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker
        except ImportError as err:
            raise BrokerError("no MQTT broker: install Mosquitto (apt-get install mosquitto) or "
                              "the demo's embedded one (pip install 'edgegw[demo]'; `make "
                              "demo` does)") from err

        config = {
            # amqtt's default listener is 0.0.0.0:1883: always give it ours
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()


def start_demo_broker() -> MosquittoBroker | EmbeddedBroker:
    """Mosquitto if installed, otherwise the embedded broker."""
    if find_mosquitto() is not None:
        return MosquittoBroker()
    return EmbeddedBroker()
