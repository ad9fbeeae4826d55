"""The `edgegw` command line (DESIGN.md 4.1 is the contract).

Exit codes: 0 success, 2 bad usage or invalid input (with a message naming file, field and
problem), 1 any other failure. Errors become instructions here, once, at the edge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from gateway import __version__
from gateway.config import (
    Config,
    ModbusRtuBus,
    ModbusTcpBus,
    config_schema,
    load_config,
)
from gateway.errors import ConfigError, GatewayError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="edgegw: street-cabinet gateway for smart lighting and sensors.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate configs.")
app.add_typer(config_app, name="config")

log = logging.getLogger("edgegw")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to the config (YAML).")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymodbus logs every timeout as an ERROR with a traceback; the bus reports those itself
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        typer.echo(f"{path}: invalid config ({len(err.problems)} problem(s)); "
                   "see docs/configuration.md", err=True)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def run(config: ConfigOpt, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        log_samples: Annotated[bool, typer.Option(
            "--log-samples/--no-log-samples", help="Log every value read.")] = True) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT."""
    _setup_logging(verbose)
    cfg = load_or_exit(config)
    from gateway.runtime import Agent

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        agent = Agent(cfg, log_samples=log_samples)
        agent.on_event(lambda e: log.info("event %s %s %s", e.type, e.device or "",
                                          json.dumps(e.detail)))
        async with agent:
            log.info("gateway %s running: %d bus(es), %d device(s)", cfg.gateway.id,
                     len(agent.buses), len(cfg.devices))
            await agent.run(stop)
        log.info("stopped cleanly")

    try:
        asyncio.run(main())
    except GatewayError as err:
        fail(str(err))


@app.command()
def simulate(spec: Annotated[Path, typer.Option("--spec", help="Simulator spec (YAML).")],
             verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run simulated devices (Modbus TCP/RTU, serial) from a spec file until stopped."""
    _setup_logging(verbose)
    from simulators.runner import SpecError, run_spec

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_spec(spec) as handle:
            for line in handle.describe():
                typer.echo(line)
            typer.echo("simulators running; Ctrl-C to stop", err=True)
            await stop.wait()

    try:
        asyncio.run(main())
    except SpecError as err:
        fail(str(err), code=2)


@app.command()
def scan(config: ConfigOpt,
         bus: Annotated[str, typer.Option("--bus", help="Name of the bus to scan.")],
         units: Annotated[str, typer.Option(help="Unit ids to try, e.g. 1-32,100.")] = "1-247",
         timeout: Annotated[float, typer.Option(help="Seconds to wait for each unit.")] = 0.3,
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Find the Modbus unit ids that answer on a bus."""
    _setup_logging(False)
    cfg = load_or_exit(config)
    try:
        b = cfg.bus(bus)
    except KeyError:
        fail(f"no bus named {bus!r} in {config} (buses: "
             f"{', '.join(x.name for x in cfg.buses) or 'none'})", code=2)
    if not isinstance(b, (ModbusRtuBus, ModbusTcpBus)):
        fail(f"bus {bus} is a {b.type} bus; scan works on Modbus buses", code=2)
    try:
        unit_ids = parse_ranges(units, lo=0, hi=247)
    except ValueError as err:
        fail(f"--units: {err}", code=2)
    from rich.progress import Progress

    from drivers.modbus.probe import ProbeResult, probe_units
    from gateway.runtime import modbus_settings

    settings = modbus_settings(cfg, b)
    found: list[ProbeResult] = []

    async def main() -> list[ProbeResult]:
        with Progress(transient=True, disable=as_json) as progress:
            task = progress.add_task(f"scanning {bus}", total=len(unit_ids))

            def tick(r: ProbeResult) -> None:
                progress.advance(task)
                if r.answered:
                    found.append(r)
            return await probe_units(settings, unit_ids, unit_timeout=timeout,
                                     on_progress=tick)

    try:
        asyncio.run(main())
    except GatewayError as err:
        fail(str(err), hint="check the bus settings (port, baud rate, cabling) and power")
    known = {(d.bus, d.unit): d.name for d in cfg.devices}
    if as_json:
        typer.echo(json.dumps([{"unit": r.unit, "detail": r.detail,
                                "configured_as": known.get((bus, r.unit))} for r in found]))
        return
    if not found:
        typer.echo(f"no unit answered on {bus} ({len(unit_ids)} tried)")
        raise typer.Exit(1)
    typer.echo(f"{len(found)} unit(s) answered on {bus}:")
    for r in found:
        name = known.get((bus, r.unit))
        label = f"= {name}" if name else "(not in config)"
        typer.echo(f"  unit {r.unit:3d}  {r.detail:<28} {label}")


def parse_ranges(text: str, *, lo: int, hi: int) -> list[int]:
    """'1-5,9' -> [1, 2, 3, 4, 5, 9], each within lo..hi."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            start, end = int(a), int(b or a)
        except ValueError:
            raise ValueError(f"{part!r} is not a number or a range like 1-32") from None
        if not (lo <= start <= end <= hi):
            raise ValueError(f"{part!r} is outside {lo}..{hi}")
        out.extend(range(start, end + 1))
    if not out:
        raise ValueError("no unit ids given")
    return sorted(set(out))


@config_app.command("schema")
def config_schema_cmd() -> None:
    """Print the JSON Schema of the config file (for editors)."""
    typer.echo(json.dumps(config_schema(), indent=2))


@config_app.command("validate")
def config_validate(config: ConfigOpt) -> None:
    """Validate a config file; exit 2 with every problem named if it is invalid."""
    cfg = load_or_exit(config)
    n_points = sum(len(d.points) for d in cfg.devices)
    typer.echo(f"{config}: valid ({len(cfg.buses)} buses, {len(cfg.devices)} devices, "
               f"{n_points} points)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
