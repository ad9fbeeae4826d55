"""The seq mark lives only on a RAM filesystem (a marker on the failing card would put the
event loop at its mercy), survives a restart there, and never raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.seqmark import SeqMark, ram_filesystem

MOUNTS = """\
/dev/mmcblk0p2 / ext4 rw,noatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=88000k,mode=755 0 0
/dev/mmcblk0p1 /boot/firmware vfat rw 0 0
tmpfs /run/user/1000 tmpfs rw 0 0
/dev/sda1 /run/media/usb\\040stick ext4 rw 0 0
"""


def test_the_mount_that_holds_a_path_decides(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert ram_filesystem(Path("/run/edgegw"), str(mounts))           # not created yet
    assert ram_filesystem(Path("/run/user/1000/x"), str(mounts))
    assert not ram_filesystem(Path("/var/lib/edgegw"), str(mounts))   # the card
    assert not ram_filesystem(Path("/run/media/usb stick/d"), str(mounts))  # deepest wins
    assert not ram_filesystem(Path("/runner"), str(mounts))           # a prefix is no parent
    assert not ram_filesystem(Path("/run"), str(tmp_path / "absent"))


def test_a_mark_on_a_disk_is_never_written(tmp_path: Path) -> None:
    if ram_filesystem(tmp_path):
        pytest.skip("the test's temporary directory is itself on a RAM filesystem")
    mark = SeqMark(tmp_path, tmp_path / "store.db")
    assert not mark.usable
    mark.write(41)
    assert mark.read() == 0 and not list(tmp_path.glob("seq-mark-*"))


def test_a_mark_in_ram_is_read_back_by_the_next_run(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not ram_filesystem(shm):
        pytest.skip("/dev/shm is not a RAM filesystem on this machine")
    store = tmp_path / "store.db"
    run = shm / f"edgegw-test-{tmp_path.name}"
    try:
        mark = SeqMark(run, store)
        assert mark.usable and mark.read() == 0
        mark.write(41)
        mark.write(42)
        assert SeqMark(run, store).read() == 42                        # the next run
        assert SeqMark(run, tmp_path / "other.db").read() == 0         # one mark per store
        mark.path.write_text("garbage")
        assert SeqMark(run, store).read() == 0
    finally:
        for f in run.glob("*"):
            f.unlink()
        if run.exists():
            run.rmdir()
