"""The relaunch's pure parts: when the VMM boots the next VM, and the copy of a pmem
file that a third VM meets as another machine would (holes kept)."""

import os

import pytest

from harness.guest.vmm import relaunch
from harness.guest.vmm.policy import Result

MiB = 1 << 20


@pytest.mark.parametrize("outcome, off2, when, wanted", [
    ("shutdown", True, "off2", True),
    ("shutdown", False, "off2", False),
    ("shutdown", False, "always", True),
    ("reset", None, "always", False),
    ("shutdown", True, "never", False),
])
def test_a_relaunch_follows_a_shutdown_as_asked(outcome, off2, when, wanted):
    assert relaunch.wanted(Result(outcome, off2=off2), when) is wanted


def test_the_copy_has_the_same_bytes_and_keeps_the_holes(tmp_path):
    src, dst = tmp_path / "pmem", tmp_path / "pmem.copy"
    with open(src, "wb") as f:
        f.truncate(64 * MiB)
        f.write(b"SWAPSPACE2".ljust(4096, b"\0"))
        f.seek(40 * MiB)
        f.write(b"\x5a" * (3 * MiB))
    copied = relaunch.copy_sparse(str(src), str(dst))
    assert dst.read_bytes() == src.read_bytes()
    assert copied < 16 * MiB, f"{copied} bytes copied of a file with 3 MiB of data"
    assert os.stat(dst).st_blocks * 512 < 16 * MiB


def test_the_copy_is_attached_apart_from_the_relaunch():
    first = Result("shutdown", off2=True)
    relaunch.attach(first, Result("shutdown"))
    relaunch.attach_copy(first, Result("shutdown", detail="powered off"))
    assert first.relaunch["because"] == "off2"
    assert first.relaunch_copy["because"] == "a copy of the first VM's pmem"
    assert first.relaunch_copy["detail"] == "powered off"
