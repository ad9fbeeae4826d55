"""The `edgegw` command line (DESIGN.md 4.1 is the contract).

Exit codes: 0 success, 2 bad usage or invalid input (with a message naming file, field and
problem), 1 any other failure. Errors become instructions here, once, at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import aiomqtt
import typer

from gateway import __version__
from gateway.agent_main import config_or_none, run_agent
from gateway.agent_main import setup_logging as _setup_logging
from gateway.codec import CommandRequest
from gateway.config import (
    Config,
    config_schema,
)
from gateway.control import DEFAULT_SOCKET
from gateway.errors import ConfigError
from gateway.platform.client import (
    Broker,
    capture_line,
    listen,
    listen_raw,
    new_request_id,
    send,
)
from gateway.platform.decoder import Decoder, format_line
from provisioning.cli import register as register_provisioning

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="edgegw: street-cabinet gateway for smart lighting and sensors.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate configs.")
app.add_typer(config_app, name="config")
platform_app = typer.Typer(no_args_is_help=True,
                           help="The city platform's side: listen, decode, send commands.")
app.add_typer(platform_app, name="platform")
register_provisioning(app)          # provision, scan, check (provisioning/cli.py)

log = logging.getLogger("edgegw")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to the config (YAML).")]


def fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> Config:
    cfg = config_or_none(path)
    if cfg is None:
        raise typer.Exit(2)
    return cfg


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def run(config: ConfigOpt,
        verbose: Annotated[int, typer.Option(
            "--verbose", "-v", count=True,
            help="-v: debug lines of edgegw; -vv: of the libraries too.")] = 0,
        log_samples: Annotated[bool, typer.Option(
            "--log-samples/--no-log-samples",
            help="Log every value read (off by default: on a Pi the journal is on the SD "
                 "card).")] = False) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT."""
    code = run_agent(config, verbose=verbose, log_samples=log_samples)
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    poles: Annotated[int, typer.Option("--poles", help="Poles in the simulated street.")] = 8,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    speed: Annotated[float, typer.Option(
        "--speed", help="Street clock speed (simulated seconds per second).")] = 60.0,
    start: Annotated[str | None, typer.Option(
        "--start", help="Street time to start at, ISO with offset (default: before sunset).")
    ] = None,
    storm: Annotated[float | None, typer.Option(
        "--storm", help="Play a storm (flooding, darkness) after this many seconds.")] = None,
    pollution: Annotated[float | None, typer.Option(
        "--pollution", help="Play a pollution episode after this many seconds.")] = None,
    web: Annotated[bool, typer.Option(
        "--web/--no-web", help="Serve the technician's page (its address and a one-off "
                               "log-in are printed).")] = True,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the page in the desktop's browser.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """A simulated street: broker, devices, the gateway and a live view of the platform."""
    import datetime as dt

    from rich.console import Console

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    if not 1 <= poles <= 200:
        fail(f"--poles {poles}: expected 1..200", code=2)
    if speed <= 0:
        fail(f"--speed {speed:g}: must be positive", code=2)
    when = None
    if start is not None:
        try:
            when = dt.datetime.fromisoformat(start)
        except ValueError:
            fail(f"--start {start!r}: expected ISO time like 2026-12-24T17:30+07:00", code=2)
        if when.tzinfo is None:
            fail(f"--start {start!r}: give the UTC offset, e.g. +07:00", code=2)
    from gateway.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(poles=poles, duration=duration, speed=speed,
                                          start=when, console=Console(), storm_after=storm,
                                          pollution_after=pollution, web=web,
                                          open_browser=open_browser)))


@app.command()
def status(
    socket: Annotated[Path, typer.Option(
        "--socket", envvar="EDGEGW_CONTROL_SOCKET",
        help="The agent's control socket (service.control_socket).")] = Path(DEFAULT_SOCKET),
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
) -> None:
    """Print the live picture from the running agent: link, backlog, devices, lighting."""
    from gateway.control import ControlError, fetch_status, render_status

    try:
        snap = fetch_status(socket)
    except ControlError as err:
        fail(str(err), hint=err.hint)
    typer.echo(json.dumps(snap, indent=2, default=str) if as_json else render_status(snap))


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
    except OSError as err:
        fail(f"cannot start the simulators: {err}",
             hint="a TCP port or link path of the spec may be in use by another simulator")


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


