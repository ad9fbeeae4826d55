"""The technician's commands: `edgegw provision`, `edgegw scan`, `edgegw check`.

Errors become instructions here, once: what failed, what to do, and the exit code (0 success,
2 bad usage or invalid input, 1 any other failure; DESIGN 4.1).

`app` is a Typer of its own (tests drive it with CliRunner); :func:`register` puts the same
commands on the main `edgegw` app::

    from provisioning.cli import register as register_provisioning
    register_provisioning(app)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from drivers.errors import BusError
from gateway.config import Config, ModbusRtuBus, ModbusTcpBus, SerialBus, load_config
from gateway.errors import ConfigError

# The commands import their machinery when they run: `edgegw version` must not pay for
# cryptography, pymodbus and aiomqtt, nor `edgegw run` (this module is imported by gateway.cli)
# for rich (~3 MB of RSS).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from provisioning.check import CheckReport
    from provisioning.ports import SerialPortInfo
    from provisioning.provision import ProvisionResult
    from provisioning.scan import BusScan, ScanProgress

DEFAULT_OUT_DIR = Path("/etc/edgegw")      # = provisioning.provision.DEFAULT_OUT_DIR

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Provisioning and on-site checks for an edgegw gateway.")

T = TypeVar("T")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to the config (YAML).")]


def _fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        _fail(f"{path}: invalid config ({len(err.problems)} problem(s))", code=2,
              hint=f"fix the lines named above (docs/configuration.md); then run "
                   f"edgegw check --config {path}")


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Drivers log every offline device and timeout: the checklist already says it. Levels and
    handlers are put back afterwards (the commands also run in-process, in tests)."""
    names = ("pymodbus", "drivers", "edgegw", "gateway")
    saved = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger()
    root_level = root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.ERROR)
    if not verbose:
        for n in names:
            logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def system_timezone(etc: Path = Path("/etc")) -> str | None:
    """The machine's IANA zone (what `timedatectl` shows): the interactive default, as a
    technician on site has usually set the gateway's clock to the city's zone."""
    import zoneinfo

    candidates: list[str] = []
    try:
        target = os.readlink(etc / "localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        candidates.append((etc / "timezone").read_text().strip())
    for name in candidates:
        if name and name not in ("UTC", "Etc/UTC"):
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
            return name
    return None


def _console() -> Console:
    # made per command: CliRunner (and a redirected stdout) swap sys.stdout before it runs
    from rich.console import Console
    return Console(highlight=False, soft_wrap=False)


def escape(text: str) -> str:
    """rich's markup escape, imported when first needed."""
    from rich.markup import escape as rich_escape
    return rich_escape(text)


# ------------------------------------------------------------------------------ provision
def _ask(text: str, check: Callable[[str], T], *, default: str | None = None) -> T:
    while True:
        raw = (typer.prompt(text, default=default, show_default=bool(default))
               if default is not None else typer.prompt(text))
        try:
            return check(str(raw))
        except ValueError as err:
            typer.echo(f"  {err}", err=True)


def _optional_float(check: Callable[[float], float]) -> Callable[[str], float | None]:
    def parse(raw: str) -> float | None:
        if not raw.strip():
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number (or leave it empty)") from None
        return check(value)
    return parse


def provision_cmd(
    gateway_id: Annotated[str | None, typer.Option(
        "--id", help="Gateway id, e.g. gw-d1-0042 (the certificate's CN).")] = None,
    site: Annotated[str | None, typer.Option(
        "--site", help="Site or district, e.g. district-1 (the certificate's O).")] = None,
    groups: Annotated[str | None, typer.Option(
        "--groups", help="Command groups, comma-separated (default: the site).")] = None,
    lat: Annotated[float | None, typer.Option("--lat", help="Latitude, degrees.")] = None,
    lon: Annotated[float | None, typer.Option("--lon", help="Longitude, degrees.")] = None,
    timezone: Annotated[str | None, typer.Option(
        "--timezone", help="IANA time zone, e.g. Asia/Ho_Chi_Minh.")] = None,
    broker: Annotated[str | None, typer.Option(
        "--broker", help="Broker URL: mqtts://HOST:8883 (or mqtt://HOST:1883).")] = None,
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", help="Where config.yaml and the identity go.")] = DEFAULT_OUT_DIR,
    store_path: Annotated[str | None, typer.Option(
        "--store-path", help="The telemetry store (default /var/lib/edgegw/store.db).")] = None,
    topic_prefix: Annotated[str | None, typer.Option(
        "--topic-prefix", help="MQTT topic prefix (default city/v1).")] = None,
    cert: Annotated[Path | None, typer.Option(
        "--cert", help="Install this certificate (PEM) issued for the gateway's CSR.")] = None,
    ca: Annotated[Path | None, typer.Option(
        "--ca", help="Install this CA certificate (PEM) for the broker's TLS.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace another gateway's identity (old files kept aside).")] = False,
    no_input: Annotated[bool, typer.Option(
        "--no-input", help="Never prompt, even on a terminal.")] = False,
    web_user: Annotated[str | None, typer.Option(
        "--web-user", help="Add (or change) an account of the technician's page, and switch "
                           "the page on; the password is asked twice.")] = None,
    web_role: Annotated[str, typer.Option(
        "--web-role", help="technician (may set overrides, run the lamp test) or viewer.")
    ] = "technician",
    web_password_file: Annotated[Path | None, typer.Option(
        "--web-password-file", help="Read the web user's password from this file's first "
                                    "line instead of asking (for scripts).")] = None,
    web_listen: Annotated[str | None, typer.Option(
        "--web-listen", help="Where the page listens, HOST:PORT (default 0.0.0.0:8443).")
    ] = None,
) -> None:
    """Write a gateway's config and identity (key pair, CSR; certificate and CA when given)."""
    from provisioning.provision import (
        IdentityConflict,
        ProvisionError,
        ProvisionRequest,
        check_broker_url,
        check_gateway_id,
        check_lat,
        check_lon,
        check_site,
        check_timezone,
        inspect_existing,
        parse_groups,
        provision,
    )

    existing = inspect_existing(out_dir)
    new_gateway = existing.config is None
    if sys.stdin.isatty() and not no_input:
        if gateway_id is None and existing.config_id is None:
            gateway_id = _ask("Gateway id (e.g. gw-d1-0042)", check_gateway_id)
        if site is None and not existing.value("gateway", "site"):
            site = _ask("Site / district", check_site)
        if groups is None and new_gateway:
            groups = ",".join(_ask("Groups, comma-separated", parse_groups, default=site or ""))
        if lat is None and lon is None and new_gateway:
            lat = _ask("Latitude (empty: none)", _optional_float(check_lat), default="")
            if lat is not None:
                lon = _ask("Longitude", _optional_float(check_lon))
                if timezone is None:
                    timezone = _ask("Time zone", check_timezone,
                                    default=system_timezone() or "UTC")
        if broker is None and existing.value("mqtt", "url") is None:
            broker = _ask("Broker URL", check_broker_url, default="mqtts://")
    web_password = None
    if web_user is not None:
        if web_password_file is not None:
            try:
                web_password = web_password_file.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as err:
                _fail(f"--web-password-file {web_password_file}: cannot read a password "
                      f"({getattr(err, 'strerror', None) or 'empty file'})", code=2)
        elif sys.stdin.isatty() and not no_input:
            web_password = typer.prompt(f"Password for web user {web_user} (10 characters "
                                        "or more)", hide_input=True, confirmation_prompt=True)
        else:
            _fail("--web-user needs a password: run on a terminal to be asked, or give "
                  "--web-password-file FILE", code=2)
    try:
        req = ProvisionRequest(
            out_dir=out_dir, gateway_id=gateway_id, site=site,
            groups=parse_groups(groups) if groups is not None else None, lat=lat, lon=lon,
            timezone=timezone, broker=broker, topic_prefix=topic_prefix, store_path=store_path,
            cert=cert, ca=ca, force=force, web_user=web_user, web_role=web_role,
            web_password=web_password, web_listen=web_listen)
    except ValueError as err:
        _fail(str(err), code=2)
    try:
        result = provision(req)
    except IdentityConflict as err:
        _fail(str(err), code=1, hint=err.hint)
    except ProvisionError as err:
        _fail(str(err), code=2 if isinstance(err, ValueError) else 1, hint=err.hint)
    print_provision_result(result, echo=typer.echo)


def print_provision_result(result: ProvisionResult, *, echo: Callable[[str], Any]) -> None:
    """What was written, and what the technician does next."""
    from provisioning.provision import Action

    p = result.paths
    echo(f"Gateway {result.gateway_id} (site {result.site}) provisioned in {p.out_dir}:")
    for c in result.changes:
        mode = f"{c.mode:o}" if c.mode is not None else "   "
        echo(f"  {c.action.value:<12} {mode}  {c.path}  ({c.what})")
    if result.kept_sections:
        echo(f"Kept from the previous config: {', '.join(result.kept_sections)}")
    for note in result.notes:
        echo(f"note: {note}")
    if result.cert is not None:
        echo(f"Certificate: CN={result.cert.subject_cn}, issued by {result.cert.issuer}, valid "
             f"until {result.cert.not_after:%Y-%m-%d}")
    steps = []
    if result.needs_certificate:
        steps.append(f"Send the CSR to the city PKI: {p.csr}\n"
                     f"     (CN={result.gateway_id}, O={result.site}; `cat {p.csr}` shows it)")
        steps.append("Install the certificate and CA the PKI sends back:\n"
                     f"     edgegw provision --out-dir {p.out_dir} --cert gateway.crt "
                     "--ca ca.crt")
    elif result.tls and not result.has_ca:
        steps.append("Install the city CA (it signs the broker's certificate):\n"
                     f"     edgegw provision --out-dir {p.out_dir} --ca ca.crt")
    if "buses" not in result.kept_sections and "devices" not in result.kept_sections:
        steps.append(f"Add the buses to {p.config} (docs/field-guide.md; `edgegw scan "
                     "--list-ports` shows the serial ports), then find the devices:\n"
                     f"     edgegw scan --config {p.config} --bus NAME")
    if os.geteuid() == 0 and Path("/opt/edgegw/current/deploy/install.sh").exists():
        steps.append("Give the identity to the service user (the agent runs as edgegw):\n"
                     "     sudo /opt/edgegw/current/deploy/install.sh --fix-permissions")
    steps.append("Check the site and write the commissioning report:\n"
                 f"     edgegw check --config {p.config} --lamp-test "
                 f"--report commissioning-{result.gateway_id}.json")
    echo("Next steps:")
    for i, step in enumerate(steps, 1):
        echo(f"  {i}. {step}")
    if all(c.action is Action.KEPT for c in result.changes):
        echo("(nothing changed: the directory already held this provisioning)")


# ----------------------------------------------------------------------------------- scan
class _Bars:
    """One rich progress bar per phase of a scan."""

    def __init__(self, progress: Progress, bus: str) -> None:
        self.progress = progress
        self.bus = bus
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, p: ScanProgress) -> None:
        task = self.tasks.get(p.phase)
        if task is None:
            task = self.progress.add_task(f"{self.bus}: {p.phase}", total=p.total)
            self.tasks[p.phase] = task
        self.progress.update(task, completed=p.done, total=p.total)


