"""KVM exits of a tiny guest, the kernel under test as the host: x86 port I/O, MMIO, HLT.

Inside the x86_64 machine (nested SVM), harness.guest.x86io runs a few real-mode
instructions per case under the guest's /dev/kvm and asserts the exits KVM hands to
userspace against api.rst: KVM_EXIT_IO (direction, size, port, count, data) and
KVM_EXIT_MMIO (address, length, direction, data), and that the value a VMM puts in
kvm_run is what an IN or an MMIO load returns.  This is the ground an x86 VMM stands
on: the L2 guest's s2idle notification and vfio ACPI Notify are such accesses.

Expected on every kernel with KVM: PASS (KVM_EXIT_IO and KVM_EXIT_MMIO are as old as
KVM, 2.6.20)."""

from __future__ import annotations

import pytest

from harness.guest import x86io
from harness.plugin.judging import note
from harness.plugin.suite import SuiteHost

pytestmark = [pytest.mark.e2e, pytest.mark.arch("x86_64")]


class ExitHost(SuiteHost):
    """The shared machine; its x86 exit cases in one agent call."""
    AGENT = "x86io"
    MERGED = {"pio": (2, 6), "mmio": (2, 6)}


@pytest.fixture
def host(request, machine, machine_pool, kernel) -> ExitHost:
    return machine_pool.reuse(("x86io",), lambda: ExitHost(machine)).serve(request, kernel)


@pytest.mark.parametrize("case", [c.name for c in x86io.CASES])
def test_x86_exit(request, host, case):
    host.check_case(case)
    cost = host.result(case)["observed"].get("exit_us")
    if cost is not None:
        note(request, f"x86 KVM_EXIT_IO round trip through a stdlib-Python VMM: {cost} us")


@pytest.mark.stock_kernel_only
def test_verdicts_follow_upstream_history(host, kernel):
    host.check_history(kernel)


def test_bare_metal_entry_point_agrees(host):
    host.check_bare_metal()