UrlOpt = Annotated[str, typer.Option("--url", help="mqtt://host:port or mqtts://host:port")]
PrefixOpt = Annotated[str, typer.Option("--prefix", help="Topic prefix.")]
CaOpt = Annotated[str | None, typer.Option("--ca", help="CA bundle (PEM) for mqtts.")]
CertOpt = Annotated[str | None, typer.Option("--cert", help="Client certificate (PEM).")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Client key (PEM).")]


def _broker(url: str, ca: str | None, cert: str | None, key: str | None) -> Broker:
    if not url.startswith(("mqtt://", "mqtts://")):
        fail(f"--url {url!r}: expected mqtt://host:port or mqtts://host:port", code=2)
    return Broker(url, ca=ca, cert=cert, key=key)


def _human(msg: dict[str, Any]) -> str:
    kind, gw = msg.get("kind"), msg.get("gateway")
    if kind == "telemetry":
        pts = msg.get("points", [])
        head = ", ".join(f"{p['device']}.{p['point']}={p.get('value')}" for p in pts[:6])
        more = f" (+{len(pts) - 6} more)" if len(pts) > 6 else ""
        return f"{gw} telemetry seq {msg.get('seq')}: {len(pts)} points: {head}{more}"
    if kind == "event":
        return (f"{gw} event {msg.get('type')} {msg.get('device') or ''} "
                f"{json.dumps(msg.get('detail', {}))}")
    if kind == "state":
        return f"{gw} {'online' if msg.get('online') else 'OFFLINE'}"
    return format_line(msg)


@platform_app.command("listen")
def platform_listen(
    url: UrlOpt,
    prefix: PrefixOpt = "city/v1",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Print each message undecoded, as `platform decode` reads it: "
                      '{"topic": ..., "payload_b64": ...} a line.')] = False,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="Keep a persistent QoS 1 session under this id.")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many seconds.")] = None,
    share: Annotated[str | None, typer.Option(
        "--share", help="Join a shared subscription group ($share/GROUP/...).")] = None,
    ca: CaOpt = None, cert: CertOpt = None, key: KeyOpt = None,
) -> None:
    """Subscribe like the city platform and print every message decoded (or, with --raw, a
    capture for `edgegw platform decode`)."""
    broker = _broker(url, ca, cert, key)

    async def main() -> None:
        async def consume() -> None:
            if raw:
                async for topic, payload in listen_raw(broker, prefix=prefix,
                                                       client_id=client_id, share=share):
                    typer.echo(capture_line(topic, payload))
                    sys.stdout.flush()
                return
            async for msg in listen(broker, prefix=prefix, client_id=client_id, share=share):
                typer.echo(format_line(msg) if as_json else _human(msg))
                sys.stdout.flush()

        task = asyncio.create_task(consume())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, timeout=duration,
                           return_when=asyncio.FIRST_COMPLETED)
        for t in (task, waiter):
            t.cancel()
        for t in (task, waiter):
            with contextlib.suppress(asyncio.CancelledError):
                await t

    asyncio.run(main())


