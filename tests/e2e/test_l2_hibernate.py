"""arm64 guest hibernation through PSCI SYSTEM_OFF2 with a real guest kernel under a
real KVM, resumed in a new VM: the two-boot harness no public VMM has.

The reference VMM gives the L2 guest a pmem region backed by a file in L1 (its swap).
The guest's /init loads of_pmem/nd_pmem, checks pmem0 for an image, swaps on it and
writes `disk`.  A KVM that offers PSCI 1.3 exits SHUTDOWN with data[0] =
KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2 when the guest kernel calls SYSTEM_OFF2 from
psci_sys_hibernate(); the VMM reads that as "hibernated" and boots a new VM with the
same layout on the same pmem file, which restores the image.  Where the VMM is not
told (PSCI below 1.3, or a guest from before the series), the tests still relaunch
for the round trip and record it (`because: forced`).

Evidence, both sides: the VMM's exit log (the SHUTDOWN exit, ndata, the flag) and the
L2 consoles (the booting kernel's "resume from hibernation", the restored /init's
report that `echo disk` returned 0 with its memory marker and background process)."""

from __future__ import annotations

import pytest

from harness.guest.kvm import uapi
from harness.kernel.kernels import release_version
from harness.plugin import history, l2_judge
from harness.plugin.known_defects import TRANS_PGD_RESTORE, xfail_if_seen
from harness.vm.l2 import L2Host, L2Run

pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64")]

# no_console_suspend: an oops in the restore comes after the console would be
# suspended (the 6.12 guest's restore went silent at "Suspending console(s)");
# oops=panic: a guest that oopsed resets at once (panic=-1) instead of printing the
# aftermath until the VMM's 300 s bound (the 6.12 guest's trans_pgd oops did)
RESUME = "guestpm.resume=pmem0 no_console_suspend oops=panic"
# 256 MiB (the suspend tests' size) leaves Debian's kernel "Image allocation is 4255
# pages short": a hibernation image (7.2: ~71 MB) needs about as much again free; 384 MiB
# holds it, and every MiB less is memory the nested L2 kernel initialises and scans
RAM_MIB = 384
# the plain round trip's run boots a third VM, with more memory, on a copy of the pmem
# its first VM wrote: test_l2_nothing_to_resume_boots_fresh's image, without a boot and
# an image write of its own (about 40 s an L1 host mode here, docs/figures.md)
MISMATCH_RAM_MIB = RAM_MIB + 64
# kernel/power/hibernate.c software_resume(), once it found an image (pr_info; the
# /init's resume window prints level 6)
RESUMES = "resume from hibernation"


def hibernate(l1: L2Host, name: str, *vmm_args: str,
              reads: tuple[str, ...] | None = None) -> L2Run:
    """One guest that hibernates onto a fresh pmem file, then a new VM on that file."""
    if l1.disks.modules_missing:
        pytest.skip(f"the L2 guest cannot have its pmem swap: {l1.disks.modules_missing}")
    return l1.run(name, "--suspend", "off", "--ram-mib", str(RAM_MIB),
                  "--pmem", f"/tmp/l2-pmem-{name}",
                  "--relaunch", "always", "--relaunch-append", RESUME, *vmm_args,
                  append=(RESUME, "guestpm.hibernate=1"), reads=reads)


def round_trip(l1: L2Host, reads: tuple[str, ...] | None = None) -> L2Run:
    """The round trip at the host's PSCI version; with the host's own kernel as the
    guest, the mismatched third VM too.  `reads`: the VMs after the first that the test
    answers for (each test answers for the VMs it reads, not for the other's)."""
    third = ("--relaunch-copy-ram-mib", str(MISMATCH_RAM_MIB)) \
        if l1.guest.spec == l1.machine.kernel.spec else ()
    return hibernate(l1, "hibernate", *third, reads=reads)


