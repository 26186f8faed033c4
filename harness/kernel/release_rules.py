"""What a kernel release promises, for the verdicts that depend on it (pure).

Interim home: the "verdict-rules" branch writes the same rules into
harness/plugin/history.py (a family merged in release X that is absent on a release
>= X FAILs; the PSCI version KVM gives a new VM has a floor per release).  On merge,
keep one copy and point the L2 tests (harness/vm/l2.py, tests/e2e/test_l2_*.py) at it.

Facts, from the kernel sources: KVM_CAP_ARM_SYSTEM_SUSPEND came with 5.19; KVM's
default PSCI version for a new VM (arch/arm64/kvm/psci.c, kvm_psci_version) was 1.0
until 5.17, 1.1 from 5.18 (PSCI 1.1 support), 1.3 from 6.13 (SYSTEM_OFF2), which is
also when the guest side, psci_sys_hibernate() in drivers/firmware/psci/psci.c, came."""

from __future__ import annotations

SYSTEM_SUSPEND_CAP = (5, 19)
SYSTEM_OFF2 = (6, 13)
# (from release, PSCI version), newest first
PSCI_FLOORS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((6, 13), (1, 3)), ((5, 18), (1, 1)), ((0, 0), (1, 0)))


def psci_floor(release: tuple[int, int]) -> tuple[int, int]:
    """The lowest PSCI version KVM of `release` may give a new VM."""
    return next(v for since, v in PSCI_FLOORS if release >= since)


def promised(merged: tuple[int, int], release: tuple[int, int] | None) -> bool:
    """Whether a kernel of `release` must have what was merged in `merged` (an
    unknown release promises nothing)."""
    return release is not None and release >= merged


def show(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"
