"""The checks that differ inside the running agent (the technician's page): the config in
force, the agent's own buses and serial readers, its clock; and the page's certificate line,
which both runs have."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.errors import BusError, DeviceError, DeviceTimeout
from drivers.modbus.bus import BusEvent
from drivers.sample import Sample
from drivers.serial.reader import LinkState
from gateway.config import Config, ModbusRtuBus, ModbusTcpBus, SerialBus
from gateway.errors import ConfigError
from provisioning.check.model import (
    CheckOptions,
    CheckResult,
    LiveSite,
    Status,
    _fmt_value,
    _Timer,
)
from provisioning.check.site import _check_clock, _device_result, _serial_failure


def _check_live_config(path: Path, cfg: Config) -> CheckResult:
    """The config the agent runs with; a file changed since is worth a restart."""
    t = _Timer()
    n_points = sum(len(d.points) for d in cfg.devices)
    detail = (f"{path}: gateway {cfg.gateway.id}, {len(cfg.buses)} bus(es), {len(cfg.devices)} "
              f"device(s), {n_points} point(s) (the config the agent runs with)")
    data = {"digest": cfg.digest()}
    try:
        from gateway.config import load_config

        on_disk = load_config(path).digest()
    except (ConfigError, OSError) as err:
        return t.result("config", "config valid", Status.WARN,
                        f"{detail}; the file on disk does not load now: "
                        f"{str(err).splitlines()[0]}",
                        hint=f"fix it before the next restart: edgegw config validate "
                             f"--config {path}", data=data)
    if on_disk != data["digest"]:
        return t.result("config", "config valid", Status.WARN,
                        f"{detail}; the file was changed since the agent started",
                        hint="restart the agent to use it: sudo systemctl restart edgegw",
                        data=data)
    return t.result("config", "config valid", Status.PASS, detail, data=data)


async def _check_live_modbus_bus(cfg: Config, bus: ModbusRtuBus | ModbusTcpBus,
                                 live: LiveSite, answer_timeout: float) -> list[CheckResult]:
    """Each device of the bus read in full through the agent's own bus, one after another
    (a silent device costs one timeout)."""
    t = _Timer()
    devices = [d for d in cfg.devices if d.bus == bus.name and d.enabled]
    mb = live.modbus_bus(bus.name)
    if not devices or mb is None:
        return [t.result(f"bus:{bus.name}", f"bus {bus.name}", Status.SKIP,
                         "no devices configured",
                         hint=f"find them: edgegw scan --config {cfg.source} --bus {bus.name} "
                              "(with the agent stopped)")]
    out = []
    deadline = answer_timeout * 4 + 5.0
    for d in devices:
        td = _Timer()
        latest: dict[tuple[str, str], Sample] = {}
        events: list[BusEvent] = []
        bus_down: BusEvent | None = None
        try:
            async with asyncio.timeout(deadline):
                for s in await mb.read_device(d.name):
                    latest[(s.device, s.point)] = s
        except TimeoutError:
            events.append(BusEvent("device_offline", d.name,
                                   {"reason": f"no answer within {deadline:g} s"}))
        except DeviceTimeout as err:
            events.append(BusEvent("device_offline", d.name, {"reason": str(err)}))
        except BusError as err:
            bus_down = BusEvent("bus_down", None, {"reason": str(err)})
            events.append(BusEvent("device_offline", d.name,
                                   {"reason": f"cannot connect: {err}"}))
        except DeviceError as err:
            events.append(BusEvent("device_offline", d.name, {"reason": str(err)}))
        out.append(_device_result(cfg, bus, d, latest, events, bus_down, td, deadline))
    return out


def _check_live_serial(bus: SerialBus, live: LiveSite) -> CheckResult:
    """A serial sensor as the agent's reader sees it (the agent holds the port)."""
    t = _Timer()
    key, title = f"serial:{bus.name}", f"serial {bus.name}"
    got = live.serial_status(bus.name)
    if got is None:
        return t.result(key, title, Status.SKIP, "not read by this agent")
    stats, values = got
    where = f"{bus.port} ({bus.protocol}, {bus.baudrate} baud)"
    data = {"frames": stats.frames, "framing_errors": stats.error_count,
            "dropped_bytes": stats.dropped_bytes}
    if stats.state is LinkState.ONLINE:
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in list(values.items())[:4])
        status = Status.WARN if stats.error_count > stats.frames else Status.PASS
        return t.result(key, title, status,
                        f"{where}: {stats.frames} frame(s) since start: "
                        f"{shown or 'no values yet'}"
                        + (f"; {stats.error_count} framing error(s)" if stats.error_count
                           else ""),
                        hint="more errors than frames: check the cable and its shielding"
                        if status is Status.WARN else None, data={**data, "values": values})
    detail, hint = _serial_failure(bus, stats.state, "", stats.error_count,
                                   stats.dropped_bytes)
    return t.result(key, title, Status.FAIL, f"{detail} (state {stats.state.value})",
                    hint=hint, data=data)


def _check_live_clock(cfg: Config, options: CheckOptions, live: LiveSite) -> CheckResult:
    trusted, how = live.clock()
    if trusted:
        t = _Timer()
        return t.result("clock", "clock trusted", Status.PASS,
                        f"the agent's clock is trusted ({how or 'source unknown'})",
                        data={"sources": [how]})
    return _check_clock(cfg, options, [])


def _check_web(cfg: Config) -> CheckResult:
    """The technician's page: where it listens and its certificate's fingerprint (compare it
    with what the browser shows before typing a password)."""
    t = _Timer()
    title = "web page"
    if cfg.web is None:
        return t.result("web", title, Status.SKIP, "off (no web section in the config)")
    from gateway.web.tls import fingerprint, tls_files, urls

    cert, _key, self_signed = tls_files(cfg)
    where = ", ".join(urls(cfg.web))
    try:
        pem = cert.read_bytes()
    except FileNotFoundError:
        if self_signed:
            return t.result("web", title, Status.WARN,
                            f"{where}: the self-signed certificate is made at the agent's "
                            f"first start ({cert})",
                            hint="start the agent, then check again to record the "
                                 "fingerprint")
        return t.result("web", title, Status.FAIL, f"{cert}: no such file",
                        hint="fix web.tls.cert, or remove web.tls for a self-signed one")
    except OSError as err:
        return t.result("web", title, Status.FAIL, f"{cert}: cannot read: {err.strerror}",
                        hint="run the check as root or the service user")
    try:
        fp = fingerprint(pem)
    except ValueError as err:
        return t.result("web", title, Status.FAIL, f"{cert}: not a PEM certificate: {err}",
                        hint="fix web.tls.cert")
    kind = "self-signed" if self_signed else "configured"
    return t.result("web", title, Status.PASS,
                    f"{where}; {kind} certificate, SHA-256 fingerprint {fp}",
                    data={"urls": urls(cfg.web), "fingerprint": fp, "certificate": str(cert),
                          "self_signed": self_signed})
