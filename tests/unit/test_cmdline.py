"""QEMU command lines per profile against golden files (tests/unit/golden/qemu/)."""

import os
import shlex
from pathlib import Path

import pytest

from harness import cmdline, profiles

GOLDEN = Path(__file__).parent / "golden" / "qemu"
SPEC = cmdline.BootSpec(kernel_image="/k/Image", initrd="/i/initrd.cpio", qmp_fd=5,
                        console_fd=6, append=("guestpm.authkey=ecdsa-sha2-nistp256:AAAA",))


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_qemu_args_golden(name):
    got = shlex.join(cmdline.qemu_args(profiles.get(name), SPEC)) + "\n"
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("GUESTPM_REGOLD"):
        golden.write_text(got)
    assert got == golden.read_text()


def test_extra_qmp_socket_and_args():
    spec = cmdline.BootSpec("/k", "/i", 3, 4, extra_qmp_socket="/tmp/q.sock",
                            qemu_args=("-acpitable", "file=x.aml"), memory_mb=512)
    args = cmdline.qemu_args(profiles.get("x86_64"), spec)
    assert args[args.index("-m") + 1] == "512"
    assert "unix:/tmp/q.sock,server=on,wait=off" in args
    assert args[-2:] == ["-acpitable", "file=x.aml"]
