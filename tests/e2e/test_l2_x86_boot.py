"""x86: the kernel under test boots as an L2 guest under its own KVM, through guestpm's VMM.

The first step of an x86 reference VMM (issue 31's feasibility): inside the x86_64 L1
host (nested SVM), harness.guest.vmm.x86_64.probe loads the same bzImage with the 64-bit
boot protocol into a VM of one vCPU with the in-kernel irqchip and PIT, a 16550 and a
CMOS RTC, no firmware tables, and runs it until the L2 /init reports and the kernel
halts.  Evidence: the L2 /init's report of its release on the L2 console, and the
guest's end.  What an x86 L2 needs next (ACPI tables with LPS0 and HYPE0001, a GPE for
vfio ACPI Notify) is not here yet.

Opt-in (--slow): one more L1 boot per x86 target."""

from __future__ import annotations

import json

import pytest

from harness.image import disks
from harness.plugin.judging import attach_machine, note

pytestmark = [pytest.mark.e2e, pytest.mark.arch("x86_64"), pytest.mark.slow]

BOUND_S = 600          # the bar: an L2 that needs longer is not feasible here


def test_l2_x86_linux_reaches_its_init_under_the_hosts_kvm(request, machine_pool, kernel):
    image = disks.payload(kernel.image.read_bytes(), "l2-image")
    m = machine_pool.get((), tag="l2-x86", qemu_args=disks.virtio_disk_args(
        image, node="l2k", fmt="raw", readonly=True))
    attach_machine(request, m)
    r = m.ssh.run("cd /opt/guestpm && python3 -m harness.guest.vmm.x86_64.probe "
                  f"--kernel /dev/vda --out /tmp/l2-x86 --timeout {BOUND_S} "
                  f"--silent {BOUND_S}", timeout=BOUND_S + 60)
    console = m.ssh.run("cat /tmp/l2-x86/console.log", timeout=60).output
    (m.workdir / "l2-x86-console.log").write_text(console)
    assert r.status in (0, 1) and r.output.strip(), f"the probe failed: {r.stderr[-2000:]}"
    res = json.loads(r.output.strip().splitlines()[-1])
    where = f"L2 console: {m.workdir / 'l2-x86-console.log'}"
    assert res["outcome"] == "init", \
        f"the L2 kernel did not reach its /init and end: {res['ended']} after " \
        f"{res['wall_s']} s, {res['detail']}; vCPU {res['vcpu']}; tail:\n" + \
        "\n".join(res["tail"]) + f"\n({where})"
    assert f"release={kernel.release}" in console, f"the L2 /init reported another kernel ({where})"
    note(request, f"x86 L2 {kernel.release} under L1's KVM: first console byte "
                  f"{res['first_byte_s']:.1f} s, /init {res['init_s']:.1f} s, "
                  f"{sum(res['exits'].values())} exits to the VMM")
