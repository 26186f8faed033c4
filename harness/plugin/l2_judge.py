"""The verdicts of the L2 tests that harness/vm/l2.py leaves to the tests: an L2 run
reports what it saw (its crashes, the VMM's refusal), and the L1 host's fixture
(tests/e2e/conftest.py) hands these judges to its L2Host."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.plugin import history
from harness.vm.l2 import L2Run


def fail_on_crash(run: L2Run, excuse: Callable[[str, str], None] = lambda console, where: None
                  ) -> None:
    """FAIL on an L2 Oops or panic in any VM of `run`, quoting it, unless
    `excuse(console, where)` (a known defect's XFAIL) claims it first.  A crash fails
    every test that reads the run: Debian does not set panic_on_oops, so an L2 that
    oopsed in a kworker can still report, and a panic ends the run as a mere "reset"."""
    for crashed, crash in run.crashes():
        excuse(crashed.console(), crashed.where)
        pytest.fail(f"the L2 kernel crashed in run {crashed.name} ({crashed.where}):\n{crash}",
                    pytrace=False)


def refused(why: str, host_release: str | None) -> None:
    """The host KVM refused what the VMM asked (`why`, the VMM's words): a FAIL where
    the host's release promises it, else a SKIP naming it."""
    broken = history.vmm_refusal_broken(why, host_release)
    if broken:
        pytest.fail(broken, pytrace=False)
    pytest.skip(why)


def host_lacks(feature: str, probe: str, host) -> None:
    """The L1 host `host` (a Kernel) lacks `feature` by what its KVM gave the VMM
    (`probe`): a SKIP below the feature's merge, a FAIL from its merge on, unless the
    host's config turns it off.  Its KVM ran the L2 guest, so KVM is there whatever its
    config says (history: what the kernel shows)."""
    history.skip_or_fail(feature, host.release, probe, host.config_options() or None,
                         {"CONFIG_KVM": True})
