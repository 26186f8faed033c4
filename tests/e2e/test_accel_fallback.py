"""--accel auto against the host's real /dev/kvm (a self-test of guestpm, on the first
target of the host's own arch).

A probe boots the kernel under the host's KVM with nested virtualization.  Where that
works, `auto` must choose KVM; where it does not (the machines this project's CI runs
on: their KVM stops a stock kernel), the probe must end within its bound with one line
saying why, and `auto` must keep TCG and say that line."""

import time

import pytest

from harness.image import rootfs
from harness.kernel import kernels
from harness.plugin import accel
from harness.progress import progress

pytestmark = [pytest.mark.e2e, pytest.mark.harness_selftest,
              pytest.mark.arch(accel.host_arch())]


def test_auto_uses_kvm_only_after_a_probe_boot_proved_it(target, profile, tmp_path):
    kvm = accel.kvm_profile(profile)
    k = kernels.resolve(target.kernel, kvm, progress)
    initrd = rootfs.initramfs(k, kvm, progress)
    t = time.monotonic()
    why = accel.probe(kvm, k, initrd, tmp_path / "probe", timeout=120)
    took = time.monotonic() - t
    chosen, line = accel.choose("auto", profile, tmp_path / "state.accel", lambda p: why)
    if why is None:                      # this host's KVM runs the kernel, nested
        assert chosen.accelerator == "kvm" and line is None
        return
    assert took < 150 and "\n" not in why and why.strip(), \
        f"the probe took {took:.0f} s and said {why!r}"
    static = accel.cannot(profile, accel.host_arch(), *accel.host_facts(profile))
    assert chosen.accelerator == "tcg" and line == \
        f"--accel auto: TCG for {profile.name}: {static or why}", line
    progress(f"KVM probe on this host: {why} ({took:.1f} s)")