def scan_cmd(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Path to the config (YAML).")] = None,
    bus: Annotated[list[str] | None, typer.Option(
        "--bus", help="Bus to scan (repeatable; default: every Modbus bus).")] = None,
    units: Annotated[str, typer.Option(help="Unit ids to try, e.g. 1-32,100.")] = "1-247",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each unit.")] = 0.3,
    auto_baud: Annotated[bool, typer.Option(
        "--auto-baud", help="RTU: try 9600/19200/38400/4800/115200 baud x N/E/O parity.")
    ] = False,
    profiles: Annotated[bool, typer.Option(
        "--profiles/--no-profiles", help="Match each unit against the builtin profiles.")
    ] = True,
    list_ports: Annotated[bool, typer.Option(
        "--list-ports", help="List the serial ports and their stable names (scans too "
                             "only with --bus).")] = False,
    poll: Annotated[float, typer.Option(help="`poll:` of the proposed device entries, s.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    write: Annotated[bool, typer.Option(
        "--write", help="Add the proposed devices to the config file itself (its comments "
                        "kept; checked before it is replaced, the old one kept as .bak).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Find the Modbus unit ids that answer on a bus, and what each one looks like."""
    with _quiet_logs(verbose):
        _scan(config=config, bus=bus, units=units, timeout=timeout, auto_baud=auto_baud,
              profiles=profiles, list_ports=list_ports, poll=poll, as_json=as_json,
              write=write)


def _scan(*, config: Path | None, bus: list[str] | None, units: str, timeout: float,
          auto_baud: bool, profiles: bool, list_ports: bool, poll: float, as_json: bool,
          write: bool = False) -> None:
    from gateway.wiring import modbus_settings
    from provisioning.ports import list_serial_ports
    from provisioning.scan import (
        known_units,
        parse_units,
        proposed_bus,
        proposed_devices,
        render_yaml,
        scan_bus,
        scan_error_hint,
    )

    if config is None and not list_ports:
        _fail("give --config PATH (with --bus NAME), or --list-ports", code=2)
    if timeout <= 0 or poll <= 0:
        _fail("--timeout and --poll must be positive", code=2)
    try:
        unit_ids = parse_units(units, lo=0)   # 0 (broadcast) never answers; accepted as before
    except ValueError as err:
        _fail(f"--units: {err}", code=2)
    cfg = _load_or_exit(config) if config is not None else None
    console = _console()
    out: dict[str, Any] = {}
    if list_ports:
        ports = list_serial_ports(config_ports=[
            (b.name, b.port) for b in (cfg.buses if cfg else [])
            if isinstance(b, (ModbusRtuBus, SerialBus))])
        out["ports"] = [p.to_json() for p in ports]
        if not as_json:
            _print_ports(console, ports)
        if cfg is None or not bus:
            if as_json:
                typer.echo(json.dumps(out, indent=2))
            return
    assert cfg is not None and config is not None
    targets = _scan_targets(cfg, config, bus)
    if auto_baud and not any(isinstance(b, ModbusRtuBus) for b in targets):
        _fail("--auto-baud tries serial line settings: it applies to modbus-rtu buses", code=2)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    scans: list[BusScan] = []
    for b in targets:
        settings = modbus_settings(b)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                      console=console, transient=True, disable=as_json) as progress:
            try:
                scans.append(asyncio.run(scan_bus(
                    settings, unit_ids, unit_timeout=timeout,
                    auto_baud=auto_baud and isinstance(b, ModbusRtuBus), match=profiles,
                    known=known_units(cfg, b.name), on_progress=_Bars(progress, b.name))))
            except BusError as err:
                _fail(str(err), hint=scan_error_hint(err, settings))
    proposals = proposed_devices(scans, cfg=cfg, poll=poll)
    if as_json:
        out["buses"] = [s.to_json() for s in scans]
        out["proposed_devices"] = proposals
        out["proposed_buses"] = [e for s in scans if (e := proposed_bus(s, cfg)) is not None]
        typer.echo(json.dumps(out, indent=2, default=str))
    else:
        for s in scans:
            _print_scan(console, s, cfg)
        if proposals and not write:
            console.print(f"\nPaste under [bold]devices:[/] in {escape(str(config))}, then "
                          f"run edgegw check --config {escape(str(config))}:")
            # plain text, never wrapped at the terminal's width: it is pasted as it is
            typer.echo(render_yaml("devices", proposals), nl=False)
    if write and proposals:
        _write_proposals(config, proposals, quiet=as_json)
    elif write and not as_json:
        typer.echo("nothing new to add to the config")
    if not any(s.units for s in scans):
        raise typer.Exit(1)


def _write_proposals(config: Path, proposals: list[dict[str, Any]], *, quiet: bool) -> None:
    """Add the proposed devices to the config (comments kept), or beside it when its layout
    does not allow a safe edit. Either way the result is checked first."""
    from gateway.config import parse_config
    from gateway.files import write_atomic
    from provisioning.scan import add_devices_to_config, render_yaml

    text = config.read_text()
    new = add_devices_to_config(text, proposals)
    if new is None:
        fragment = config.with_name(config.stem + ".scan.yaml")
        write_atomic(fragment, render_yaml("devices", proposals).encode(), mode=0o644)
        if not quiet:
            typer.echo(f"{config}: `devices:` is not the file's last section (or is written "
                       f"inline), so it was not edited; the proposal is in {fragment}: move "
                       "its entries under `devices:`, then run edgegw check")
        return
    try:
        parse_config(new, source=str(config), base_dir=config.parent)
    except ConfigError as err:
        _fail(f"the config with the proposed devices would be invalid, nothing written:\n{err}",
              code=1)
    backup = config.with_name(config.name + ".bak")
    write_atomic(backup, text.encode(), mode=config.stat().st_mode & 0o777)
    write_atomic(config, new.encode(), mode=config.stat().st_mode & 0o777)
    if not quiet:
        typer.echo(f"added {len(proposals)} device(s) to {config} (the previous file is "
                   f"{backup}); next: edgegw check --config {config}")


def _scan_targets(cfg: Config, config: Path, names: Sequence[str] | None
                  ) -> list[ModbusRtuBus | ModbusTcpBus]:
    modbus = [b for b in cfg.buses if isinstance(b, (ModbusRtuBus, ModbusTcpBus))]
    if not names:
        if not modbus:
            _fail(f"{config} has no Modbus bus to scan", code=2,
                  hint="add one under `buses:` (docs/field-guide.md shows how)")
        return modbus
    out: list[ModbusRtuBus | ModbusTcpBus] = []
    for name in names:
        try:
            b = cfg.bus(name)
        except KeyError:
            _fail(f"no bus named {name!r} in {config} (buses: "
                  f"{', '.join(x.name for x in cfg.buses) or 'none'})", code=2)
        if not isinstance(b, (ModbusRtuBus, ModbusTcpBus)):
            _fail(f"bus {name} is a {b.type} bus; scan works on Modbus buses", code=2,
                  hint="edgegw check shows whether a serial sensor delivers frames")
        out.append(b)
    return out


def _print_ports(console: Console, ports: Sequence[SerialPortInfo]) -> None:
    if not ports:
        console.print("No serial ports found (is the USB adapter plugged in? `dmesg | tail` "
                      "shows it arriving).")
        return
    from rich.table import Table
    table = Table(title="Serial ports", title_justify="left")
    for col in ("port", "stable name (use this in the config)", "description", "used by"):
        table.add_column(col)
    for p in ports:
        used = ", ".join(p.used_by)
        if p.holders:
            used += (" " if used else "") + "busy: " + ", ".join(
                f"pid {h.pid}" for h in p.holders)
        table.add_row(escape(p.device), escape("\n".join(p.by_id) or "-"),
                      escape(" ".join(x for x in (p.description, p.hwid) if x) or "-"),
                      escape(used or "-"))
    console.print(table)


def _print_scan(console: Console, s: BusScan, cfg: Config) -> None:
    from provisioning.scan import proposed_bus, render_yaml

    line = f", {s.line}" if s.line is not None else ""
    console.print(f"\n[bold]bus {escape(s.bus)}[/] ({s.kind} {escape(s.where)}{line}): "
                  f"{len(s.units)} of {len(s.tried)} unit id(s) answered")
    if s.line_attempts and s.line is None:
        console.print(f"  no unit answered at any of {len(s.line_attempts)} line settings: "
                      "check power, A/B wiring and termination")
        return
    if s.line_differs:
        console.print(f"  the units answered at {s.line}, the config says {s.configured_line}: "
                      "change the bus entry to")
        entry = proposed_bus(s, cfg)
        if entry is not None:
            console.print(escape(render_yaml("buses", [entry])), end="")
    if not s.units:
        return
    from rich.table import Table
    table = Table(show_edge=False, pad_edge=False)
    for col in ("unit", "answer", "in config", "looks like"):
        table.add_column(col)
    for u in s.units:
        best = u.proposal
        if best is not None:
            looks = f"{best.profile} ({best.live}/{best.points} points live)"
            if u.also_fits:
                looks += f"; also fits {', '.join(u.also_fits)}"
        elif u.fits:
            looks = f"no builtin profile fits ({u.fits[0].problem or 'no live values'})"
        else:
            looks = "-"
        configured = u.configured_as or "(not in config)"
        if (u.configured_as and best is not None and u.configured_profile
                and u.configured_profile != best.profile):
            configured += f" [yellow]as {escape(u.configured_profile)}?[/]"
        table.add_row(str(u.unit), escape(u.detail), configured, escape(looks))
    console.print(table)


# ---------------------------------------------------------------------------------- check
_STYLE = {"pass": "[green]PASS[/]", "warn": "[yellow]WARN[/]", "fail": "[bold red]FAIL[/]",
          "skip": "[dim]skip[/]"}      # by provisioning.check.Status value


def print_report(report: CheckReport, console: Console) -> None:
    """The checklist table, what to do about each failure, and the verdict."""
    from provisioning.check import Status

    gw = report.gateway.get("id", "?")
    from rich.table import Table
    table = Table(title=f"edgegw check: gateway {escape(str(gw))}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for i, r in enumerate(report.results, 1):
        table.add_row(str(i), escape(r.title), _STYLE[str(r.status)], escape(r.detail))
    console.print(table)
    todo = [(i, r) for i, r in enumerate(report.results, 1)
            if r.hint and r.status in (Status.FAIL, Status.WARN)]
    if todo:
        console.print("\n[bold]What to do:[/]")
        for i, r in todo:
            mark = _STYLE[str(r.status)]
            console.print(f"  {i}. {mark} {escape(r.title)}: {escape(r.hint or '')}")
    c = report.counts()
    if report.passed:
        console.print(f"\n[bold green]PASS[/]: gateway {escape(str(gw))} is ready "
                      f"({c['pass']} passed, {c['warn']} warning(s), {c['skip']} skipped)")
    else:
        console.print(f"\n[bold red]FAIL[/]: {c['fail']} check(s) failed; fix them and run "
                      "the check again")


def check_cmd(
    config: ConfigOpt,
    lamp_test: Annotated[bool, typer.Option(
        "--lamp-test", help="Cycle each lighting group off, 50 %, 100 % and read the power.")
    ] = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write the commissioning report: FILE (JSON) and FILE.txt.")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the broker, a device's answer, a sensor's frame.")] = 5.0,
    settle: Annotated[float, typer.Option(
        help="Lamp test: seconds a driver gets to reach each level.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Validate the config and test the site; exit 0 only when every check passes."""
    with _quiet_logs(verbose):
        _check(config=config, lamp_test=lamp_test, report=report, timeout=timeout,
               settle=settle, as_json=as_json)


def _check(*, config: Path, lamp_test: bool, report: Path | None, timeout: float,
           settle: float, as_json: bool) -> None:
    from provisioning.check import (
        CheckOptions,
        Status,
        report_json,
        report_paths,
        run_checks,
        write_report,
    )

    if timeout <= 0 or settle < 0:
        _fail("--timeout must be positive and --settle not negative", code=2)
    if report is not None:
        try:
            report_paths(report)
        except ValueError as err:
            _fail(f"--report {err}", code=2)
    options = CheckOptions(timeout=timeout, lamp_test=lamp_test, settle=settle)
    result = asyncio.run(run_checks(config, options))
    if as_json:
        typer.echo(json.dumps(report_json(result), indent=2, default=str))
    else:
        print_report(result, _console())
    if report is not None:
        try:
            json_path, txt_path = write_report(result, report)
        except OSError as err:
            _fail(f"cannot write the report {report}: {err.strerror}",
                  hint="give --report a path in a writable directory (your home, a USB stick)")
        typer.echo(f"Commissioning report: {json_path}, {txt_path} and the printable "
                   f"{json_path.with_suffix('.html')}", err=as_json)
    if result.results and result.results[0].key == "config" and (
            result.results[0].status is Status.FAIL):
        raise typer.Exit(2)
    raise typer.Exit(0 if result.passed else 1)


# ------------------------------------------------------------------------------- wiring
COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("provision", provision_cmd),
    ("scan", scan_cmd),
    ("check", check_cmd),
)


def register(target: typer.Typer) -> None:
    """Add `provision`, `scan` and `check` to another Typer app (the main `edgegw`)."""
    for name, fn in COMMANDS:
        target.command(name)(fn)


register(app)
