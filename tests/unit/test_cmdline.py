"""QEMU command lines per profile against golden files (tests/unit/golden/qemu/)."""

import os
import shlex
from pathlib import Path

import pytest

from harness import profiles
from harness.vm import cmdline

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


def test_every_profile_holds_the_platform_facts_the_tests_read():
    """Tests take these from the profile, never from the arch name."""
    from harness import profiles
    from harness.kernel import build
    for p in profiles.PROFILES.values():
        assert p.serial_wake_irq and p.kbuild and p.hibernate_events[-1] == "SHUTDOWN", p.name
        assert build.KBUILD[p.arch] is p.kbuild
        assert (p.s4_wake_line is not None) == ("SUSPEND_DISK" in p.hibernate_events), p.name
    assert set(profiles.X86_CHIPSETS.values()) <= set(profiles.PROFILES.values())
    assert profiles.host_deb_arch() in {p.deb_arch for p in profiles.PROFILES.values()}


KVM_CELLS = [("x86_64", "GenuineIntel"), ("x86_64", "AuthenticAMD"), ("x86_64-pc", "GenuineIntel"),
             ("arm64", None), ("arm64-uefi", None)]


@pytest.mark.parametrize("name,vendor", KVM_CELLS)
def test_kvm_qemu_args_golden(name, vendor):
    """--accel kvm: the host's CPU model and KVM, no TCG options (these command lines have
    not run in this project's CI: no host here runs a nested guest under KVM)."""
    p = profiles.under_kvm(profiles.get(name), vendor)
    got = shlex.join(cmdline.qemu_args(p, SPEC)) + "\n"
    golden = GOLDEN / f"kvm-{name}{'-' + vendor if vendor else ''}.txt"
    if os.environ.get("GUESTPM_REGOLD"):
        golden.write_text(got)
    assert got == golden.read_text()
    assert p.accelerator == "kvm" and profiles.get(name).accelerator == "tcg"


def test_the_x86_guest_kvm_module_follows_the_host_cpu_vendor():
    intel = profiles.under_kvm(profiles.get("x86_64"), "GenuineIntel")
    amd = profiles.under_kvm(profiles.get("x86_64"), "AuthenticAMD")
    assert (intel.kvm_module, amd.kvm_module) == ("kvm_intel", "kvm_amd")
    assert "kvm_intel" in intel.modules and "kvm_amd" not in intel.modules
    assert intel.kvm_evidence == () and amd.kvm_evidence == profiles.get("x86_64").kvm_evidence
    with pytest.raises(Exception, match="unknown host CPU vendor"):
        profiles.under_kvm(profiles.get("x86_64"), "CentaurHauls")
    assert profiles.host_cpu_vendor("processor\t: 0\nvendor_id\t: AuthenticAMD\n") == \
        "AuthenticAMD"
    assert profiles.host_cpu_vendor("processor : 0\n") is None
