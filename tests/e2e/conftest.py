"""Fixtures shared by the L2 test files (test_l2_*.py): one L1 host machine per KVM
mode and guest kernel, shared by every L2 test of the target."""

from __future__ import annotations

import pytest

from harness import l2
from harness.l2 import L2Host
from harness.pytest_plugin import attach_machine


@pytest.fixture(scope="session", params=list(l2.MODES))
def l2_host(request, machine_pool, kernel, guest_kernel) -> L2Host:
    return l2.host(machine_pool, request.param, guest_kernel,
                   same=guest_kernel is kernel)


@pytest.fixture
def l1(request, l2_host) -> L2Host:
    """The L1 host of this test's L2 runs; its console slice goes to the test's artifacts."""
    attach_machine(request, l2_host.machine)
    return l2_host