def _psci(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def _off2_in_guest(run: L2Run, release: str | None) -> tuple[bool, str]:
    """Whether the L2 kernel can call SYSTEM_OFF2 (its code path, psci_sys_hibernate(),
    in /proc/kallsyms; without kallsyms its release decides), and why.  The guest's
    release applies: a guest >= 6.13 without the call FAILs."""
    said = run.report("kallsyms").get("psci_sys_hibernate")
    version = release_version(release)
    promised = history.promised("system_off2_call", version)
    merged = history.dotted(history.FEATURES["system_off2_call"].merged)
    if said == "yes":
        return True, f"guest {release} has psci_sys_hibernate"
    if said == "no":
        assert not promised, \
            f"guest {release} is >= {merged}, where SYSTEM_OFF2 was merged, but " \
            f"psci_sys_hibernate is not in its /proc/kallsyms ({run.where})"
        return False, f"guest {release} has no SYSTEM_OFF2 (no psci_sys_hibernate in " \
                      f"/proc/kallsyms; merged in {merged})"
    assert version is not None, \
        f"the guest has no /proc/kallsyms ({said}) and no known release: whether it can " \
        f"call SYSTEM_OFF2 is unknown ({run.where})"
    return promised, f"guest {release} has no /proc/kallsyms ({said}); decided by its " \
                     f"release: SYSTEM_OFF2 {'is' if promised else 'is not'} there " \
                     f"(merged in {merged})"


def _hibernated(run: L2Run) -> dict:
    """The first VM swapped on pmem0, wrote `disk` and powered off: one SHUTDOWN exit."""
    fresh = run.report("fresh")
    assert fresh.get("rc") == "0", f"the resume check on an empty pmem0 said {fresh} " \
                                   f"({run.where})"
    # rc=0 alone proves nothing (resume_store() succeeds whether or not there is an
    # image): the kernel must not have said it resumes (the relaunch is the control)
    assert fresh.get("resume_lines") == "0" and RESUMES not in run.console(), \
        f"on an empty pmem0 the L2 kernel said {RESUMES!r} ({fresh}) ({run.where})"
    assert run.report("swap").get("rc") == "0", f"no swap on pmem0: {run.reports} ({run.where})"
    assert not run.has("thawed"), \
        f"`echo disk` returned in the first VM instead of powering off: {run.reports} " \
        f"({run.where})"
    downs = run.system_events("SHUTDOWN")
    assert len(downs) == 1 and run.result["outcome"] == "shutdown", \
        f"expected one SHUTDOWN exit after `echo disk`, got {downs} and " \
        f"{run.result['outcome']}:\n{run.log()} ({run.where})"
    return downs[0]


def _restored(run: L2Run, l1: L2Host) -> None:
    """The new VM restored the image: its kernel said so, and the first VM's /init went
    on after `echo disk` with its memory and its background process.  A crash there is
    judged against the known defects of the kernel that crashed: the L2 guest."""
    again = run.relaunch
    assert again is not None, f"the VMM did not boot a new VM after the SHUTDOWN ({run.where})"
    xfail_if_seen(again.console(), "arm64", again.where, TRANS_PGD_RESTORE,
                  release=l1.guest.release, mode=l1.mode, stock=l1.guest.debian is not None)
    assert RESUMES in again.console(), \
        f"the new VM's kernel never said it resumes:\n{again.console()[-1500:]} ({again.where})"
    assert not again.has("fresh"), \
        f"the new VM booted afresh instead of restoring: {again.reports} ({again.where})"
    said = again.report("thawed")
    assert said.get("rc") == "0" and (said.get("marker"), said.get("sleeper")) == \
        ("kept", "running"), f"after the restore the first VM's /init said {said} " \
                             f"({again.where})"
    again.assert_ended()


# one cross cell by default (VHE): a guest from before the series on a host that offers
# it; nVHE on hosts without SYSTEM_OFF2 is opt-in (--all-l2-modes): CI time
@pytest.mark.cross_guest(("debian:7.2", "debian:6.12"))
@pytest.mark.l2_mode_hosts("nvhe", "debian:7.2")
def test_l2_hibernation_exits_shutdown_with_the_off2_flag(l1):
    guest = l1.guest
    run = round_trip(l1, reads=("relaunch",))       # the third VM is the mismatch test's
    down = _hibernated(run)
    version = run.result["psci_version"]
    if _psci(version) < (1, 3):
        _restored(run, l1)                # the round trip is asserted before the SKIP
        # the host's release applies: from 6.13 on a new VM gets PSCI 1.3 (a FAIL there)
        l2_judge.host_lacks("system_off2", f"host PSCI version {version} < 1.3: SYSTEM_OFF2 "
                            "absent (the round trip through SYSTEM_OFF passed)",
                            l1.machine.kernel)
    has_off2, why = _off2_in_guest(run, guest.release)
    if not has_off2:
        _restored(run, l1)
        pytest.skip(f"{why}: it hibernates through SYSTEM_OFF (the round trip passed)")
    _flagged_off2(run, down)
    _restored(run, l1)


def _flagged_off2(run: L2Run, down: dict) -> None:
    """The OFF2 flag check: KVM's SHUTDOWN exit carries the flag, and the VMM read it as
    a hibernation and relaunched for that reason.  L2's side (it can call SYSTEM_OFF2)
    is _off2_in_guest's."""
    version = run.result["psci_version"]
    # KVM sets x0..x3 before this exit, so the type argument cannot be read back: the
    # flagged exit is the evidence
    assert down["ndata"] == 1 and down["data"][0] & uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2, \
        f"PSCI {version} host: `echo disk` ended in SHUTDOWN with ndata {down['ndata']} " \
        f"data {down['data']}, not the PSCI_OFF2 flag ({run.where})"
    relaunch = run.result.get("relaunch") or {}
    assert run.result["off2"] is True and relaunch.get("because") == "off2", \
        f"KVM flagged the exit PSCI_OFF2 (data {down['data']}); the VMM read it as " \
        f"off2={run.result['off2']} and relaunched {relaunch.get('because', 'not at all')!r}, " \
        f"not as a hibernation ({run.where})"


@pytest.mark.l2_mode_hosts("nvhe", "debian:7.2")
def test_l2_hibernation_round_trip_at_psci_1_2_goes_through_system_off(l1):
    """The VMM lowers the PSCI version to 1.2: the guest must not see SYSTEM_OFF2 and
    must hibernate through SYSTEM_OFF (no flag); the restore still works."""
    run = hibernate(l1, "psci-1.2", "--psci-version", "1.2")
    down = _hibernated(run)
    assert run.result["psci_version"] == "1.2", run.result["psci_version"]
    assert not (down["data"] and down["data"][0] & uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2), \
        f"PSCI 1.2: the SHUTDOWN exit carries the OFF2 flag ({down}): the guest called " \
        f"SYSTEM_OFF2 below 1.3 ({run.where})"
    assert run.result["relaunch"]["because"].startswith("forced"), run.result["relaunch"]
    _restored(run, l1)


@pytest.mark.l2_mode_hosts("nvhe", "debian:7.2")
def test_l2_nothing_to_resume_boots_fresh(l1):
    """An empty pmem boots fresh (the first VM of every round trip shows it), and an image
    made with another memory size (the round trip's image, copied before its restore) is
    refused ("Image mismatch: memory size", "Failed to load image, recovering.",
    kernel/power/snapshot.c and hibernate.c from 6.1 to 7.2): the new VM boots fresh,
    without a crash."""
    run = round_trip(l1, reads=("relaunch_copy",))
    _hibernated(run)            # includes: the empty pmem0 was checked and booted fresh
    again = run.relaunch_copy
    assert again is not None, f"no VM on the image's copy ({run.where})"
    console = again.console()
    for line in ("PM: hibernation: Image mismatch: memory size",
                 "PM: hibernation: Failed to load image, recovering."):
        assert line in console, f"{MISMATCH_RAM_MIB} MiB VM on a {RAM_MIB} MiB image: no " \
                                f"{line!r} in its " \
                                f"console:\n{console[-1500:]} ({again.where})"
    assert again.report("fresh").get("rc") == "0" and not again.has("thawed"), \
        f"the refused image must leave a fresh boot: {again.reports} ({again.where})"
    # the positive control of the first VM's "no resume line": an image was there
    assert again.report("fresh").get("resume_lines") == "1" and RESUMES in console, \
        f"with an image on pmem0 the L2 kernel did not say {RESUMES!r}: " \
        f"{again.report('fresh')} ({again.where})"
    again.assert_ended()
