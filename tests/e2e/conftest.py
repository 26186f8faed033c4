"""Fixtures shared by the L2 test files (test_l2_*.py): the L1 host machine that runs
the reference VMM, one per KVM mode and guest kernel, shared by every L2 test of the
target that names the same pair; on x86, one per target (x86_l1)."""

from __future__ import annotations

import pytest

from harness.kernel import kernels
from harness.plugin import l2_judge
from harness.plugin.judging import attach_machine, attach_splats
from harness.plugin.known_defects import KNOWN, L1_HOST_DEFECTS, xfail_if_seen
from harness.progress import progress
from harness.vm import l2
from harness.vm.l2 import L2Host


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "l1" in metafunc.fixturenames:
        metafunc.parametrize("l2_mode", list(l2.MODES))


def all_mmio_claimed(run: l2.L2Run) -> None:
    """FAIL a run (any of its VMs) in which KVM handed the VMM an MMIO access that no
    device of its board claims: the vGIC's distributor and redistributors are handled in
    the kernel, and the guest knows only the board's devices, so an unclaimed exit is a
    host KVM sending userspace what it should have handled (the VMM answers zeros, and
    the guest may well go on)."""
    for vm in run.vms():
        name, counts = vm.name, vm.result.get("mmio_exits", {})
        if counts.get("unclaimed", 0):
            pytest.fail(f"L2 run {name}: {counts['unclaimed']} MMIO exits to addresses no "
                        f"device of the VMM's board claims (MMIO exits {counts}), expected "
                        f"0 ({run.where})", pytrace=False)


@pytest.fixture
def l1(request, target, l2_mode, guest_spec, machine_pool, kernel, profile) -> L2Host:
    """The L1 host of this test's L2 runs; its console slice goes to the test's artifacts.

    Hosts are cached on the target's machine pool, keyed by (mode, guest spec): they
    live exactly as long as the pool's machines (a host that printed a kernel splat is
    replaced).  Not a session fixture: pytest computes
    a session fixture without parameters of its own once per worker, whatever it
    depends on, and one worker runs several targets (seen: 7.2 tests run on a 6.12
    host, and a "guest=debian:6.12" cell booting 7.2)."""
    def make() -> L2Host:
        guest = kernels.resolve(guest_spec, profile, progress) if guest_spec else kernel
        return l2.host(machine_pool, l2_mode, guest, same=guest_spec is None)
    host = machine_pool.reuse(("l2", l2_mode, guest_spec), make)
    assert host.machine.kernel.spec == target.kernel, \
        f"the L1 host for {target.id} runs {host.machine.kernel.spec}: a fixture mix-up"
    attach_machine(request, host.machine)
    m = host.machine
    # the L1 host is the kernel that hangs: its release, mode and origin decide
    host.watch = lambda: xfail_if_seen(m.console.tail(300), "arm64",
                                       f"L1 console {m.console_log}", *L1_HOST_DEFECTS,
                                       release=m.kernel.release, mode=l2_mode,
                                       stock=m.kernel.debian is not None,
                                       accel=m.profile.accelerator)

    def read(run: l2.L2Run) -> None:
        """Every test that reads a run answers for its L2 splats and crashes; a crash is
        judged against the known defects of the kernel that crashed, the L2 guest."""
        attach_splats(request, run.splats)
        all_mmio_claimed(run)
        l2_judge.fail_on_crash(run, lambda console, where: xfail_if_seen(
            console, "arm64", where, *KNOWN, release=host.guest.release, mode=l2_mode,
            stock=host.guest.debian is not None))
    host.on_read = read
    # the host KVM refused what the VMM asked: a SKIP, or a FAIL where its release
    # promises it
    host.on_refused = lambda why: l2_judge.refused(why, m.kernel.release)
    return host


@pytest.fixture
def x86_l1(request, machine_pool, kernel) -> L2Host:
    """The x86_64 L1 host of the x86 L2 tests (test_l2_x86_*.py), shared by them on the
    target's pool; every test that reads a run answers for its L2 splats and crashes."""
    host = machine_pool.reuse(("l2-x86",), lambda: l2.x86_host(machine_pool, kernel))
    attach_machine(request, host.machine)

    def read(run: l2.L2Run) -> None:
        attach_splats(request, run.splats)
        l2_judge.fail_on_crash(run)
    host.on_read = read
    return host
