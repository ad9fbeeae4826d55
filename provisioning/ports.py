"""Serial ports on this machine, the stable names that point at them, and who holds them open.

A technician wires an RS-485 adapter and needs its path: ``/dev/serial/by-id/...`` is the name
to put in the config (it survives re-plugging into another USB socket, ``/dev/ttyUSB0`` does
not). ``port_holders`` answers "busy by whom" when a port cannot be opened: usually the running
agent, which locks its ports exclusively (Linux ``/proc``; empty elsewhere or without the
right to look).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BY_ID_DIR = Path("/dev/serial/by-id")
PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPortInfo:
    device: str                       # the real device node, e.g. /dev/ttyUSB0
    by_id: tuple[str, ...]            # stable symlinks to it under /dev/serial/by-id
    description: str | None
    hwid: str | None                  # USB VID:PID and serial number, when known
    used_by: tuple[str, ...]          # names of config buses on this port
    holders: tuple[Holder, ...]       # other processes that have it open

    def to_json(self) -> dict[str, object]:
        return {"device": self.device, "by_id": list(self.by_id),
                "description": self.description, "hwid": self.hwid,
                "used_by": list(self.used_by),
                "holders": [{"pid": h.pid, "command": h.command} for h in self.holders]}


def _real(path: str | Path) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return str(path)


def _by_id_links(by_id_dir: Path) -> dict[str, list[str]]:
    links: dict[str, list[str]] = {}
    try:
        entries = sorted(by_id_dir.iterdir())
    except OSError:
        return links
    for link in entries:
        links.setdefault(_real(link), []).append(str(link))
    return links


def _command(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)[:120]


def port_holders(path: str | Path) -> tuple[Holder, ...]:
    """Other processes with `path` (or what it links to) open, found through /proc."""
    target = _real(path)
    me = os.getpid()
    out = []
    try:
        pids = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return ()
    for pid in pids:
        if pid == me:
            continue
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue            # gone, or not ours to look at
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    out.append(Holder(pid, _command(pid)))
                    break
            except OSError:
                continue
    return tuple(out)


def running_agents() -> tuple[Holder, ...]:
    """Processes that look like a running agent (`edgegw run` or `python -m gateway.cli run`)."""
    me = os.getpid()
    out = []
    try:
        pids = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return ()
    for pid in pids:
        if pid == me:
            continue
        try:
            argv = [a.decode(errors="replace")
                    for a in (PROC / str(pid) / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if "run" not in argv:
            continue
        if any(Path(a).name == "edgegw" or a == "gateway.cli" for a in argv[:3]):
            out.append(Holder(pid, " ".join(argv)[:120]))
    return tuple(out)


def agents_of(config: Path, control_socket: str | Path) -> tuple[Holder, ...]:
    """The agent of *this* config, not any `edgegw run` on the machine: the one answering on
    the config's control socket, or else a process running `run` with this config file."""
    from gateway.control import ControlError, request

    try:
        snap = request(control_socket, "status", timeout=1.0).get("result") or {}
    except ControlError:
        snap = None
    if snap is not None:
        pid = snap.get("pid")
        return (Holder(int(pid) if isinstance(pid, int) else 0,
                       f"edgegw run (answers on {control_socket})"),)
    target = config.resolve()
    out = []
    for holder in running_agents():
        try:
            argv = [a.decode(errors="replace") for a in
                    (PROC / str(holder.pid) / "cmdline").read_bytes().split(b"\0") if a]
            cwd = (PROC / str(holder.pid) / "cwd").resolve()
        except OSError:
            continue
        for flag, value in itertools.pairwise(argv):
            if flag in ("--config", "-c") and (cwd / value).resolve() == target:
                out.append(holder)
                break
    return tuple(out)


def list_serial_ports(
    *,
    config_ports: Iterable[tuple[str, str]] = (),
    by_id_dir: Path = BY_ID_DIR,
) -> list[SerialPortInfo]:
    """The serial ports pyserial finds, plus the config's (`(bus name, port)` pairs) that exist.

    Each with its stable by-id names and the config buses that use it.
    """
    from serial.tools import list_ports

    links = _by_id_links(by_id_dir)
    used: dict[str, list[str]] = {}
    for bus, port in config_ports:
        used.setdefault(_real(port), []).append(bus)
    found: dict[str, SerialPortInfo] = {}
    for info in sorted(list_ports.comports(), key=lambda p: p.device):
        real = _real(info.device)
        desc = info.description if info.description and info.description != "n/a" else None
        hwid = info.hwid if info.hwid and info.hwid != "n/a" else None
        found[real] = SerialPortInfo(
            device=info.device, by_id=tuple(links.get(real, ())), description=desc, hwid=hwid,
            used_by=tuple(used.get(real, ())), holders=port_holders(real))
    for real, buses in used.items():
        if real not in found and os.path.exists(real):
            found[real] = SerialPortInfo(
                device=real, by_id=tuple(links.get(real, ())), description="(from the config)",
                hwid=None, used_by=tuple(buses), holders=port_holders(real))
    return list(found.values())
