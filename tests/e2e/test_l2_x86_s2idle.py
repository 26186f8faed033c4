"""x86 s2idle through a real KVM: the kernel under test suspends to idle as an L2 guest
of guestpm's reference VMM (harness/guest/vmm/x86_64/) inside the x86_64 L1 host, and
its LPS0 _DSM calls and the HYPE0001 notify reach the VMM as KVM exits.

The L2 DSDT (guest-rootfs/acpi/l2_x86_dsdt.asl) gives the guest an LPS0 device whose
_DSM writes each function number to an I/O port (a KVM_EXIT_IO), a HYPE0001 device whose
_DSM function 1 stores into a 16-byte MMIO region (a KVM_EXIT_MMIO), and a control-method
power button whose _PRW names GPE 0 as a wake GPE.  The VMM logs each call with its vCPU
and its own time (x86_64/s2idle.py).  Three seconds after the last entry call (5) it
reads every vCPU's MP_STATE, each kicked out of KVM_RUN: HALTED for all of them means
the guest idles.  Then it sets GPE 0's status and the SCI wakes the guest.  Debian's
`button` module rides in L2's initramfs: its driver arms the GPE for wake.

Expected, on every kernel with ACPI s2idle and the LPS0 device (4.15 and later, so every
default kernel): the entry calls 3, 5 and 7 before the idle, the exit calls 4, 6 and 8
only after the wake, "PM: suspend entry (s2idle)" and one resume in the guest's log.  The
HYPE0001 notify: no stock kernel has a driver for it (SKIP, naming the driver), so the
stand-in fixture module proves the VMM's half on its own row.

Under TCG the L2 guest runs one vCPU and ticks from the PIT (l2.x86_vmm_args): with
nested SVM emulated, an L2 guest can take an interrupt inside its own interrupt handler
and hang.  Such a hang is an XFAIL that names the defect (docs/known-defects.md,
"x86_64 L1 host under TCG"); every other hang or crash is a FAIL.  Opt-in (--slow): one
L1 boot per x86 target, shared with test_l2_x86_boot.py, and one L2 boot each for the
kernel's tests and the stand-in's."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guest.vmm.x86_64 import acpi, s2idle
from harness.image import fixture_modules
from harness.plugin import l2_judge
from harness.plugin.judging import note
from harness.plugin.known_defects import X86_L2_IRQ_IN_IRQ, xfail_if_seen
from harness.progress import progress
from harness.vm import l2
from harness.vm.l2 import L2Host, L2Run

pytestmark = [pytest.mark.e2e, pytest.mark.arch("x86_64"), pytest.mark.slow]

WAKE_S = 3
VCPUS = 1
S2IDLE_ARGS = ("--vcpus", str(VCPUS), "--s2idle-wake", str(WAKE_S))
# one suspend, woken by the VMM; the RTC alarm far off (the VMM's CMOS has no alarm)
APPEND = ("guestpm.suspend=1", "guestpm.wake=PWRB", "guestpm.alarm=600",
          "guestpm.hid=HYPE0001")
NOTIFY_VALUE = 3                     # the L2 DSDT's HYPE0001 _DSM stores 3 (crosvm's AML)
STANDIN = Path(__file__).resolve().parent.parent / "fixtures" / "vpmc_standin"
STANDIN_LAYER = "/tmp/l2-vpmc-standin.cpio"


def _run(host: L2Host, name: str, *extra: str) -> L2Run:
    """One L2 boot that suspends once; a hang before the scenario's end is judged against
    the known TCG defect first, by where each vCPU stood."""
    run = host.run(name, *l2.x86_vmm_args(host.machine), *S2IDLE_ARGS, *extra,
                   append=APPEND, timeout=240, silent=180)
    if run.result["outcome"] in ("timeout", "silent"):
        where = l2.where_it_stood(host.machine, run.result)
        xfail_if_seen(where, "x86_64", run.where, X86_L2_IRQ_IN_IRQ,
                      release=host.guest.release, accel=host.machine.profile.accelerator)
        pytest.fail(f"the L2 guest did not finish its suspend: {run.ending()}\n{where}",
                    pytrace=False)
    return run


def _kernel_run(host: L2Host) -> L2Run:
    return _run(host, "s2idle")


def test_l2_x86_s2idle_lps0_entry_before_the_idle_exit_after_the_wake(request, x86_l1):
    """Each LPS0 call is a KVM exit on a vCPU, at a time: 3, 5 and 7 before every vCPU is
    HALTED, the wake after, then 4, 6 and 8.  In which order within each phase is the
    kernel's (6.1: 3 5 7, 8 6 4; 6.12 and 7.2: 3 7 5, 6 8 4): shown as information."""
    run = _kernel_run(x86_l1)
    _assert_order(run, x86_l1)
    note(request, f"x86 L2 {x86_l1.guest.release}: LPS0 _DSM calls in the order made: "
                  f"{l2_judge.lps0_order(run.result['exits'])}")


