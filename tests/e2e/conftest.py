"""Fixtures shared by the L2 test files (test_l2_*.py): the L1 host machine that runs
the reference VMM, one per KVM mode and guest kernel, shared by every L2 test of the
target that names the same pair."""

from __future__ import annotations

import pytest

from harness import kernels, l2
from harness.l2 import L2Host
from harness.pytest_plugin import attach_machine, progress


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "l1" in metafunc.fixturenames:
        metafunc.parametrize("l2_mode", list(l2.MODES))


@pytest.fixture(scope="session")
def l2_hosts() -> dict:
    """(mode, guest spec) -> L2Host: the cache is explicit, not pytest's, because pytest
    keys a session fixture by its own parameters only, not by those it depends on."""
    return {}


@pytest.fixture
def l1(request, l2_hosts, l2_mode, guest_spec, machine_pool, kernel, profile) -> L2Host:
    """The L1 host of this test's L2 runs; its console slice goes to the test's artifacts."""
    key = (l2_mode, guest_spec)
    if key not in l2_hosts:
        guest = kernels.resolve(guest_spec, profile, progress) if guest_spec else kernel
        l2_hosts[key] = l2.host(machine_pool, l2_mode, guest, same=guest_spec is None)
    attach_machine(request, l2_hosts[key].machine)
    return l2_hosts[key]
