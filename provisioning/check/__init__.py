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
- store: its directory takes a new SQLite store (written, read, deleted beside the real one);
- outputs: each lighting group's Modbus outputs read back their level;
- with `lamp_test`: each group's Modbus outputs go off, 50 %, 100 %, the lamp power is read back
  at each step, and the previous level is restored.

Checks that do not depend on each other (broker, Modbus buses, serial sensors) run concurrently.
:func:`report_json` and :func:`report_text` give the commissioning report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from gateway.config import Config, ModbusRtuBus, ModbusTcpBus, SerialBus
from provisioning.check.lamps import _lamps_from_profiles, _outputs_and_lamps
from provisioning.check.model import (
    CheckOptions,
    CheckReport,
    CheckResult,
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


# ------------------------------------------------------------------------------ the run
async def run_checks(config_path: str | Path, options: CheckOptions | None = None
                     ) -> CheckReport:
    """Run the checklist against the site `config_path` describes. Never raises for a failed
    check: every failure is a FAIL line with its hint."""
    options = options or CheckOptions()
    started = time.time()
    path = Path(config_path)
    results: list[CheckResult] = []
    cfg, first = _check_config(path)
    results.append(first)
    if cfg is None:
        return _report(path, None, started, results)
    lighting = _check_lighting(cfg)
    results.append(lighting)
    agents, agent_row = _check_agent(options, cfg, path)
    results.append(agent_row)
    results.extend(_check_secrets(cfg))

    # broker, Modbus buses and serial sensors do not share anything: run them together
    jobs: list[Awaitable[Any]] = [_check_broker(cfg, url, options.timeout)
                                  for url in cfg.mqtt.urls]
    modbus = [b for b in cfg.buses if isinstance(b, (ModbusRtuBus, ModbusTcpBus))]
    serial = [b for b in cfg.buses if isinstance(b, SerialBus)]
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
    results.append(_check_clock(cfg, options, gps))
    results.append(await asyncio.to_thread(_check_store, cfg))

    if lighting.status in (Status.PASS, Status.WARN):
        from policies.lighting import parse_lighting

        rules = parse_lighting(cfg.lighting, location=cfg.gateway.location)
        results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=True))
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
            results.extend(await _outputs_and_lamps(cfg, rules, options, agents, check=False))
    return _report(path, cfg, started, results)


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
