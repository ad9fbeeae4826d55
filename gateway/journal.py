"""Log lines to systemd's journal with fields a technician can filter on.

Under systemd the agent's stderr already goes to the journal, each line with its priority
(``<4>`` prefixes, see :class:`JournalFormatter`). When the journal's own socket is there, the
agent sends each record through journald's native protocol instead
(https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram of ``FIELD=value`` lines, so that
besides ``MESSAGE`` and ``PRIORITY`` the journal keeps where the line came from and what it is
about::

    journalctl -u edgegw EDGEGW_DEVICE=lamp-2          # everything about one device
    journalctl -u edgegw EDGEGW_BUS=rs485-1 -p warning # one bus's warnings
    journalctl -u edgegw EDGEGW_COMPONENT=store        # the store's faults and recoveries
    journalctl -u edgegw -o verbose                    # every field of each line

The fields come from a log call's ``extra`` (``device``, ``bus``, ``component``, ``event``), as
:func:`fields` names them. The socket is non-blocking: a journal that does not take a datagram
at once (full, restarting, gone) gets the line on stderr instead, so logging never holds up the
event loop longer than stderr would.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "edgegw"
EXTRA_FIELDS = {"device": "EDGEGW_DEVICE", "bus": "EDGEGW_BUS",
                "component": "EDGEGW_COMPONENT", "event": "EDGEGW_EVENT"}
"""A log call's ``extra`` keys and the journal fields they become."""

PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the named ones round down)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """Each line prefixed with its syslog priority (``<3>``...), for stderr under journald."""

    PRIORITY: ClassVar[dict[int, int]] = PRIORITY

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = priority(record.levelno)
        text = super().format(record)
        # a traceback spans lines: each gets the prefix, or journald files them at info
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def under_journald(environ: dict[str, str] | None = None) -> bool:
    """Whether stderr goes to the journal (systemd sets JOURNAL_STREAM to its device:inode)."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def fields(record: logging.LogRecord, message: str) -> list[tuple[str, str]]:
    """The journal fields of one record."""
    out = [("MESSAGE", message), ("PRIORITY", str(priority(record.levelno))),
           ("SYSLOG_IDENTIFIER", IDENTIFIER), ("LOGGER", record.name),
           ("CODE_FILE", record.pathname), ("CODE_LINE", str(record.lineno)),
           ("CODE_FUNC", record.funcName or "")]
    for attr, name in EXTRA_FIELDS.items():
        value = getattr(record, attr, None)
        if value is not None and value != "":
            out.append((name, str(value)))
    return out


def encode(pairs: Iterable[tuple[str, str]]) -> bytes:
    """journald's native datagram: ``KEY=value\\n``, or for a value with a newline ``KEY\\n``,
    its length as 64-bit little-endian, the bytes, ``\\n``."""
    parts: list[bytes] = []
    for key, value in pairs:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


class JournalHandler(logging.Handler):
    """Sends records to the journal's socket; ``fallback`` (stderr with priorities) takes a
    line the journal does not take at once."""

    def __init__(self, path: Path = JOURNAL_SOCKET, *,
                 fallback: logging.Handler | None = None) -> None:
        super().__init__()
        self.path = path
        self.fallback = fallback
        self.sent = 0
        self.fell_back = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))   # as on stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            datagram = encode(fields(record, message))
        except Exception:                   # a bad format string: logging's own report
            self.handleError(record)
            return
        try:
            self._sock.sendto(datagram, str(self.path))
        except OSError:   # full (EAGAIN), too big (EMSGSIZE), gone (ENOENT, ECONNREFUSED)
            self.fell_back += 1
            if self.fallback is not None:
                self.fallback.handle(record)
            return
        self.sent += 1

    def close(self) -> None:
        self._sock.close()
        super().close()


def available(path: Path = JOURNAL_SOCKET) -> bool:
    """Whether the journal's socket is there (it may still refuse; the handler falls back)."""
    try:
        return path.is_socket()
    except OSError:
        return False
