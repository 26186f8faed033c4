"""The arm64 backend of the reference VMM: boots an arm64 Linux Image on /dev/kvm on
the board of board.py (vGICv3, PL011, PL031, an optional pmem region) and does the
VMM's side of PSCI (psci_policy.py).

    vmm = make(kernel, initrd, bootargs, Policy(...), outdir)    # a vmm.core.Core
    vmm.setup(); result = vmm.run(); vmm.close()
"""

from __future__ import annotations

import errno
from pathlib import Path

from ...kvm import arm64, uapi
from ..bus import MMIO
from ..core import Core, MiB
from ..policy import CapAbsent, Policy, VmmError
from . import board, gic, loader
from .devices import Pl011, Pl031
from .fdt import to_dtb
from .loader import load_kernel
from .psci_policy import Psci

__all__ = ["Arm64Backend", "load_kernel", "make"]


class Arm64Backend:
    def __init__(self, kernel: bytes, initrd: bytes, bootargs: str, policy: Policy,
                 pmem: str | None = None):
        if policy.pmem_mib and not pmem:
            raise VmmError("a pmem region needs a backing file")
        self.hdr = loader.parse(kernel[:64])
        self.kernel, self.initrd, self.bootargs = kernel, initrd, bootargs
        self.policy, self.pmem = policy, pmem
        self.ram_size = policy.ram_mib * MiB
        self.psci_version = ""

    def setup(self, core: Core) -> None:
        p = self.policy
        vm = core.open_vm()
        self.ram = vm.add_memory(0, board.RAM, self.ram_size)
        if p.pmem_mib:
            assert self.pmem, "__init__ refused pmem_mib without a file"
            vm.add_file_memory(1, board.PMEM, self.pmem, p.pmem_mib * MiB)
        self.uart = Pl011(core.console_out, lambda level: arm64.spi(vm, board.UART.intid, level))
        self.rtc = Pl031(lambda level: arm64.spi(vm, board.RTC.intid, level),
                         on_event=lambda name, **f: core.log.add(name, **f))
        for region, dev in ((board.UART, self.uart), (board.RTC, self.rtc)):
            core.bus.add(MMIO, region.base, region.size, region.name, dev)
        has_cap = vm.check_extension(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND) > 0
        if p.system_suspend_cap:
            if not has_cap:
                raise CapAbsent("KVM_CAP_ARM_SYSTEM_SUSPEND absent: this host KVM cannot "
                                "forward PSCI SYSTEM_SUSPEND to the VMM")
            vm.enable_cap(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND)
        features: dict[int, tuple[int, ...]] = {}
        left_on = p.vcpus - 1 if p.vcpu_left_on else None
        for n in range(p.vcpus):
            v = vm.create_vcpu(n)
            off = n and n != left_on
            feats = (uapi.KVM_ARM_VCPU_PSCI_0_2,) + ((uapi.KVM_ARM_VCPU_POWER_OFF,) if off else ())
            arm64.vcpu_init(v, *feats)
            features[n] = feats
        self._psci_version(vm.vcpus[0])
        gic.setup(vm)
        self._load(vm.vcpus[0])
        if left_on is not None:
            self._park(vm, vm.vcpus[left_on])
        self.psci = Psci(core, p.on_suspend, range(board.RAM, board.RAM + self.ram_size),
                         features, self.rtc, fault=p.fault)
        core.log.add("setup", vcpus=p.vcpus, ram_mib=p.ram_mib, psci_version=self.psci_version,
                     system_suspend_cap=p.system_suspend_cap, host_has_cap=has_cap,
                     on_suspend=p.on_suspend, system_event_data=vm.kvm.system_event_data,
                     pmem_mib=p.pmem_mib, pmem=self.pmem, fault=p.fault,
                     vcpu_left_on=left_on)

    def _psci_version(self, boot) -> None:
        if self.policy.psci_version:
            want = arm64.psci_version(*self.policy.psci_version)
            default = boot.get_reg(uapi.KVM_REG_ARM_PSCI_VERSION)
            try:
                boot.set_reg(uapi.KVM_REG_ARM_PSCI_VERSION, want)
            except OSError as e:
                raise CapAbsent(f"this host KVM refuses PSCI version {arm64.version_str(want)} "
                                f"({errno.errorcode.get(e.errno or 0, e.errno)}); its PSCI version "
                                f"is {arm64.version_str(default)}") from None
        self.psci_version = arm64.version_str(boot.get_reg(uapi.KVM_REG_ARM_PSCI_VERSION))

    def _load(self, boot) -> None:
        at = loader.place(self.hdr, len(self.kernel), len(self.initrd), self.ram_size)
        self.ram[at.kernel:at.kernel + len(self.kernel)] = self.kernel
        self.ram[at.initrd:at.initrd + len(self.initrd)] = self.initrd
        layout = board.Layout(self.ram_size, self.policy.vcpus, self.bootargs,
                              (board.RAM + at.initrd, board.RAM + at.initrd + len(self.initrd)),
                              pmem_size=self.policy.pmem_mib * MiB)
        dtb = to_dtb(board.device_tree(layout))
        self.ram[at.dtb:at.dtb + len(dtb)] = dtb
        boot.set_reg(uapi.ARM64_PC, board.RAM + at.kernel)
        boot.set_reg(uapi.arm64_x(0), board.RAM + at.dtb)
        for n in (1, 2, 3):
            boot.set_reg(uapi.arm64_x(n), 0)

    def _park(self, vm, v) -> None:
        """A self-test's core that is not OFF: RUNNABLE from the start, sleeping in a WFI
        loop (KVM blocks it in KVM_RUN: it costs nothing) in a page the guest never sees."""
        page = vm.add_memory(2, board.PARK, board.PARK_SIZE)
        loop = b"".join(w.to_bytes(4, "little") for w in (arm64.WFI, arm64.b(-4)))
        page[:len(loop)] = loop
        v.set_reg(uapi.ARM64_PC, board.PARK)

    def handle_exit(self, core: Core, v, ex) -> bool:
        if ex.reason != "SYSTEM_EVENT":
            return False
        self.psci.system_event(v, ex)
        return True

    def stop(self, core: Core) -> None:
        self.rtc.close()

    def where(self, v) -> dict:
        return {"pc": hex(v.get_reg(uapi.ARM64_PC)), "mp_state": v.mp_state}

    def report(self) -> dict:
        return {"psci_version": self.psci_version,
                "system_suspend_cap": self.policy.system_suspend_cap,
                "fault": self.policy.fault}


def make(kernel: bytes, initrd: bytes, bootargs: str, policy: Policy,
         outdir: Path | None = None, kvm_path: str = "/dev/kvm",
         pmem: str | None = None) -> Core:
    """A reference VMM for this Image: the core with the arm64 backend."""
    return Core(Arm64Backend(kernel, initrd, bootargs, policy, pmem), policy, outdir,
                kvm_path=kvm_path)
