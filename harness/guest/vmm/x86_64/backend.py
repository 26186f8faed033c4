"""The x86_64 backend of the reference VMM: boots a Linux bzImage on /dev/kvm with the
64-bit boot protocol (boot.py) on a PC reduced to what the L2 kernel needs: KVM's
in-kernel irqchip (8259s, IO-APIC, local APICs) and PIT, a 16550 on COM1, the CMOS
clock, the keyboard controller's reset line and, given a DSDT, ACPI tables (acpi.py)
with their fixed hardware (pm.py).  The core (vmm/core.py) runs it as it runs arm64's.

    vmm = make(kernel, initrd, bootargs, Policy(...), outdir, dsdt=aml)    # a Core
    vmm.setup(); result = vmm.run(); vmm.close()

How a run ends: ACPI S5 written to PM1a_CNT (shutdown), 0xFE to port 0x64 (reset:
reboot=k, also how panic=-1 ends), a triple fault (KVM_EXIT_SHUTDOWN: reset) or, with
no ACPI to power off with, the kernel's "System halted" on the console (shutdown)."""

from __future__ import annotations

import threading
from pathlib import Path

from ...kvm import x86
from .. import l2init
from ..bus import MMIO, PIO, Trap
from ..core import Core, MiB
from ..policy import Policy, VmmError
from . import acpi, boot, i8042
from .cmos import Cmos
from .pm import PmRegisters
from .s2idle import S2idle
from .uart import Uart16550

__all__ = ["APPEND", "X86Backend", "load_kernel", "make"]

COM1, COM1_IRQ, CMOS_PORT = 0x3F8, 4, 0x70
# Every console byte and every port access is an exit to this Python VMM: no PCI (its
# config-space scans), no early console.  noxsave: KVM's supported CPUID leaf 0xD
# disagrees with the XSAVE size the guest computes under nested TCG (a WARN, then an
# oops).  no_timer_check: a loaded TCG host fails the IO-APIC timer check.
APPEND = (f"console=ttyS0 {l2init.CMDLINE} rdinit=/init panic=-1 reboot=k pci=off "
          "noxsave nokaslr no_timer_check")
NO_ACPI = "acpi=off"
# --tick pit: the guest's tick from KVM's PIT through the IO-APIC, not the local APIC
# timer.  `nolapic_timer` alone is not enough: a CPU with the TSC-deadline timer makes
# Linux skip the PIT (apic_needs_pit()), so CPUID hides it, and the guest has no tick
# at all otherwise.  Why a test asks for it: docs/known-defects.md, "x86_64 L1 host
# under TCG".
TICKS = ("lapic", "pit")
PIT_TICK_APPEND = "nolapic_timer"
HALTED = b"System halted"
MAX_RAM_MIB = 3 << 10              # below the IO-APIC and local APIC pages, one slot


