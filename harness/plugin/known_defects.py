"""Kernel defects this suite has observed, as data: a name, the whole symptom, where it is
written up, and where it was seen (the crashing kernel's releases, the KVM mode, stock
kernels only).  A test wraps the step that can hit one in `xfail_on(m, DEFECT, ...)`: a
guest crash whose console text matches the symptom, on a kernel where the defect was
seen, becomes an XFAIL citing the defect and the log; the same symptom elsewhere (a
release outside the defect's, a developer's own kernel) is a FAIL that names the
defect as a possible cause; any other crash stays a FAIL.
tests/unit/test_known_defects.py holds each symptom against the recorded oops
(tests/unit/golden/oops/) and against near misses."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import GuestPanic


@dataclass(frozen=True)
class KnownDefect:
    name: str
    symptom: re.Pattern[str]
    summary: str                       # what the XFAIL reason says
    arch: str | None = None            # only on this arch (None: any)
    accel: str | None = None           # only under this accelerator (tcg, kvm; None: any)
    doc: str = "docs/known-defects.md"
    splats: tuple[str, ...] = ()       # splat kinds that are part of the symptom: they do
                                       # not turn this XFAIL into a FAIL (plugin.judging)
    # the crashing kernel's releases where the defect can be: [since, fixed); None: any
    since: tuple[int, int] | None = None
    fixed: tuple[int, int] | None = None
    modes: tuple[str, ...] | None = None   # the KVM modes it was seen in (None: any)
    stock_only: bool = False               # seen on stock Debian kernels only
    # which splats of the kinds above belong to this occurrence: (splat, the XFAIL's
    # reason) -> bool; None: every splat of those kinds
    owns_splat: Callable[[object, str], bool] | None = None

    def matches(self, text: str, arch: str | None = None, accel: str | None = None) -> bool:
        if self.arch is not None and arch is not None and arch != self.arch:
            return False
        if self.accel is not None and accel is not None and accel != self.accel:
            return False
        return bool(self.symptom.search(text.replace("\r", "")))

    def out_of_scope(self, release: str | None, mode: str | None = None,
                     stock: bool = True) -> str | None:
        """Why a crash with this symptom cannot be excused as this defect on the
        crashing kernel `release` (in KVM `mode`, a stock kernel or not); None: it can."""
        from harness.kernel.kernels import release_version
        if self.stock_only and not stock:
            return "it was seen on stock Debian kernels only, and this is your own kernel"
        if self.since or self.fixed:
            v = release_version(release)
            if v is None:
                return f"the crashing kernel's release {release!r} cannot be read"
            if self.since and v < self.since:
                return f"it was seen from {_dotted(self.since)} on, and this is {release}"
            if self.fixed and v >= self.fixed:
                return f"{_dotted(self.fixed)} fixed it, and this is {release}"
        if self.modes and mode is not None and mode not in self.modes:
            return f"it was seen in {'/'.join(self.modes)} mode only, and this is {mode}"
        return None


def _dotted(v: tuple[int, int]) -> str:
    return ".".join(map(str, v))


# IPv6's DAD work transmits through virtio-net after the suspend froze it, and the
# transmit faults in the virtqueue code (5.10 and 6.12: a general protection fault, 6.1:
# a NULL dereference; docs/known-defects.md, "S3 suspend oopses when IPv6 DAD transmits through
# a frozen virtio-net").  A race: tests that can meet it treat it as a non-strict xfail.
VIRTIO_NET_FROZEN_XMIT = KnownDefect(
    name="virtio-net transmit after freeze",
    symptom=re.compile(
        r"(?s)(general protection fault, probably for non-canonical address"
        r"|BUG: kernel NULL pointer dereference, address: [0-9a-f]+).*?"
        r"Workqueue: ipv6_addrconf addrconf_dad_work.*?"
        # virtio_ring and virtio_net are modules in 5.10 and 6.1, built in (no module
        # suffix) from 6.12 on for virtio_ring: either that module or none
        r"RIP: 0010:virtqueue_\w+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[virtio_ring\])?\n.*?"
        r"\sstart_xmit\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[virtio_net\])?\n"),
    summary="IPv6 DAD transmits through virtio-net after the suspend froze it; the "
            "transmit faults in the virtqueue code",
    arch="x86_64")

# At S3 resume virtio-net's restore meets a corrupted slab freelist (docs/known-defects.md,
# "S3 resume meets a corrupted slab in virtio-net's restore").  The frozen-device transmit
# above would explain it, but that is a suspicion, not a finding, so it is a defect of its
# own.  A race: non-strict.
VIRTIO_NET_RESTORE_SLAB = KnownDefect(
    name="corrupted slab met by virtio-net restore",
    symptom=re.compile(
        r"(?s)BUG: unable to handle page fault for address: [0-9a-f]+\n"
        r".*?#PF: supervisor write access in kernel mode"
        r".*?RIP: 0010:(memset\w*|__kmem_cache_alloc\w*|kmem_cache_alloc\w*)"
        r"\+0x[0-9a-f]+/0x[0-9a-f]+"
        r".*?Call Trace:(?:(?!---\[ end trace).)*?"
        r"(kmalloc|kmem_cache_alloc)\w*\+0x[0-9a-f]+/0x[0-9a-f]+"
        r"(?:(?!---\[ end trace).)*?virtnet_restore\+0x[0-9a-f]+/0x[0-9a-f]+"
        r"(?: \[virtio_net\])?\n"),
    summary="at resume virtio-net's restore allocates from a corrupted slab (a write "
            "fault in the allocator's memset on a misaligned object)",
    arch="x86_64")

# Debian 6.12 arm64 (52-bit VA with LPA2, which QEMU's -cpu max offers), gone in 7.2 and
# absent with lpa2=off.  Seen on 6.12 and fixed by 7.2 (not bisected: a release between
# may still carry it); 6.1 has no LPA2.  The whole symptom, in the order the oops prints it: a paging
# request fault, with 52-bit VAs, and the faulting PC inside trans_pgd_create_copy (not
# merely the name somewhere in a call trace).
TRANS_PGD_RESTORE = KnownDefect(
    name="arm64 hibernation restore in trans_pgd_create_copy",
    symptom=re.compile(
        r"(?s)Unable to handle kernel paging request at virtual address [0-9a-f]+\n"
        r".*?swapper pgtable: 4k pages, 52-bit VAs"
        r".*?\bpc : trans_pgd_create_copy\+0x[0-9a-f]+/0x[0-9a-f]+"),
    summary="the arm64 restore oopses in trans_pgd_create_copy (paging request in the "
            "linear map copy, 52-bit VA/LPA2)",
    arch="arm64", since=(6, 12), fixed=(7, 2))


TRACE_LINES = 200


def crash_text(excerpt: str, console_log: str | Path | None) -> str:
    """The crash as the console logged it: from the excerpt's first line (the one the
    console flagged) on, TRACE_LINES long.  A GuestPanic quotes only console.CONTEXT_LINES,
    and a deep call trace (virtio's restore path) runs past them.  The excerpt itself
    when the log cannot be read or does not hold that line."""
    lines = excerpt.split("\n")
    first = lines[1] if len(lines) > 1 else ""
    try:
        log = Path(console_log).read_text(errors="replace").replace("\r", "").split("\n") \
            if console_log and first else []
    except OSError:
        log = []
    for i, line in enumerate(log):
        if line == first.rstrip("\r"):
            return "\n".join(log[i:i + TRACE_LINES])
    return excerpt


# An arm64 L1 host's vCPU that runs the L2 guest stops answering for good: hard LOCKUP
# and RCU-stall reports until the test's bound (docs/known-defects.md, "arm64 L1 host
# under TCG: a vCPU that runs the L2 guest stops answering").  Debian's arm64 config has
# no pseudo-NMI, so an unanswered NMI is what any CPU stuck with interrupts masked shows,
# a hang in KVM's world switch (the code under test) included: the XFAIL is tied to where
# it was seen (a stock 7.2 host, VHE), and it excuses only the lockup and RCU-stall
# reports of the CPU that hung.
def _the_hung_cpus_splat(splat, reason: str) -> bool:
    m = re.search(r"\(hung CPU (\d+)\)", reason)
    if not m:
        return False
    cpu = m[1]
    if splat.kind == "hard-lockup":
        return re.search(rf"hard LOCKUP on cpu {cpu}$", splat.title) is not None
    stalled = [x[1] for ln in splat.lines
               for x in [re.search(r"rcu: \t?\s*(\d+)-\.", ln)] if x]
    return splat.kind == "rcu-stall" and bool(stalled) and set(stalled) == {cpu}


L1_VCPU_HANG = KnownDefect(
    name="L1 vCPU hang while it runs an L2 guest",
    symptom=re.compile(
        r"(?s)watchdog: CPU\d+: Watchdog detected hard LOCKUP on cpu (\d+)\n"
        r".*?After 10 seconds, these CPUS still haven't responded to the NMI: \1\b"),
    summary="an L1 host vCPU stopped answering while it ran the L2 guest (hard LOCKUP, "
            "no NMI response; seen once on a debian:7.2 VHE host under TCG)",
    arch="arm64", accel="tcg", splats=("hard-lockup", "rcu-stall"),
    since=(7, 2), fixed=None, modes=("vhe",), stock_only=True,
    owns_splat=_the_hung_cpus_splat)


# Under TCG, an x86 L2 guest of the reference VMM (nested SVM in the L1 host) takes an
# interrupt inside an interrupt handler, with interrupts masked, and then waits for ever
# on a lock the outer handler holds (docs/known-defects.md, "x86_64 L1 host under TCG
# (nested SVM)").  Seen with the local APIC timer's handler and with the PIT's edge IRQ.
# The symptom is in the VMM's report of where each vCPU stood, named with L1's kallsyms
# (harness.vm.l2.where_it_stood): one vCPU's stack holds the same interrupt-handling
# function twice.
_IN_IRQ = r"(?:tick_periodic|tick_handle_periodic|hrtimer_interrupt|sched_tick|" \
          r"update_process_times|__sysvec_apic_timer_interrupt|handle_edge_irq|" \
          r"handle_fasteoi_irq|__common_interrupt)"
X86_L2_IRQ_IN_IRQ = KnownDefect(
    name="x86 L2 interrupt inside its own interrupt handler (nested SVM under TCG)",
    # a return address (a nonzero offset: +0x0 is a function pointer the stack holds)
    symptom=re.compile(rf"(?m)^vCPU \d+ \(\w+\) at .*\n(?:    .*\n)*?    (?P<f>{_IN_IRQ})"
                       rf"\+0x(?!0\n)[0-9a-f]+\n(?:    .*\n)*?    (?P=f)\+0x(?!0\n)"),
    summary="the x86 L2 guest took an interrupt inside its own interrupt handler and hung "
            "(nested SVM under TCG: seen under QEMU 7.2 and 10.0 since stop 35; at stop 40 "
            "4 of 9 one-vCPU L2 boots of 7.2 on the local APIC timer, 4 of 21 L2 boots of "
            "6.1, 6.12 and 7.2 on the PIT)",
    arch="x86_64", accel="tcg")


def explained_splats(xfail_reason: str) -> set[str]:
    """The splat kinds that the known defect an XFAIL names includes in its symptom."""
    return {k for d in KNOWN for k in d.splats if d.summary in xfail_reason}


def explains(xfail_reason: str, splat) -> bool:
    """Whether `splat` is part of the occurrence of the known defect the XFAIL names:
    of a kind in its symptom and, where the defect says which, its own report."""
    return any(d.summary in xfail_reason and splat.kind in d.splats and
               (d.owns_splat is None or d.owns_splat(splat, xfail_reason)) for d in KNOWN)


def _judge(d: KnownDefect, text: str, where: str, release: str | None, mode: str | None,
           stock: bool) -> None:
    """XFAIL naming `d` where it was seen, else FAIL naming it as a possible cause."""
    m = d.symptom.search(text.replace("\r", ""))
    cpu = f" (hung CPU {m[1]})" if m and m.groups() and d.owns_splat else ""
    why = d.out_of_scope(release, mode, stock)
    if why is None:
        pytest.xfail(f"known kernel defect: {d.summary}{cpu} ({d.doc}; {where})")
    pytest.fail(f"the symptom of the known defect \"{d.name}\" ({d.doc}), a possible "
                f"cause, but not excused here: {why} ({where})", pytrace=False)


def _kernel_of(m) -> tuple[str | None, bool]:
    k = getattr(m, "kernel", None)
    return getattr(k, "release", None), getattr(k, "debian", None) is not None


@contextlib.contextmanager
def xfail_on(m, *defects: KnownDefect, mode: str | None = None) -> Iterator[None]:
    """Turn a guest crash that shows one of `defects` into an XFAIL naming it, when the
    machine's kernel (the crashing one) is where the defect was seen; else a FAIL
    naming it as a possible cause."""
    try:
        yield
    except GuestPanic as e:
        profile = getattr(m, "profile", None)
        arch, accel = getattr(profile, "arch", None), getattr(profile, "accelerator", None)
        text = crash_text(str(e), getattr(m, "console_log", None))
        release, stock = _kernel_of(m)
        for d in defects:
            if d.matches(text, arch, accel):
                _judge(d, text, str(m.console_log), release, mode, stock)
        raise


def xfail_if_seen(text: str, arch: str, where: str, *defects: KnownDefect,
                  release: str | None = None, mode: str | None = None,
                  stock: bool = True, accel: str | None = None) -> None:
    """The same, for a console the test reads itself (an L2 guest's, the L1 host's
    while its VMM runs): the first of `defects` whose whole symptom is in `text` (under
    `accel`, when given) XFAILs or FAILs as above.  `release`, `mode`, `stock`: the
    crashing kernel's (the L2 guest's for its own console, the L1 host's for L1's); a
    defect tied to releases needs `release`."""
    for d in defects:
        if d.matches(text, arch, accel):
            _judge(d, text, where, release, mode, stock)


# An arm64 L1 host's KVM finds its own vCPU state inconsistent when the vCPU thread is
# scheduled back in (preempted in vcpu_load(), or from schedule() in the run loop):
# KVM_BUG_ON(SYSREGS_ON_CPU) in kvm_vcpu_load_debug(), an
# internal assertion no VMM can trip legitimately; KVM then marks the VM dead
# (docs/known-defects.md, "KVM_BUG_ON in kvm_vcpu_load_debug").  It excuses only that
# WARNING, on the kind of host where it was seen.
L1_KVM_LOAD_DEBUG_BUG = KnownDefect(
    name="KVM_BUG_ON in kvm_vcpu_load_debug on an arm64 L1 host",
    symptom=re.compile(r"WARNING: arch/arm64/kvm/debug\.c:\d+ at kvm_vcpu_load_debug\+"),
    summary="the L1 host's KVM hit KVM_BUG_ON(SYSREGS_ON_CPU) in kvm_vcpu_load_debug as "
            "its vCPU thread was scheduled back in (debian:7.2 VHE hosts under TCG, each "
            "time in the PSCI 1.2 round trip: 2 of 3 default runs at stop 38)",
    arch="arm64", accel="tcg", splats=("warning",),
    since=(7, 2), fixed=None, modes=("vhe",), stock_only=True,
    owns_splat=lambda splat, reason: "kvm_vcpu_load_debug" in getattr(splat, "title", ""))

KNOWN = (VIRTIO_NET_FROZEN_XMIT, VIRTIO_NET_RESTORE_SLAB, TRANS_PGD_RESTORE, L1_VCPU_HANG,
         L1_KVM_LOAD_DEBUG_BUG)
# what an arm64 L1 host's own console can show while it runs an L2 guest
L1_HOST_DEFECTS = (L1_VCPU_HANG, L1_KVM_LOAD_DEBUG_BUG)