def test_l2_x86_s2idle_the_guest_suspends_and_resumes(x86_l1):
    """The guest's own account: one "PM: suspend entry (s2idle)", one resume, `echo mem`
    returned 0 and the scenario went on to power off through ACPI S5."""
    run = _kernel_run(x86_l1)
    pm = run.report("pm")
    assert pm.get("entry") == "PM: suspend entry (s2idle)" and pm.get("exits") == "1", \
        f"the guest's log: {pm} ({run.where})"
    resumed = run.report("resumed")
    assert resumed.get("rc") == "0" and resumed.get("marker") == "kept", \
        f"`echo mem` in L2: {resumed} ({run.where})"
    run.assert_ended()
    assert run.result["detail"].startswith("ACPI S5"), run.ending()


def test_l2_x86_hype0001_notify_reaches_the_vmm(x86_l1):
    """The kernel's own HYPE0001 driver (the unmerged series) notifies through the
    _DSM's MMIO store: an exit between the last LPS0 entry call and the wake.  A kernel
    with no driver bound to HYPE0001 SKIPs, naming it."""
    run = _kernel_run(x86_l1)
    hid = run.report("hid")
    if hid.get("present") != "yes":
        pytest.fail(f"the L2 guest has no HYPE0001 device, which the L2 DSDT declares: "
                    f"{hid} ({run.where})", pytrace=False)
    if not hid.get("driver"):
        pytest.skip(f"{x86_l1.guest.release} binds no driver to HYPE0001 (the virtual "
                    f"PMC s2idle-notification series is unmerged)")
    _assert_notify(run)


@pytest.mark.standin("virtual PMC (HYPE0001) s2idle notification, L2")
def test_l2_x86_hype0001_notify_with_the_standin_fixture(x86_l1, profile):
    """A stand-in, not the kernel's verdict: tests/fixtures/vpmc_standin, in the L2
    initramfs, evaluates the HYPE0001 _DSM from the LPS0 prepare hook.  Its notify must
    reach the VMM as one MMIO exit (value 3 at the region's start) after the last LPS0
    entry call and before the wake."""
    run = _standin_run(x86_l1, profile, "s2idle-standin")
    _assert_notify(run)


def _standin_run(host: L2Host, profile, name: str, *extra: str) -> L2Run:
    """A run with the HYPE0001 stand-in in L2's initramfs; SKIP where it cannot be built
    or loaded, FAIL where it loads and does not bind."""
    guest = host.guest
    try:
        ko = fixture_modules.build(STANDIN, guest, profile.deb_arch, progress)
    except fixture_modules.Unbuildable as e:
        pytest.skip(f"the HYPE0001 stand-in cannot be built: {e}")
    host.machine.ssh.put(l2.fixture_layer("guestpm_vpmc_standin", ko.read_bytes()),
                         STANDIN_LAYER)
    run = _run(host, name, "--initrd-extra", STANDIN_LAYER, *extra)
    hid = run.report("hid")
    if hid.get("driver") != "guestpm_vpmc_standin":
        failed = [r for r in run.reports if r.startswith("insmod-failed guestpm_vpmc_standin")]
        if failed:
            pytest.skip(f"the stand-in does not load in {guest.release}: {failed[0]}")
        pytest.fail(f"the stand-in loaded but HYPE0001 shows driver {hid.get('driver')!r} "
                    f"({run.where})", pytrace=False)
    return run


@pytest.mark.harness_selftest
def test_each_x86_s2idle_judge_fails_under_the_vmm_fault_that_breaks_its_promise(x86_l1,
                                                                                profile):
    """The VMM breaks one promise per L2 boot (harness/guest/vmm/policy.py FAULTS): it
    loses the LPS0 entry call 7, wakes the guest at its first entry call, or misreads
    the notify's value.  The judge of that promise must FAIL each, naming it."""
    lost = _run(x86_l1, "fault-lose-lps0-call", "--fault", "lose-lps0-call")
    with pytest.raises(AssertionError, match=r"before the idle: \[3, 5\], expected each"):
        _assert_order(lost, x86_l1)
    early = _run(x86_l1, "fault-early-wake", "--fault", "early-wake")
    with pytest.raises(AssertionError, match=r"before the idle: \[3\], expected each"):
        _assert_order(early, x86_l1)
    misread = _standin_run(x86_l1, profile, "fault-misread-notify", "--fault",
                           "misread-notify")
    with pytest.raises(AssertionError, match="stored 4 at offset 0, expected 3"):
        _assert_notify(misread)
    for run in (lost, early, misread):       # the rest of each run kept its promises
        assert run.result["fault"] and run.report("resumed").get("rc") == "0", run.ending()


def _assert_order(run: L2Run, host: L2Host) -> None:
    """The judge; where L2 lacks the `button` module (a kernel given without modules),
    its message says so: without that driver the wake GPE is never armed."""
    why = host.disks.modules_missing
    l2_judge.lps0_around_the_wake(run.result["exits"], VCPUS, s2idle.ENTRY, s2idle.EXIT,
                                  acpi.WAKE_GPE, run.where + (f"; the L2 modules layer is "
                                                              f"empty: {why}" if why else ""))


def _assert_notify(run: L2Run) -> None:
    l2_judge.notify_between(run.result["exits"], s2idle.ENTRY, NOTIFY_VALUE, run.where)
