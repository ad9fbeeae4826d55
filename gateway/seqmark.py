"""The last ``seq`` handed out while the store could not record it, kept in RAM across restarts.

While the store fails (a full or frozen card), batches are numbered and sent from memory; the
store's own counter does not move. An agent that restarts before the store works again (a
crash, a watchdog restart, a remote config applied) would then take its numbering from the
store and give those ``seq`` numbers a second time, and a platform dropping a ``seq`` it has seen
would drop the new batches: a silent loss. So while the store fails, the outbox writes the last
``seq`` it handed out to a small file in the agent's runtime directory (``/run/edgegw``, a RAM
filesystem: writing there never waits on the card), and a starting agent numbers on from it.

Only a RAM filesystem is used: a marker on the failing card itself would put the event loop at
its mercy. A reboot empties it, and with it go the batches held in memory; see
docs/protocol.md, section 9, for what the platform sees then.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

__all__ = ["SeqMark", "ram_filesystem"]

log = logging.getLogger("edgegw.store")

_RAM_TYPES = frozenset({"tmpfs", "ramfs"})


def ram_filesystem(path: Path, mounts: str = "/proc/mounts") -> bool:
    """Whether ``path`` (a directory, existing or not) lies on a RAM filesystem."""
    try:
        table = Path(mounts).read_text()
    except OSError:
        return False
    target = os.path.realpath(path)
    best, best_type = "", ""
    for line in table.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, parts[2]
    return best_type in _RAM_TYPES


class SeqMark:
    """One store's marker file in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, store: Path) -> None:
        digest = hashlib.sha256(str(Path(store).resolve()).encode()).hexdigest()[:16]
        self.path = Path(directory) / f"seq-mark-{digest}"
        self.usable = ram_filesystem(Path(directory))
        self._failed = False

    def read(self) -> int:
        """The last seq marked, or 0."""
        if not self.usable:
            return 0
        try:
            return max(0, int(self.path.read_text().strip() or 0))
        except (OSError, ValueError):
            return 0

    def write(self, seq: int) -> None:
        """Mark ``seq`` as handed out (a write to RAM; never raises)."""
        if not self.usable:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{seq}\n")
            os.replace(tmp, self.path)
        except OSError as err:
            if not self._failed:
                log.warning("cannot keep the last seq in %s: %s (a restart while the store "
                            "fails could number batches again)", self.path, err)
                self._failed = True

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