@platform_app.command("decode")
def platform_decode(
    input_: Annotated[Path | None, typer.Option(
        "--input", help="JSON lines {topic, payload_b64}; stdin by default.")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Topic prefix.")] = None,
) -> None:
    """Decode captured messages offline: one line out for each line in."""
    decoder = Decoder(prefix=prefix)
    stream = input_.open() if input_ else sys.stdin
    try:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            msg = decoder.decode_capture(line)
            if msg.get("kind") == "error":
                msg["error"] = f"line {n}: {msg['error']}"
            typer.echo(format_line(msg))
    finally:
        if input_:
            stream.close()


@platform_app.command("send")
def platform_send(
    url: UrlOpt,
    command: Annotated[str, typer.Argument(help="Command name, e.g. ping, set_override.")],
    args: Annotated[str | None, typer.Argument(
        help="JSON arguments, or @FILE (JSON or YAML).")] = None,
    gateway: Annotated[str | None, typer.Option("--gateway", help="Gateway id.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Send to a group.")] = None,
    prefix: PrefixOpt = "city/v1",
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for answers.")] = 10.0,
    expect: Annotated[int | None, typer.Option(
        "--expect", help="With --group: stop after this many answers.")] = None,
    request_id: Annotated[str | None, typer.Option("--id", help="Request id.")] = None,
    sign_key: Annotated[Path | None, typer.Option(
        "--sign-key", help="Sign with this key: the platform's Ed25519 private key (PEM) or "
                           "an HMAC secret (hex); the file must be mode 0600.")] = None,
    ca: CaOpt = None, cert: CertOpt = None, key: KeyOpt = None,
) -> None:
    """Send a command to a gateway (or a group) and print the response(s)."""
    from gateway.signing import load_signing_key, sign_request, target_of

    if (gateway is None) == (group is None):
        fail("give --gateway ID or --group NAME (one of them)", code=2)
    try:
        parsed = parse_args_text(args)
    except ValueError as err:
        fail(str(err), code=2)
    if command == "set_rules" and "lighting" not in parsed and "alerts" not in parsed:
        parsed = {"lighting": parsed}      # @rules.yaml holding just the lighting section
    broker = _broker(url, ca, cert, key)
    req = CommandRequest(id=request_id or new_request_id(), cmd=command, args=parsed)
    payload = None
    if sign_key is not None:
        try:
            signing_key = load_signing_key(sign_key)
        except ConfigError as err:
            fail(str(err), code=2)
        payload = sign_request(req, key=signing_key, to=target_of(gateway=gateway, group=group))
    try:
        answers = asyncio.run(send(broker, req, prefix=prefix, gateway=gateway, group=group,
                                   wait=wait, expect=expect, payload=payload))
    except aiomqtt.MqttError as err:
        fail(f"cannot reach the broker at {url}: {err}",
             hint="check the URL, the network, and --ca/--cert/--key for mqtts")
    for a in answers:
        typer.echo(format_line(a))
    if not answers:
        fail(f"no response within {wait:g} s",
             hint="is the gateway online? `edgegw platform listen` shows its state")
    if any(not a.get("ok") for a in answers):
        raise typer.Exit(1)


@platform_app.command("keygen")
def platform_keygen(
    private: Annotated[Path | None, typer.Option(
        "--private", help="Write an Ed25519 private key here (keep it on the platform).")] = None,
    public: Annotated[Path | None, typer.Option(
        "--public", help="...and its public key here (install it on the gateways).")] = None,
    hmac: Annotated[Path | None, typer.Option(
        "--hmac", help="Instead: write a per-gateway HMAC secret here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")]
    = False,
) -> None:
    """Make command-signing keys (docs/security.md)."""
    from gateway.signing import generate_keypair, generate_secret

    if hmac is not None and (private or public):
        fail("give --private and --public, or --hmac", code=2)
    try:
        if hmac is not None:
            key_id = generate_secret(hmac, overwrite=overwrite)
            typer.echo(f"HMAC secret written to {hmac} (0600), key id {key_id}")
            return
        if private is None or public is None:
            fail("give --private and --public (Ed25519), or --hmac", code=2)
        key_id = generate_keypair(private, public, overwrite=overwrite)
    except FileExistsError as err:
        fail(str(err).split(" (pass")[0], code=2, hint="add --overwrite to replace it")
    typer.echo(f"Ed25519 key pair: private {private} (0600), public {public}, key id {key_id}")


def parse_args_text(text: str | None) -> dict[str, Any]:
    """Command arguments from the command line: JSON text or @FILE (JSON or YAML)."""
    if not text:
        return {}
    source = "arguments"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as err:
            raise ValueError(f"{path}: cannot read: {err.strerror}") from None
        source = str(path)
    import yaml

    from gateway.config import load_yaml

    try:
        value = load_yaml(text)        # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid JSON or YAML: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f'{source}: arguments must be an object, like {{"group": "a"}}')
    plain: dict[str, Any] = _plain_yaml(value)
    return plain


def _plain_yaml(value: Any) -> Any:
    """YAML's dates and times (``2026-12-24`` unquoted) as the ISO text the gateway reads: a
    command travels as JSON."""
    import datetime as dt

    if isinstance(value, dict):
        return {k: _plain_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_yaml(v) for v in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return value


rules_app = typer.Typer(no_args_is_help=True, help="Lighting rules: preview a night.")
app.add_typer(rules_app, name="rules")


@rules_app.command("preview")
def rules_preview(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="A gateway config: its lighting section and location.")] = None,
    rules: Annotated[Path | None, typer.Option(
        "--rules", help="A lighting rules file on its own (`lighting:` inside or at the top); "
                        "the location from --lat/--lon/--tz or --config.")] = None,
    date: Annotated[list[str] | None, typer.Option(
        "--date", help="A night that begins on YYYY-MM-DD (repeatable).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First night, YYYY-MM-DD.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last night, YYYY-MM-DD.")] = None,
    days: Annotated[int | None, typer.Option(
        "--days", help="This many nights from the first one.")] = None,
    lat: Annotated[float | None, typer.Option("--lat", help="Latitude, degrees.")] = None,
    lon: Annotated[float | None, typer.Option("--lon", help="Longitude, degrees.")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="Time zone, e.g. Asia/Ho_Chi_Minh.")
                  ] = None,
    step: Annotated[float, typer.Option("--step", help="Resolution in minutes.")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="table, json or svg.")] = "table",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where --format svg writes (default lighting-preview.svg).")
    ] = None,
) -> None:
    """Every lighting group's level through the nights, why it changes, the energy and the
    saving; as a table, JSON, or an SVG chart (a range of more than a week: by month)."""

    from policies.lighting import (
        LightingConfigError,
        Location,
        parse_lighting,
        preview,
        preview_to_json,
        validate,
    )
    from policies.lighting.chart import NIGHTS_DRAWN, by_month, preview_svg

    if fmt not in ("table", "json", "svg"):
        fail(f"--format {fmt!r}: expected table, json or svg", code=2)
    if not 0 < step <= 60:
        fail(f"--step {step:g}: expected 0 < MINUTES <= 60", code=2)
    nights = _nights(date, from_, to, days)
    raw, location, source = _preview_rules(config, rules, lat, lon, tz)
    try:
        loc = location or (Location(lat=lat, lon=lon, timezone=tz)
                           if lat is not None and lon is not None and tz else None)
    except ValueError as err:
        fail(f"--lat/--lon/--tz: {err}", code=2)
    if loc is None:
        fail("the preview needs a location: give --lat, --lon and --tz, or --config with "
             "gateway.location", code=2)
    try:
        parsed = parse_lighting(raw, location=loc)
    except LightingConfigError as err:
        for where, msg in err.problems:
            typer.echo(f"{source}: lighting.{where}: {msg}" if where
                       else f"{source}: lighting: {msg}", err=True)
        raise typer.Exit(2) from None
    previews = [preview(parsed, None, day, step_minutes=step) for day in nights]
    warnings = [str(w) for w in validate(parsed, None, year=nights[0].year)]
    notes = _sensor_notes(parsed)
    if fmt == "json":
        doc: dict[str, Any] = (preview_to_json(previews[0]) if len(previews) == 1 else
                               {"nights": [preview_to_json(p) for p in previews]})
        doc["months"] = [{"month": m.month, "nights": m.nights, "energy_kwh": m.energy_kwh,
                          "full_on_kwh": m.full_on_kwh, "burning_hours": m.burning_hours}
                         for m in by_month(previews)]
        doc["warnings"], doc["not_simulated"] = warnings, notes
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    if fmt == "svg":
        path = output or Path("lighting-preview.svg")
        try:
            path.write_text(preview_svg(previews, title=f"lighting: {Path(source).name}",
                                        notes=[*(f"warning: {w}" for w in warnings), *notes]))
        except OSError as err:
            fail(f"{path}: cannot write: {err.strerror}", code=1)
        typer.echo(f"wrote {path} ({len(previews)} night(s)"
                   + (", by month" if len(previews) > NIGHTS_DRAWN else "") + ")")
        return
    _print_previews(previews, warnings, notes, by_month(previews)
                    if len(previews) > NIGHTS_DRAWN else None)


