"""`edgegw run`: the agent in the foreground until SIGTERM/SIGINT, without the CLI around it.

The service runs this all day, so it imports only what the agent needs: not typer and not the
other commands' modules (platform tools, provisioning), about 2 MB of RSS on a gateway whose
budget is 40 (gateway/entry.py sends `edgegw run` here; `gateway.cli`'s `run` command calls the
same function).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.config import Config, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.journal import JournalFormatter, JournalHandler, under_journald
from gateway.journal import available as journal_available

log = logging.getLogger("edgegw")


def setup_logging(verbose: int) -> None:
    """INFO by default; ``-v`` DEBUG for edgegw; ``-vv`` DEBUG for the libraries too."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(JournalFormatter())
        if journal_available():      # the journal's fields (EDGEGW_DEVICE...), stderr if refused
            handler = JournalHandler(fallback=handler)
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.getLogger("edgegw").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    # pymodbus logs every timeout as an ERROR with a traceback; the bus reports those itself
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def probation_at_start(path: Path, cfg: Config) -> tuple[Any, dict[str, Any] | None]:
    """A config on probation: count this start; after MAX_STARTS starts that never came up,
    put the previous config back. Returns (the probation to watch, or None; the roll-back's
    event detail, or None)."""
    from gateway.remote_config import MAX_STARTS, Probation

    pending = Probation.load(path)
    if pending is None:
        return None, None
    if pending.digest != cfg.digest():        # the file was changed by hand since
        pending.clear()
        return None, None
    pending.starts += 1
    pending.save()
    if pending.starts <= MAX_STARTS:
        return pending, None
    log.error("config %s did not come up in %d starts: putting %s back", pending.digest,
              MAX_STARTS, pending.previous)
    if not pending.roll_back():
        return pending, None
    return None, {"digest": pending.digest, "restored": pending.previous,
                  "reason": f"the agent did not come up in {MAX_STARTS} starts"}


def config_or_none(path: Path) -> Config | None:
    """The config, or None after printing why it is refused (the caller exits with 2)."""
    try:
        return load_config(path)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        print(f"{path}: invalid config ({len(err.problems)} problem(s)); "
              "see docs/configuration.md", file=sys.stderr)
        return None


def run_agent(config: Path, *, verbose: int = 0, log_samples: bool = False) -> int:
    """Run the agent on `config` until SIGTERM/SIGINT; the process's exit code."""
    setup_logging(verbose)
    cfg = config_or_none(config)
    if cfg is None:
        return 2
    from gateway.control import status_line
    from gateway.remote_config import Probation, start_probation
    from gateway.runtime import Agent, log_events
    from gateway.service import SystemdNotifier
    from gateway.supervisor import ComponentFailed

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        current = cfg
        while True:
            restart = await serve(current, stop)
            if not restart:
                break
            # set_config wrote a new file, or a roll-back put the old one back: run on it
            log.warning("restarting on %s", config)
            try:
                current = load_config(config)
            except ConfigError as err:     # validated before it was written: only a hand edit
                log.error("%s; putting the previous config back", err)
                pending = Probation.load(config)
                if pending is None or not pending.roll_back():
                    raise
                current = load_config(config)
        log.info("stopped cleanly")

    async def serve(current: Config, stop: asyncio.Event) -> bool:
        notifier = SystemdNotifier(status_interval=current.service.status_interval,
                                   own_tasks=False)
        pending, rolled_back = probation_at_start(config, current)
        if rolled_back is not None:
            current = load_config(config)
        agent = Agent(current, log_samples=log_samples, control=True, notifier=notifier,
                      first_connect_jitter=current.service.connect_jitter)
        log_events(agent)
        watch: asyncio.Task[None] | None = None
        async with notifier as sd, agent:
            log.info("gateway %s running: %d bus(es), %d device(s)", current.gateway.id,
                     len(agent.buses), len(current.devices))
            sd.ready(status_line(agent.state_snapshot()))
            if rolled_back is not None:
                agent.emit_event("config_rolled_back", None, rolled_back)
            if pending is not None:
                watch = asyncio.create_task(start_probation(agent, pending),
                                            name="config-probation")
            try:
                return await agent.run(stop)
            finally:
                if watch is not None:
                    watch.cancel()
    try:
        asyncio.run(main())
    except ComponentFailed as err:
        log.critical("%s; exiting so that the service manager starts a fresh agent", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except GatewayError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
