"""Files written so that a power cut never leaves half of one behind, and secrets never leak.

Every file goes to a temporary name in the same directory, created with its final mode by
``open(O_CREAT | O_EXCL, mode)`` (so a key is 0600 from its first byte, never readable by others
even for a moment), is fsynced, renamed over the target, and the directory is fsynced so the
rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: str | Path, data: bytes, *, mode: int) -> Path:
    """Write `data` to `path` atomically with permission bits `mode` from the start.

    The umask still applies (it can only take permissions away). Creates missing parent
    directories (0755). Raises OSError naming the path when the directory is not writable.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)
    return target


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or an unlink in `directory` durable (no-op where directories can't sync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def mode_of(path: str | Path) -> int:
    """The permission bits of a file (e.g. 0o600)."""
    return Path(path).stat().st_mode & 0o777
