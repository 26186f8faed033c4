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


# ---------------------------------------------------------------- x86 L2 s2idle (pure)
# What the x86 backend logs (harness/guest/vmm/x86_64/s2idle.py): "lps0" per LPS0 _DSM
# call (vcpu, fn, phase), "vpmc" per HYPE0001 notify store (vcpu, offset, value), then
# at the wake "idle-check" (every vCPU's MP_STATE) and "raise" (the wake GPE, sci).

def _events(exits: list[dict], name: str) -> list[dict]:
    return [e for e in exits if e["event"] == name]


def lps0_around_the_wake(exits: list[dict], vcpus: int, entry: tuple[int, ...],
                         exit_: tuple[int, ...], wake_gpe: int, where: str) -> None:
    """AssertionError unless the LPS0 entry calls (each of `entry` once) came before the
    VMM's idle check, which found every vCPU HALTED, the wake GPE raised its SCI, and the
    exit calls (each of `exit_` once) came only after it, each call on one of the vCPUs.
    The order within each phase is the kernel's: 6.1 calls 3, 5, 7 and 8, 6, 4; 6.12 and
    7.2 call 3, 7, 5 and 6, 8, 4 (lps0_order says which)."""
    calls = _events(exits, "lps0")
    checks = _events(exits, "idle-check")
    wakes = [e for e in _events(exits, "raise") if e["what"] == f"gpe{wake_gpe}"]
    assert checks and wakes, f"the VMM never woke the guest (no idle check, no GPE " \
                             f"{wake_gpe}): LPS0 calls {[e['fn'] for e in calls]} ({where})"
    check, wake = checks[0], wakes[0]
    before = [e["fn"] for e in calls if e["t"] <= check["t"]]
    after = [e["fn"] for e in calls if e["t"] >= wake["t"]]
    assert sorted(before) == sorted(entry), \
        f"LPS0 calls before the idle: {before}, expected each of {sorted(entry)} once " \
        f"({where})"
    assert sorted(after) == sorted(exit_), \
        f"LPS0 calls after the VMM's wake: {after}, expected each of {sorted(exit_)} once " \
        f"({where})"
    stray = [e for e in calls if not 0 <= e["vcpu"] < vcpus]
    assert not stray, f"LPS0 calls from no vCPU of the {vcpus}: {stray} ({where})"
    states = {s["vcpu"]: s["mp_state"] for s in check["states"]}
    assert states == {n: "HALTED" for n in range(vcpus)}, \
        f"at the wake, {check['t'] - max(e['t'] for e in calls if e['t'] <= check['t']):.1f}" \
        f" s after the last entry call, the vCPUs were {states}, expected all HALTED: the " \
        f"guest did not idle ({where})"
    assert wake["sci"], f"GPE {wake_gpe} was set but raised no SCI: the guest had not " \
                        f"enabled it ({where})"


def lps0_order(exits: list[dict]) -> str:
    """The LPS0 calls in the order the guest made them, entry and exit: information."""
    return " ".join(str(e["fn"]) for e in _events(exits, "lps0"))


def notify_between(exits: list[dict], entry: tuple[int, ...], value: int, where: str) -> None:
    """AssertionError unless exactly one HYPE0001 notify store (`value` at the region's
    start) came after the last LPS0 entry call (of `entry`) and before the VMM's wake."""
    notes = _events(exits, "vpmc")
    assert len(notes) == 1, f"HYPE0001 notify: {len(notes)} MMIO exits, expected 1: " \
                            f"{notes} ({where})"
    n = notes[0]
    assert (n["offset"], n["value"]) == (0, value), \
        f"the notify stored {n['value']} at offset {n['offset']}, expected {value} at 0 " \
        f"({where})"
    check = next(iter(_events(exits, "idle-check")), None)
    entered = [e for e in _events(exits, "lps0")
               if e["fn"] in entry and (check is None or e["t"] <= check["t"])]
    last = entered[-1] if entered else None
    assert last and check and last["t"] < n["t"] < check["t"], \
        f"the notify at {n['t']} s is not between the last LPS0 entry call " \
        f"({last and last['t']} s) and the VMM's wake ({check and check['t']} s) ({where})"