def _nights(dates: list[str] | None, from_: str | None, to: str | None,
            days: int | None) -> list[Any]:
    """The nights asked for, in order (default: tonight)."""
    import datetime as dt

    def day(text: str, opt: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            fail(f"{opt} {text!r}: expected YYYY-MM-DD", code=2)

    if days is not None and not 1 <= days <= 400:
        fail(f"--days {days}: expected 1..400", code=2)
    if from_ is not None:
        first = day(from_, "--from")
        last = day(to, "--to") if to is not None else first + dt.timedelta(
            days=(days or 1) - 1)
        if last < first:
            fail(f"--to {last} is before --from {first}", code=2)
        n = (last - first).days + 1
        if n > 400:
            fail(f"{n} nights: preview at most 400 at a time", code=2)
        return [first + dt.timedelta(days=i) for i in range(n)]
    if to is not None:
        fail("--to needs --from", code=2)
    picked = sorted({day(d, "--date") for d in dates or []}) or [dt.date.today()]
    if days is not None:
        picked = [picked[0] + dt.timedelta(days=i) for i in range(days)]
    return picked


def _preview_rules(config: Path | None, rules: Path | None, lat: float | None,
                   lon: float | None, tz: str | None) -> tuple[Any, Any, str]:
    """(the raw lighting rules, the location if the config gives one, where they came from)."""
    if config is None and rules is None:
        fail("give --config PATH, or --rules FILE with --lat, --lon and --tz", code=2)
    location = None
    raw: Any = None
    source = str(rules or config)
    if config is not None:
        cfg = load_or_exit(config)
        location = cfg.gateway.location
        raw = cfg.lighting
        if rules is None and not raw:
            fail(f"{config}: no lighting section to preview", code=2,
                 hint="see docs/lighting-rules.md for the `lighting:` section, or give --rules")
    if rules is not None:
        import yaml

        from gateway.config import load_yaml

        try:
            doc = load_yaml(rules.read_text())
        except OSError as err:
            fail(f"{rules}: cannot read: {err.strerror}", code=2)
        except yaml.YAMLError as err:
            fail(f"{rules}: not valid YAML: {err}", code=2)
        raw = doc.get("lighting", doc) if isinstance(doc, dict) else doc
        if not isinstance(raw, dict):
            fail(f"{rules}: expected the lighting rules (a mapping, `lighting:` inside or at "
                 "the top)", code=2)
    if lat is not None or lon is not None or tz is not None:
        if lat is None or lon is None or not tz:
            fail("give all three of --lat, --lon and --tz", code=2)
        location = None                      # the options win over the config's
    return raw, location, source


def _sensor_notes(rules: Any) -> list[str]:
    """What the preview cannot know: sensors decide these (it assumes no motion, no switch, and
    daylight as the sun gives it)."""
    out = []
    for g in rules.groups:
        parts = [name for name, on in (("light sensor (illuminance)", g.illuminance),
                                       ("motion boost", g.motion),
                                       ("sensor thresholds", g.thresholds),
                                       ("cabinet switches", g.switches)) if on]
        if parts:
            out.append(f"group {g.name}: {', '.join(parts)} not simulated (they act on "
                       "readings the preview does not have)")
    return out


def _print_previews(previews: list[Any], warnings: list[str], notes: list[str],
                    months: list[Any] | None) -> None:
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    console = Console()
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape_markup(w)}")
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {escape_markup(n)}")
    if months is not None:
        table = Table(title=f"{previews[0].night} to {previews[-1].night}, by month",
                      title_justify="left")
        for col in ("month", "nights", "energy kWh", "always 100 % kWh", "saved",
                    "burning h"):
            table.add_column(col, justify="left" if col == "month" else "right")
        for m in months:
            saving = "-" if m.saving_pct is None else f"{m.saving_pct:.1f} %"
            table.add_row(m.month, str(m.nights), f"{m.energy_kwh:.2f}",
                          f"{m.full_on_kwh:.2f}", saving, f"{m.burning_hours:.1f}")
        console.print(table)
        return
    for p in previews:
        tz = p.start.tzinfo

        def hm(t: dt.datetime | None, tz: Any = tz) -> str:
            return "-" if t is None else t.astimezone(tz).strftime("%H:%M")

        polar = "" if p.polar.value == "normal" else f" [{p.polar.value}]"
        console.print(f"[bold]Night of {p.night}[/bold] ({p.timezone}): sunset "
                      f"{hm(p.sunset)}, civil dusk {hm(p.civil_dusk)}, civil dawn "
                      f"{hm(p.civil_dawn)}, sunrise {hm(p.sunrise)}{polar}")
        for g in p.groups:
            table = Table(title=f"group {g.name} ({g.rated_w:g} W at 100 %)",
                          title_justify="left")
            table.add_column("time")
            table.add_column("level", justify="right")
            table.add_column("reason")
            for c in g.changes:
                table.add_row(c.at.astimezone(tz).strftime("%a %H:%M"), f"{c.level:g} %",
                              escape_markup(c.reason))
            console.print(table)
            saving = "-" if g.saving_pct is None else f"{g.saving_pct:.1f} %"
            console.print(f"  burning {g.burning_hours:.2f} h · {g.energy_kwh:.3f} kWh · "
                          f"always 100 %: {g.full_on_kwh:.3f} kWh · saved {saving}")


def escape_markup(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
