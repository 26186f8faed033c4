"""x86: the kernel under test boots as an L2 guest under its own KVM, through guestpm's VMM.

Inside the x86_64 L1 host (nested SVM), the reference VMM's x86_64 backend
(harness/guest/vmm/x86_64/) loads the same bzImage with the 64-bit boot protocol into
a VM of two vCPUs with the in-kernel irqchip and PIT, a 16550, the CMOS clock and ACPI
tables: the VMM's RSDP, XSDT, FADT and MADT around a DSDT compiled on this host by iasl
(guest-rootfs/acpi/l2_x86_dsdt.asl) that reaches L1 on a disk beside the kernel's.
Evidence: the L2 /init's report of its release and of both CPUs (the MADT is the only
place the second is described), and the power-off the guest asks for through ACPI S5
in the FADT's PM1a control block, as the DSDT's \\_S5 names it.  s2idle through the same
VMM: test_l2_x86_s2idle.py.

Under TCG an L2 boot can hang with a timer interrupt inside its own handler (nested SVM
emulated; docs/known-defects.md): an XFAIL naming it, by where each vCPU stood.
Opt-in (--slow): the x86 L1 host (one boot per target) is shared with
test_l2_x86_s2idle.py."""

from __future__ import annotations

import pytest

from harness.plugin.judging import note
from harness.plugin.known_defects import X86_L2_IRQ_IN_IRQ, xfail_if_seen
from harness.vm import l2

pytestmark = [pytest.mark.e2e, pytest.mark.arch("x86_64"), pytest.mark.slow]

BOUND_S = 600          # the bar: an L2 that needs longer is not feasible here
VCPUS = 2


def test_l2_x86_linux_reaches_its_init_and_powers_off_through_acpi(request, x86_l1, kernel):
    run = x86_l1.run("boot", *l2.x86_vmm_args(x86_l1.machine), "--vcpus", str(VCPUS),
                     append=("guestpm.off=poweroff",), timeout=BOUND_S, silent=BOUND_S)
    res, where = run.result, run.where
    up = next((e for e in res["exits"] if e["event"] == "l2-report"
               and e["text"].startswith("up ")), None)
    stood = l2.where_it_stood(x86_l1.machine, res) if not up else ""
    xfail_if_seen(stood, "x86_64", where, X86_L2_IRQ_IN_IRQ, release=kernel.release,
                  accel=x86_l1.machine.profile.accelerator)
    assert up, f"the L2 kernel did not reach its /init: {res['outcome']} after " \
               f"{res['elapsed_s']} s, {res['detail']}; tail:\n{res['console_tail']}\n" \
               f"{stood}({where})"
    assert f"release={kernel.release}" in up["text"], \
        f"the L2 /init reported another kernel: {up['text']} ({where})"
    assert f"cpus={VCPUS}" in up["text"], \
        f"the L2 kernel did not bring up the MADT's {VCPUS} CPUs: {up['text']} ({where})"
    assert res["outcome"] == "shutdown" and res["detail"].startswith("ACPI S5"), \
        f"the L2 kernel did not power off through ACPI S5: {res['outcome']}, " \
        f"{res['detail']} ({where})"
    first = next((e["t"] for e in res["exits"] if e["event"] == "console-first-byte"), None)
    note(request, f"x86 L2 {kernel.release} under L1's KVM, ACPI, {VCPUS} vCPUs: first "
                  f"console byte {first} s, /init {up['t']:.1f} s, power-off (S5) "
                  f"{res['elapsed_s']:.1f} s, {sum(res['pio_exits'].values())} port and "
                  f"{sum(res['mmio_exits'].values())} MMIO exits to the VMM")