def load_kernel(path: str) -> bytes:
    """The bzImage from a file or a block device (the disk's padding follows the
    protected-mode kernel into memory its init_size covers)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise VmmError(f"cannot read the kernel {path}: {e.strerror}") from None
    try:
        boot.parse(data)
    except boot.BootError as e:
        raise VmmError(f"{path}: {e}") from None
    return data


class X86Backend:
    def __init__(self, kernel: bytes, initrd: bytes, bootargs: str, policy: Policy,
                 dsdt: bytes | None = None, power_button_s: float | None = None,
                 s2idle_wake_s: float | None = None, tick: str = "lapic"):
        if policy.pmem_mib:
            raise VmmError("a pmem region is not on the x86_64 backend")
        if policy.psci_version:
            raise VmmError("a PSCI version is arm64's: not on the x86_64 backend")
        if policy.ram_mib > MAX_RAM_MIB:
            raise VmmError(f"{policy.ram_mib} MiB of RAM: {MAX_RAM_MIB} at most")
        try:
            self.img = boot.parse(kernel)
            self.tables = acpi.build(policy.vcpus, acpi.dsdt_from(dsdt)) \
                if dsdt is not None else None
        except (boot.BootError, acpi.AcpiError) as e:
            raise VmmError(str(e)) from None
        if power_button_s is not None and (dsdt is None or power_button_s < 0):
            raise VmmError("a power-button press needs ACPI (a DSDT) and a time >= 0 s")
        if s2idle_wake_s is not None and (dsdt is None or s2idle_wake_s < 0):
            raise VmmError("an s2idle wake needs ACPI (a DSDT) and a time >= 0 s")
        if tick not in TICKS:
            raise VmmError(f"tick {tick!r}: one of {', '.join(TICKS)}")
        self.power_button_s, self.s2idle_wake_s, self.tick = power_button_s, s2idle_wake_s, tick
        if tick == "pit":
            bootargs = f"{bootargs} {PIT_TICK_APPEND}"
        self.timer: threading.Timer | None = None
        self.s2idle: S2idle | None = None
        self.initrd, self.policy = initrd, policy
        self.cmdline = bootargs if self.tables else f"{bootargs} {NO_ACPI}".strip()
        self.ram_size = policy.ram_mib * MiB
        self.initrd_at = self._check_fits()
        self.pm: PmRegisters | None = None
        self.first_byte = False

    def _check_fits(self) -> int:
        try:
            at = boot.initrd_address(self.img, self.ram_size, len(self.initrd))
            boot.zero_page(self.img, self.ram_size, self.cmdline, at, len(self.initrd))
        except boot.BootError as e:
            raise VmmError(str(e)) from None
        return at

    # ---------------------------------------------------------------- set-up
    def setup(self, core: Core) -> None:
        p = self.policy
        vm = core.open_vm()
        x86.set_tss_addr(vm)
        x86.create_irqchip(vm)
        self.ram = vm.add_memory(0, 0, self.ram_size)
        self._load()
        uart = Uart16550(lambda b: self._console(core, b),
                         lambda level: vm.irq_line(COM1_IRQ, level))
        core.bus.add(PIO, COM1, 8, "com1", uart)
        core.bus.add(PIO, CMOS_PORT, 2, "cmos", Cmos())
        core.bus.add(PIO, i8042.STATUS_PORT, 1, "i8042", i8042.ResetPort(
            lambda: core.finish("reset", "keyboard controller reset (0xfe to port 0x64)")))
        if self.tables:
            self.pm = PmRegisters(lambda level: vm.irq_line(acpi.SCI_IRQ, level),
                                  on_sleep=lambda typ: self._sleep(core, typ),
                                  on_event=lambda name, **f: core.log.add(name, **f))
            core.bus.add(PIO, acpi.PM_BASE, acpi.PM_SIZE, "acpi-pm", self.pm)
            pm = self.pm
            self.s2idle = S2idle(core.log.add, lambda: core.snapshot(None),
                                 lambda: pm.raise_gpe(acpi.WAKE_GPE), self.s2idle_wake_s,
                                 p.fault)
            core.bus.add(PIO, acpi.LPS0_PORT, 1, "lps0", Trap(self.s2idle.lps0))
            core.bus.add(MMIO, acpi.VPMC_ADDR, acpi.VPMC_SIZE, "vpmc", Trap(self.s2idle.vpmc))
            if self.power_button_s is not None:
                self.timer = threading.Timer(self.power_button_s, self.pm.raise_power_button)
                self.timer.daemon = True
                self.timer.start()
        cpuid = x86.supported_cpuid(core.kvm)
        for n in range(p.vcpus):
            x86.set_cpuid(vm.create_vcpu(n), x86.cpuid_for_vcpu(
                cpuid, n, x86.TSC_DEADLINE_TIMER if self.tick == "pit" else 0))
        bsp = vm.vcpus[0]           # the others wait for INIT/SIPI in KVM's local APIC
        x86.long_mode(bsp, boot.PML4, boot.GDT_ADDR, len(boot.gdt()) - 1, boot.CODE64,
                      boot.DATA)
        x86.set_regs(bsp, rip=self.img.entry64, rsi=boot.ZERO_PAGE, rflags=0x2)
        core.log.add("setup", arch="x86_64", vcpus=p.vcpus, ram_mib=p.ram_mib,
                     boot_protocol=f"{self.img.version >> 8}.{self.img.version & 0xFF:02}",
                     acpi=bool(self.tables), tick=self.tick,
                     rsdp=hex(self.tables.rsdp_addr) if self.tables else None,
                     cmdline=self.cmdline)

    def _load(self) -> None:
        mem, img = self.ram, self.img
        for addr, page in boot.page_tables().items():
            mem[addr:addr + len(page)] = page
        gdt = boot.gdt()
        mem[boot.GDT_ADDR:boot.GDT_ADDR + len(gdt)] = gdt
        rsdp = 0
        if self.tables:
            for addr, blob in self.tables.blobs.items():
                mem[addr:addr + len(blob)] = blob
            rsdp = self.tables.rsdp_addr
        zp = boot.zero_page(img, self.ram_size, self.cmdline, self.initrd_at,
                            len(self.initrd), rsdp)
        mem[boot.ZERO_PAGE:boot.ZERO_PAGE + len(zp)] = zp
        line = self.cmdline.encode() + b"\0"
        mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + len(line)] = line
        mem[boot.KERNEL_ADDR:boot.KERNEL_ADDR + len(img.kernel)] = img.kernel
        mem[self.initrd_at:self.initrd_at + len(self.initrd)] = self.initrd

    # ---------------------------------------------------------------- events
    def _console(self, core: Core, b: bytes) -> None:
        if not self.first_byte:
            self.first_byte = True
            core.log.add("console-first-byte")
        core.console_out(b)
        if b == b"\n" and HALTED in core.console[-80:]:
            if self.tables:
                core.finish("error", "the kernel halted instead of powering off through "
                                     "ACPI S5")
            else:
                core.finish("shutdown", "the kernel halted: no ACPI (acpi=off) to power "
                                        "off with")

    def _sleep(self, core: Core, slp_typ: int) -> None:
        if slp_typ == acpi.SLP_TYP_S5:
            core.finish("shutdown", f"ACPI S5: SLP_TYP {slp_typ} and SLP_EN in PM1a_CNT")
        else:
            core.finish("error", f"ACPI sleep type {slp_typ} requested: the DSDT offers "
                                 f"S5 ({acpi.SLP_TYP_S5}) only")

    def handle_exit(self, core: Core, v, ex) -> bool:
        if ex.reason == "SHUTDOWN":
            core.log.add("exit", vcpu=v.id, reason=ex.reason, state=x86.state(v))
            core.finish("reset", f"vCPU {v.id}: triple fault (KVM_EXIT_SHUTDOWN)")
            return True
        return False

    def stop(self, core: Core) -> None:
        if self.timer:
            self.timer.cancel()
        if self.s2idle:
            self.s2idle.stop()

    def report(self) -> dict:
        return {"fault": self.policy.fault}

    def where(self, v) -> dict:
        """RIP and MP_STATE, and the kernel-image words on the stack (a raw trace: map
        them with the kernel's symbols; the L2 command line has `nokaslr`)."""
        out = {k: val for k, val in x86.state(v).items() if k != "vcpu"}
        rsp = x86.get_regs(v)["rsp"]
        out["rsp"] = hex(rsp)
        out["stack"] = x86.stack_text(
            x86.read_stack(rsp, self.ram, lambda a: x86.translate(v, a)))
        return out


def make(kernel: bytes, initrd: bytes, bootargs: str, policy: Policy,
         outdir: Path | None = None, kvm_path: str = "/dev/kvm",
         pmem: str | None = None, dsdt: bytes | None = None,
         power_button_s: float | None = None, s2idle_wake_s: float | None = None,
         tick: str = "lapic") -> Core:
    """A reference VMM for this bzImage: the core with the x86_64 backend; with a
    DSDT, ACPI tables and the s2idle traps (s2idle.py); with power_button_s, the power
    button's fixed event that many seconds after set-up (an SCI once the guest has
    enabled it); with s2idle_wake_s, the wake GPE that long after the guest's last
    LPS0 entry call; with tick="pit", the guest ticks from the PIT (TICKS)."""
    if pmem:
        raise VmmError("a pmem region is not on the x86_64 backend")
    return Core(X86Backend(kernel, initrd, bootargs, policy, dsdt, power_button_s,
                           s2idle_wake_s, tick), policy, outdir, kvm_path=kvm_path)
