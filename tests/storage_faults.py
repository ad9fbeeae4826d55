"""Real storage faults for tests: a full disk (a small tmpfs), a frozen filesystem (ext4 on a
loop device, ``fsfreeze``), a read-only remount, damaged SQLite files.

Each needs root and the tools; :data:`needs_mounts` skips with the reason otherwise. Every
context manager undoes its fault in a ``finally`` (a frozen mount left behind would hang
whatever touches it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs or a loop device needs root"
    for tool in ("mount", "umount", "losetup", "fsfreeze", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


_WHY = _missing_tools()
needs_mounts = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"4m"``) at ``mnt``."""
    mnt.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)


def fill(mnt: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC); returns it (delete it to free)."""
    filler = mnt / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                break
    # the last partial blocks too: small writes until not even one byte fits
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 512)
    return filler


@contextlib.contextmanager
def ext4(mnt: Path, *, size_mb: int = 64) -> Iterator[Path]:
    """An ext4 filesystem on a loop device mounted at ``mnt`` (so it can be frozen)."""
    mnt.mkdir(parents=True, exist_ok=True)
    img = mnt.with_name(mnt.name + ".img")
    with img.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", str(img))
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        _run("mount", dev, str(mnt))
        try:
            yield mnt
        finally:
            subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True, timeout=60)
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
        img.unlink(missing_ok=True)


@contextlib.contextmanager
def frozen(mnt: Path) -> Iterator[None]:
    """Every write (and fsync) to ``mnt`` blocks until the block ends."""
    _run("fsfreeze", "-f", str(mnt))
    try:
        yield
    finally:
        _run("fsfreeze", "-u", str(mnt))


def remount(mnt: Path, *, read_only: bool) -> None:
    _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(mnt))


def damage(path: Path, how: str) -> None:
    """Damage a closed SQLite file: ``header`` (not a database any more), ``page`` (garbage
    in page 2, which SQLite's quick check finds), ``empty`` (truncated to 0 bytes)."""
    if how == "empty":
        path.write_bytes(b"")
        for side in ("-wal", "-shm"):
            path.with_name(path.name + side).unlink(missing_ok=True)
        return
    offset = 0 if how == "header" else 4096
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 64)
