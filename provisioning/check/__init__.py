"""`edgegw check`: the on-site checklist, its verdict, and the commissioning report.

:func:`run_checks` tests the site the config describes, with the agent's own drivers and
settings, and returns a :class:`CheckReport`: one :class:`CheckResult` per line of the checklist,
each PASS, WARN (passes, but look at it), FAIL (with a `hint`: what to do) or SKIP (does not
apply). The verdict is PASS only when nothing failed. In order:

- config: the file parses and validates (`load_config`), and so do the lighting rules
  (`parse_lighting`, with their warnings);
- agent: whether `edgegw run` is running (it holds serial ports; the lamp test needs it stopped);
- secrets: key and password files exist and are 0600; the client certificate is this
  gateway's, matches the key, and is not about to expire;
- broker: each broker URL accepts a connection (TLS and the client certificate included), under
  a client id of its own so the running agent is not kicked off;
- each Modbus device answers a full read of its points (one poll, as the agent makes it);
- each serial sensor delivers a valid frame (a port the agent holds shows as busy);
- clock: NTP synchronised, a battery-backed RTC, or a GPS time fix seen during the check;
- web: the technician's page's address and its certificate's fingerprint (when configured);
- store: its directory takes a new SQLite store (written, read, deleted beside the real one);
- outputs: each lighting group's Modbus outputs read back their level;
- with `lamp_test`: each group's Modbus outputs go off, 50 %, 100 %, the lamp power is read back
  at each step, and the previous level is restored.

Inside the running agent (``live``, the technician's page), the same list uses the agent's
config, buses, serial readers and clock, and the lamp test goes through the agent's command
path (provisioning/check/live.py).

Checks that do not depend on each other (broker, Modbus buses, serial sensors) run concurrently.
:func:`report_json` and :func:`report_text` give the commissioning report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

from gateway.config import Config, ModbusRtuBus, ModbusTcpBus, SerialBus
from provisioning.check.lamps import _lamps_from_profiles, _outputs_and_lamps
from provisioning.check.live import (
    _check_live_clock,
    _check_live_config,
    _check_live_modbus_bus,
    _check_live_serial,
    _check_web,
)
from provisioning.check.model import (
    CheckOptions,
    CheckReport,
    CheckResult,
    LiveSite,
    Status,
    _Timer,
    versions,
)
from provisioning.check.report import (
    lamp_watts,
    report_html,
    report_json,
    report_paths,
    report_text,
    write_report,
)
from provisioning.check.site import (
    _check_agent,
    _check_broker,
    _check_clock,
    _check_config,
    _check_lighting,
    _check_modbus_bus,
    _check_secrets,
    _check_serial,
    _check_store,
    system_ntp_status,
)
from provisioning.ports import Holder


# ------------------------------------------------------------------------------ the run
class _Rows(list[CheckResult]):
    """The checklist so far; each line goes to ``options.on_result`` once, as it is decided."""

    def __init__(self, options: CheckOptions) -> None:
        super().__init__()
        self._sink = options.on_result
        self._phase = options.on_phase
        self._told: set[int] = set()

    def tell(self, r: CheckResult) -> None:
        if id(r) not in self._told:
            self._told.add(id(r))
            if self._sink is not None:
                self._sink(r)

    def phase(self, text: str) -> None:
        if self._phase is not None:
            self._phase(text)

    def append(self, r: CheckResult) -> None:
        super().append(r)
        self.tell(r)

    def extend(self, rows: Iterable[CheckResult]) -> None:
        for r in rows:
            self.append(r)


async def run_checks(config_path: str | Path, options: CheckOptions | None = None, *,
                     live: LiveSite | None = None) -> CheckReport:
    """Run the checklist against the site `config_path` describes. Never raises for a failed
    check: every failure is a FAIL line with its hint.

    With ``live`` (the running agent), the checks use the agent's config, buses, serial
    readers and clock, and the lamp test goes through its command path while the lighting
    holds off the group under test (the page's check: the agent cannot be stopped for it).
    """
    options = options or CheckOptions()
    started = time.time()
    results = _Rows(options)
    options = dataclasses.replace(options, on_result=results.tell)
    if live is not None:
        cfg: Config | None = live.config
        path = Path(live.config.source)
        results.append(_check_live_config(path, live.config))
    else:
        path = Path(config_path)
        results.phase("config")
        cfg, first = _check_config(path)
        results.append(first)
    if cfg is None:
        return _report(path, None, started, results)
    lighting = _check_lighting(cfg)
    results.append(lighting)
    if live is not None:
        agents: tuple[Holder, ...] = ()
        results.append(_Timer().result("agent", "agent", Status.PASS, live.agent_detail()))
    else:
        agents, agent_row = _check_agent(options, cfg, path)
        results.append(agent_row)
    results.extend(_check_secrets(cfg))
    results.append(_check_web(cfg))

    # broker, Modbus buses and serial sensors do not share anything: run them together
    results.phase("broker, devices, sensors")
    jobs: list[Awaitable[Any]] = [_check_broker(cfg, url, options.timeout)
                                  for url in cfg.mqtt.urls]
    modbus = [b for b in cfg.buses if isinstance(b, (ModbusRtuBus, ModbusTcpBus))]
    serial = [b for b in cfg.buses if isinstance(b, SerialBus)]
    if live is not None:
        jobs += [_check_live_modbus_bus(cfg, b, live, options.timeout) for b in modbus]
        jobs += [_as_job(_check_live_serial(b, live)) for b in serial]
    else:
        jobs += [_check_modbus_bus(cfg, b, options.timeout) for b in modbus]
        jobs += [_check_serial(b, options.timeout) for b in serial]
    done = await asyncio.gather(*jobs)
    n_urls = len(cfg.mqtt.urls)
    brokers: list[CheckResult] = list(done[:n_urls])
    if n_urls > 1 and any(r.status is Status.PASS for r in brokers):
        brokers = [dataclasses.replace(r, status=Status.WARN, hint=(
            f"another broker URL works, so the gateway still connects; {r.hint}"))
            if r.status is Status.FAIL else r for r in brokers]
    results.extend(brokers)
    for rows in done[n_urls:n_urls + len(modbus)]:
        results.extend(rows)
    gps: list[tuple[str, dt.datetime]] = []
    for bus, (row, fix) in zip(serial, done[n_urls + len(modbus):], strict=True):
        results.append(row)
        if fix is not None:
            gps.append((bus.name, fix))
    results.append(_check_live_clock(cfg, options, live) if live is not None
                   else _check_clock(cfg, options, gps))
    results.append(await asyncio.to_thread(_check_store, cfg))

    results.phase("outputs")
    if lighting.status in (Status.PASS, Status.WARN):
        from policies.lighting import parse_lighting

        rules = parse_lighting(cfg.lighting, location=cfg.gateway.location)
        results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=True,
                                                live=live))
    elif options.lamp_test and cfg.lighting:
        t = _Timer()
        results.append(t.result("lamp-test", "lamp test", Status.FAIL,
                                "not run: no valid lighting rules",
                                hint="fix the lighting rules first"))
    elif options.lamp_test:
        # no lighting section yet (commissioning comes before the rules): the lamps are the
        # devices whose profile has a writable dim_level
        rules = _lamps_from_profiles(cfg)
        if rules is None:
            t = _Timer()
            results.append(t.result("lamp-test", "lamp test", Status.SKIP,
                                    "no lamps: no lighting section and no device with a "
                                    "writable dim_level (an LED driver's profile)"))
        else:
            results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=False,
                                                    live=live))
    return _report(path, cfg, started, results)


async def _as_job(row: CheckResult) -> tuple[CheckResult, None]:
    return row, None


def _report(path: Path, cfg: Config | None, started: float,
            results: list[CheckResult]) -> CheckReport:
    gateway: dict[str, Any] = {}
    if cfg is not None:
        gateway = cfg.gateway.model_dump(mode="json")
    return CheckReport(config_path=str(path.resolve()), gateway=gateway,
                       config_digest=cfg.digest() if cfg is not None else None,
                       started_at=started, finished_at=time.time(), results=tuple(results),
                       versions=versions(), host=socket.gethostname())


__all__ = [
    "CheckOptions",
    "CheckReport",
    "CheckResult",
    "LiveSite",
    "Status",
    "lamp_watts",
    "report_html",
    "report_json",
    "report_paths",
    "report_text",
    "run_checks",
    "system_ntp_status",
    "versions",
    "write_report",
]
