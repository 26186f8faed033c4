"""Feasibility probe of an x86 L2: a Linux bzImage booted under this host's KVM to its
/init, with one vCPU, the in-kernel irqchip and PIT, a 16550 on port 0x3f8 and no
firmware tables (acpi=off).  It measures how long the guest takes to print its /init's
first report and what the run cost in exits; it is the step before an x86 backend of
the reference VMM, not that backend.

    python3 -m harness.guest.vmm.x86_64.probe --kernel BZIMAGE [--out DIR] [--timeout S]

Prints one JSON line: outcome (init: /init reported and the guest ended; timeout | silent
| shutdown | error otherwise), the seconds to the first console byte and to /init's first
report, exit counts by reason, and the console's tail."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from ...kvm import x86
from ...kvm.vm import Kvm, VcpuHang
from .. import l2init
from . import boot
from .cmos import Cmos
from .uart import Uart16550

COM1, COM1_IRQ, RTC = 0x3F8, 4, 0x70
# Every byte on the UART and every PCI config access is an exit to this Python VMM
# (3-4 ms each under TCG): quiet, no early console, no PCI (no early quirk and AGP
# aperture scans of config space).  noxsave: KVM's supported CPUID leaf 0xD disagrees
# with the XSAVE size the guest computes under nested TCG (a WARN, then an oops).
APPEND = "console=ttyS0 quiet acpi=off pci=off noxsave nokaslr reboot=k panic=-1 rdinit=/init"
# how an L2 run ends: /init's last report, or the kernel halting at power-off (without
# ACPI nothing can switch the VM off: "Power off not available: System halted instead")
ENDS = (l2init.PREFIX.encode() + b" done", b"reboot: Power down", b"System halted")


def run(kernel: bytes, initrd: bytes, append: str, ram_mib: int, timeout: float,
        silent: float, out: Path | None) -> dict:
    img = boot.parse(kernel)
    ram = ram_mib << 20
    cmdline = " ".join(x for x in (APPEND, append) if x)
    initrd_at = boot.initrd_address(img, ram, len(initrd))
    console = bytearray()
    log = open(out / "console.log", "wb", buffering=0) if out else None
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def emit(data: bytes) -> None:
        console.extend(data)
        if log:
            log.write(data)
        if "first_byte" not in marks:
            marks["first_byte"] = time.monotonic() - t0
        if "init" not in marks and l2init.PREFIX.encode() in console[-200:]:
            marks["init"] = time.monotonic() - t0

    exits: Counter = Counter()
    ports: Counter = Counter()
    with Kvm() as kvm, kvm.create_vm() as vm:
        x86.set_tss_addr(vm)
        x86.create_irqchip(vm)
        mem = vm.add_memory(0, 0, ram)
        for addr, page in boot.page_tables().items():
            mem[addr:addr + len(page)] = page
        gdt = boot.gdt()
        mem[boot.GDT_ADDR:boot.GDT_ADDR + len(gdt)] = gdt
        zp = boot.zero_page(img, ram, cmdline, initrd_at, len(initrd))
        mem[boot.ZERO_PAGE:boot.ZERO_PAGE + len(zp)] = zp
        mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + len(cmdline) + 1] = cmdline.encode() + b"\0"
        mem[boot.KERNEL_ADDR:boot.KERNEL_ADDR + len(img.kernel)] = img.kernel
        mem[initrd_at:initrd_at + len(initrd)] = initrd
        uart = Uart16550(emit, lambda level: vm.irq_line(COM1_IRQ, level))
        devices: list[tuple[int, int, Uart16550 | Cmos]] = [(COM1, 8, uart), (RTC, 2, Cmos())]
        vcpu = vm.create_vcpu(0)
        x86.set_cpuid(vcpu, x86.cpuid_for_vcpu(x86.supported_cpuid(kvm), 0))
        x86.long_mode(vcpu, boot.PML4, boot.GDT_ADDR, len(gdt) - 1, boot.CODE64, boot.DATA)
        x86.set_regs(vcpu, rip=img.entry64, rsi=boot.ZERO_PAGE, rflags=0x2)
        outcome, detail = "timeout", ""
        last_out = time.monotonic()
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                break
            if now - last_out > silent:
                outcome = "silent"
                break
            if any(end in console[-200:] for end in ENDS):
                outcome = "ended"
                break
            n = len(console)
            try:
                ex = vcpu.run(1.0)
            except VcpuHang:            # halted or busy inside KVM for a second: go on
                exits["(in KVM 1 s)"] += 1
                continue
            exits[ex.reason] += 1
            if ex.reason == "IO":
                dev = next(((base, d) for base, size, d in devices
                            if base <= ex.port < base + size), None)
                if dev:
                    base, d = dev
                    if ex.is_write:
                        for v in x86.out_values(vcpu, ex):
                            d.write(ex.port - base, v)
                    else:
                        x86.complete_in(vcpu, ex, *(d.read(ex.port - base)
                                                    for _ in range(ex.count)))
                else:
                    ports[f"{'out' if ex.is_write else 'in'} {ex.port:#x}"] += 1
                    if not ex.is_write:         # nothing there: an ISA bus reads all ones
                        x86.complete_in(vcpu, ex, *([0xFFFF_FFFF] * ex.count))
            elif ex.reason == "MMIO":
                if not ex.is_write:
                    vcpu.complete_mmio_read(0xFFFF_FFFF_FFFF_FFFF, ex.len)
            elif ex.reason in ("INTR",):
                pass
            else:
                outcome, detail = ("shutdown" if ex.reason == "SHUTDOWN" else "error",
                                   json.dumps(ex.summary()))
                break
            if len(console) != n:
                last_out = time.monotonic()
        state = x86.state(vcpu)
    if log:
        log.close()
    tail = console.decode(errors="replace").splitlines()[-15:]
    return {"outcome": "init" if outcome == "ended" and "init" in marks else outcome,
            "ended": outcome, "detail": detail,
            "wall_s": round(time.monotonic() - t0, 2),
            "first_byte_s": marks.get("first_byte"), "init_s": marks.get("init"),
            "exits": dict(exits), "other_ports": dict(ports.most_common(12)),
            "vcpu": state, "tail": tail}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m harness.guest.vmm.x86_64.probe",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", required=True, help="bzImage (file or block device)")
    ap.add_argument("--initrd", help="initramfs (default: busybox + the guestpm L2 /init)")
    ap.add_argument("--append", default="guestpm.off=poweroff")
    ap.add_argument("--ram-mib", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--silent", type=float, default=300)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    try:
        with open(a.kernel, "rb") as fh:
            kernel = fh.read()
        initrd = Path(a.initrd).read_bytes() if a.initrd else \
            l2init.initramfs(Path(l2init.BUSYBOX).read_bytes())
        if a.out:
            a.out.mkdir(parents=True, exist_ok=True)
        res = run(kernel, initrd, a.append, a.ram_mib, a.timeout, a.silent, a.out)
    except (boot.BootError, OSError) as e:
        print(f"probe: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0 if res["outcome"] == "init" else 1


if __name__ == "__main__":
    sys.exit(main())
