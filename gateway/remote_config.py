"""Remote configuration: ``set_config`` and ``get_config``, with a probation and an automatic
roll-back (docs/operations.md, "Changing a gateway's configuration remotely").

``set_config`` (signed, and only with ``commands.remote_config: true``) carries a whole new
config. The agent validates it as ``edgegw config validate`` would (files included), refuses one
for another gateway id, then:

1. keeps the config in force as ``<config>.last-good`` and writes the new one in its place
   (each atomically, with the file's own permissions), and a probation marker
   ``<config>.pending`` (``{digest, previous, at, probation_s, starts}``);
2. answers, emits ``config_received``, and restarts its components on the new config (the
   same process: the store, the backlog and the lamps' state carry over);
3. watches the new config for ``probation_s`` seconds: it is *healthy* once the uplink has
   connected and every Modbus bus has a device answering. Healthy: the marker goes,
   ``config_applied`` is emitted. Not healthy in time: ``<config>.last-good`` is put back,
   ``config_rolled_back`` says why, and the agent restarts on the old config.

If the new config stops the agent from starting at all, each start counts in the marker; at the
third the previous config is put back before the agent starts (``config_rolled_back``).

``get_config`` returns the config in force, without secrets (the ThingsBoard access token in
``mqtt.username`` is redacted; key and password files are paths, never their content).
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drivers.modbus.bus import Health
from gateway.config import Config, parse_config
from gateway.errors import BadValue, ConfigError, Unsupported
from gateway.files import write_atomic

if TYPE_CHECKING:
    from gateway.runtime import Agent

__all__ = ["ConfigChanger", "Probation", "redacted", "start_probation"]

log = logging.getLogger("edgegw.config")

MAX_STARTS = 3                 # starts of a new config that never came up before it is undone
REDACTED = "<redacted>"


def redacted(cfg: Config) -> dict[str, Any]:
    """The config in force, as JSON, without secrets."""
    out: dict[str, Any] = cfg.model_dump(mode="json", exclude={"source"})
    mqtt = out.get("mqtt") or {}
    if cfg.mqtt.format == "thingsboard" and mqtt.get("username"):
        mqtt["username"] = REDACTED              # ThingsBoard's access token
    return out


def _paths(config: Path) -> tuple[Path, Path]:
    return (config.with_name(config.name + ".last-good"),
            config.with_name(config.name + ".pending"))


@dataclass
class Probation:
    """The marker of a config on probation (``<config>.pending``)."""

    path: Path
    digest: str
    previous: str
    at: float
    probation_s: float
    starts: int = 0

    @classmethod
    def load(cls, config: Path) -> Probation | None:
        marker = _paths(config)[1]
        try:
            raw = json.loads(marker.read_text())
            return cls(path=config, digest=str(raw["digest"]), previous=str(raw["previous"]),
                       at=float(raw["at"]), probation_s=float(raw["probation_s"]),
                       starts=int(raw.get("starts", 0)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("config: probation marker %s unreadable (%s); ignored", marker, err)
            return None

    def save(self) -> None:
        data = json.dumps({"digest": self.digest, "previous": self.previous, "at": self.at,
                           "probation_s": self.probation_s, "starts": self.starts}).encode()
        write_atomic(_paths(self.path)[1], data, mode=0o600)

    def clear(self) -> None:
        _paths(self.path)[1].unlink(missing_ok=True)

    def roll_back(self) -> bool:
        """Put the previous config back; False when there is none to put back."""
        last_good = _paths(self.path)[0]
        try:
            data = last_good.read_bytes()
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError as err:
            log.error("config: cannot roll back to %s: %s", last_good, err)
            return False
        write_atomic(self.path, data, mode=mode)
        self.clear()
        return True


class ConfigChanger:
    """``get_config`` and ``set_config`` for the agent (see the module docstring)."""

    def __init__(self, cfg: Config, *, emit: Callable[[str, str | None, dict[str, Any]], None],
                 restart: Callable[[], None], wall_clock: Callable[[], float] = time.time
                 ) -> None:
        self.cfg = cfg
        self._emit = emit
        self._restart = restart
        self._wall = wall_clock

    @property
    def path(self) -> Path | None:
        p = Path(self.cfg.source)
        return p if p.is_file() else None

    def get_config(self) -> dict[str, Any]:
        path = self.path
        pending = Probation.load(path) if path is not None else None
        return {"digest": self.cfg.digest(), "path": str(path) if path else None,
                "config": redacted(self.cfg),
                "probation": None if pending is None else {
                    "digest": pending.digest, "previous": pending.previous,
                    "since": pending.at, "probation_s": pending.probation_s}}

    def set_config(self, config: Mapping[str, Any] | str, probation_s: float) -> dict[str, Any]:
        if not self.cfg.commands.remote_config:
            raise Unsupported("remote configuration is off (commands.remote_config)")
        path = self.path
        if path is None:
            raise Unsupported("the agent was not started from a config file")
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config),
                                                                     sort_keys=False)
        try:
            new = parse_config(text, source=f"{path} (set_config)", base_dir=path.parent,
                               check_files=True)
        except ConfigError as err:
            shown = "; ".join(f"{p}: {m}" if p else m for p, m in err.problems[:20])
            raise BadValue(f"config rejected, the config in force stays: {shown}") from None
        if new.gateway.id != self.cfg.gateway.id:
            raise BadValue(f"the new config is for gateway {new.gateway.id!r}, this is "
                           f"{self.cfg.gateway.id!r}")
        old = self.cfg.digest()
        if new.digest() == old:
            return {"accepted": True, "changed": False, "digest": old}
        if Probation.load(path) is not None:
            raise BadValue("another config is on probation; wait for config_applied or "
                           "config_rolled_back")
        last_good, _ = _paths(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        write_atomic(last_good, path.read_bytes(), mode=mode)
        Probation(path=path, digest=new.digest(), previous=old, at=self._wall(),
                  probation_s=probation_s).save()
        write_atomic(path, text.encode(), mode=mode)
        self._emit("config_received", None, {"digest": new.digest(), "previous": old,
                                             "probation_s": probation_s})
        log.warning("config: new config %s received (was %s); restarting on it, %g s of "
                    "probation", new.digest(), old, probation_s)
        self._restart()
        return {"accepted": True, "changed": True, "digest": new.digest(), "previous": old,
                "probation_s": probation_s, "restarting": True}


def healthy(agent: Agent) -> tuple[bool, str]:
    """Whether the agent is up on its config: the uplink connected once, every Modbus bus with
    a device answering. Returns (ok, what is missing)."""
    missing: list[str] = []
    if agent.link is not None and agent.link.reconnects == 0 and (
            not agent.link.connected.is_set()):
        missing.append(f"the uplink never connected ({agent.link.last_error or 'no answer'})")
    for name, bus in agent.buses.items():
        devices = list(bus.devices)
        if devices and not any(bus.health(d) is Health.ONLINE for d in devices):
            missing.append(f"bus {name}: no device answers")
    return not missing, "; ".join(missing)


async def start_probation(agent: Agent, pending: Probation) -> None:
    """Watch a config on probation (run as a task while the agent runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(1.0, pending.probation_s - (time.time() - pending.at)
                                 if pending.starts <= 1 else pending.probation_s)
    why = ""
    while loop.time() < deadline:
        ok, why = healthy(agent)
        if ok:
            pending.clear()
            agent.emit_event("config_applied", None, {
                "digest": pending.digest, "previous": pending.previous,
                "after_s": round(time.time() - pending.at, 1)})
            log.info("config: %s is healthy; it stays", pending.digest)
            return
        await asyncio.sleep(0.5)
    log.error("config: %s not healthy within %g s (%s): rolling back to %s", pending.digest,
              pending.probation_s, why, pending.previous)
    if pending.roll_back():
        agent.emit_event("config_rolled_back", None, {
            "digest": pending.digest, "restored": pending.previous,
            "reason": f"not healthy within {pending.probation_s:g} s: {why}"[:300]})
        agent.request_restart()
