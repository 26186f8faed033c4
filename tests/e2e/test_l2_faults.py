"""Negative controls of the L2 judges: the reference VMM breaks one promise of its side
of the contract at a time (harness/guest/vmm/policy.py FAULTS, chosen on its command
line), through the real KVM of the L1 host, and the judge of that promise must FAIL,
with its own message, on what the run left.

Opt-in (--slow --self-test): one L1 host, five L2 runs (one of them a hibernation round
trip), 187 s under TCG here.  The default run boots nothing for it: CI sees the
same judges FAIL in tests/unit/test_l2_evidence.py, on recorded honest reports with each
fault applied (tests/unit/golden/l2/faults/)."""

from __future__ import annotations

import pytest
from test_l2_hibernate import _flagged_off2, _hibernated, _psci, hibernate
from test_l2_suspend import (
    SUSPEND,
    _guest_resumed,
    _one_suspend_exit,
    _restarted_at_the_entry_point,
    _woken_by_the_alarm,
)

from harness.plugin.judging import note
from harness.vm.l2 import L2Host, L2Run

pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64"), pytest.mark.slow,
              pytest.mark.harness_selftest, pytest.mark.l2_mode_hosts("nvhe")]

# the guest brings up one CPU; the VMM's second vCPU is the one it leaves on
LEFT_ON = ("--vcpu-left-on",)
ONCE = ("guestpm.suspend=1", *SUSPEND)      # one suspend per fault's boot
ONE_CPU = ("maxcpus=1",)


def _fails(judge, match: str, *args) -> str:
    """The judge's AssertionError, which must say `match` (not fail for another reason)."""
    with pytest.raises(AssertionError, match=match) as e:
        judge(*args)
    return str(e.value).splitlines()[0]


def _resumed_anyway(run: L2Run, mode: str) -> str:
    try:
        _guest_resumed(run, mode)
        return "L2 resumed as if nothing was wrong"
    except AssertionError as e:
        return f"L2's own evidence also FAILs: {str(e).splitlines()[0]}"


def test_each_l2_judge_fails_under_the_vmm_fault_that_breaks_its_promise(request, l1: L2Host):
    reads: list[L2Run] = []
    l1.on_read = reads.append       # this test judges the runs itself

    def say(what: str) -> None:
        note(request, f"{l1.mode}: {what}")

    # hold, woken at once: the wake does not follow the alarm
    run = l1.run("fault-wake-at-once", "--suspend", "hold", "--fault", "wake-at-once",
                 append=ONCE)
    ev = run.system_events("SUSPEND")[0]
    woke = run.events("vmm-wake")
    say("wake-at-once: " + _fails(_woken_by_the_alarm,
                                  "never fired|the wake must follow the alarm|suspended",
                                  run, ev, woke[0]["t"]))
    say("wake-at-once: " + _resumed_anyway(run, "deep"))

    # honour, restarted one instruction past the entry point: KVM holds that PC
    run = l1.run("fault-wrong-pc", "--suspend", "honour", "--fault", "wrong-pc",
                 append=ONCE)
    ev = _one_suspend_exit(run)
    say("wrong-pc: " + _fails(_restarted_at_the_entry_point, "KVM holds pc=",
                              run, ev, "wakeup exit"))
    say("wrong-pc: " + _resumed_anyway(run, "deep"))

    # a vCPU left on: the honest VMM denies (DEN0022 5.19.2), and the judge sees it on
    run = l1.run("vcpu-left-on", "--suspend", "honour", *LEFT_ON,
                 append=ONCE + ONE_CPU)
    refused = run.events("suspend-refused")
    assert [r["x0"] for r in refused] == ["DENIED"] and "not OFF" in refused[0]["why"], \
        f"a SUSPEND with vCPU 1 on was not DENIED: {refused} ({run.where})"
    said = run.report("resumed")
    assert said.get("rc") == "1" and "Operation not permitted" in said.get("err", ""), \
        f"after DENIED L2's `echo mem` should fail with EPERM: {said} ({run.where})"
    say("vcpu-left-on: " + _fails(_one_suspend_exit, "expected all STOPPED", run))

    # the same, the VMM reporting that vCPU STOPPED: only L2's evidence contradicts it
    run = l1.run("fault-stopped-lie", "--suspend", "honour", "--fault", "stopped-lie",
                 *LEFT_ON, append=ONCE + ONE_CPU)
    say("stopped-lie: " + _fails(_one_suspend_exit, "took down CPUs", run))

    # hibernation read as a power-off: the OFF2 flag check
    run = hibernate(l1, "fault-ignore-off2", "--fault", "ignore-off2")
    down = _hibernated(run)
    version = run.result["psci_version"]
    assert reads and all(r.result["fault"] or r.name == "vcpu-left-on" for r in reads)
    if _psci(version) < (1, 3):
        pytest.skip(f"host PSCI version {version} < 1.3: SYSTEM_OFF2 absent, so the "
                    "ignore-off2 fault has no flag to ignore (the other faults FAILed "
                    "their judges)")
    say("ignore-off2: " + _fails(_flagged_off2, "the VMM read it as off2=False", run, down))
