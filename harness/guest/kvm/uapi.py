"""KVM uAPI numbers and struct layouts (include/uapi/linux/kvm.h, arm64 asm/kvm.h).

Stdlib only. Values were read from the 7.2 sources; every one used here has been
stable since 5.19 (SYSTEM_SUSPEND) or 6.13 (SYSTEM_OFF2 flag)."""

from __future__ import annotations

import struct

# ---------------------------------------------------------------- ioctl encoding
# asm-generic/ioctl.h; arm64 and x86_64 both use the generic layout.
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _IOC(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _IO(nr: int) -> int:
    return _IOC(_IOC_NONE, nr, 0)


def _IOW(nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, nr, size)


def _IOR(nr: int, size: int) -> int:
    return _IOC(_IOC_READ, nr, size)


# struct layouts (little endian on both arches guestpm runs on)
USERSPACE_MEMORY_REGION = struct.Struct("<IIQQQ")   # slot, flags, gpa, size, uaddr
ENABLE_CAP = struct.Struct("<II4Q64x")              # cap, flags, args[4], pad[64]
ONE_REG = struct.Struct("<QQ")                      # id, addr
MP_STATE = struct.Struct("<I")
IRQ_LEVEL = struct.Struct("<II")                    # irq, level
VCPU_INIT = struct.Struct("<I7I")                   # target, features[7]
CREATE_DEVICE = struct.Struct("<III")               # type, fd, flags
DEVICE_ATTR = struct.Struct("<IIQQ")                # flags, group, attr, addr

KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_CREATE_VCPU = _IO(0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, USERSPACE_MEMORY_REGION.size)
KVM_IRQ_LINE = _IOW(0x61, IRQ_LEVEL.size)
KVM_RUN = _IO(0x80)
KVM_GET_MP_STATE = _IOR(0x98, MP_STATE.size)
KVM_SET_MP_STATE = _IOW(0x99, MP_STATE.size)
KVM_ENABLE_CAP = _IOW(0xA3, ENABLE_CAP.size)
KVM_GET_ONE_REG = _IOW(0xAB, ONE_REG.size)
KVM_SET_ONE_REG = _IOW(0xAC, ONE_REG.size)
KVM_ARM_VCPU_INIT = _IOW(0xAE, VCPU_INIT.size)
KVM_ARM_PREFERRED_TARGET = _IOR(0xAF, VCPU_INIT.size)
KVM_CREATE_DEVICE = _IOC(_IOC_READ | _IOC_WRITE, 0xE0, CREATE_DEVICE.size)
KVM_SET_DEVICE_ATTR = _IOW(0xE1, DEVICE_ATTR.size)

KVM_API_VERSION = 12

# ---------------------------------------------------------------- capabilities
KVM_CAP_ARM_PSCI_0_2 = 102
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_ARM_SYSTEM_SUSPEND = 216
# 5.18+: kvm_run.system_event has ndata + data[16]; before, `__u32 type; __u64 flags;`,
# with flags where data[0] is now (api.rst: "Previous versions of Linux defined a
# `flags` member in this struct.  The field is now aliased to `data[0]`")
KVM_CAP_SYSTEM_EVENT_DATA = 215

# ---------------------------------------------------------------- kvm_run
KVM_EXIT_NAMES = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT",
    6: "MMIO", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR",
    24: "SYSTEM_EVENT", 28: "ARM_NISV", 39: "MEMORY_FAULT", 41: "ARM_SEA",
}
KVM_EXIT_UNKNOWN, KVM_EXIT_IO, KVM_EXIT_HYPERCALL, KVM_EXIT_MMIO = 0, 2, 3, 6
KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR, KVM_EXIT_INTERNAL_ERROR = 9, 10, 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1      # kvm_run.io.direction

SYSTEM_EVENT_NAMES = {1: "SHUTDOWN", 2: "RESET", 3: "CRASH", 4: "WAKEUP", 5: "SUSPEND",
                      6: "SEV_TERM", 7: "TDX_FATAL"}
KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2 = 1 << 0
KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2 = 1 << 0

RUN_EXIT_REASON = struct.Struct("<8xI")     # offset 8
RUN_IMMEDIATE_EXIT = 1                      # __u8 immediate_exit, polled on KVM_RUN entry
RUN_MMIO_DATA = 32 + 8                      # mmio.data[8]: where a read's value goes
UNION_OFFSET = 32                           # the exit union follows 32 bytes of header
RUN_MMIO = struct.Struct("<Q8sIB")          # phys_addr, data[8], len, is_write
RUN_IO = struct.Struct("<BBHIQ")            # direction, size, port, count, data_offset
RUN_SYSTEM_EVENT = struct.Struct("<II16Q")  # type, ndata, data[16]
RUN_HYPERCALL = struct.Struct("<Q6QQQ")     # nr, args[6], ret, flags
RUN_FAIL_ENTRY = struct.Struct("<QI")       # hardware_entry_failure_reason, cpu
RUN_INTERNAL = struct.Struct("<II16Q")      # suberror, ndata, data[16]

# ---------------------------------------------------------------- MP_STATE
MP_STATE_NAMES = {0: "RUNNABLE", 1: "UNINITIALIZED", 2: "INIT_RECEIVED", 3: "HALTED",
                  4: "SIPI_RECEIVED", 5: "STOPPED", 6: "CHECK_STOP", 7: "OPERATING",
                  8: "LOAD", 9: "AP_RESET_HOLD", 10: "SUSPENDED"}
KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_STOPPED, KVM_MP_STATE_SUSPENDED = 0, 5, 10

# ---------------------------------------------------------------- arm64
KVM_ARM_VCPU_POWER_OFF = 0
KVM_ARM_VCPU_PSCI_0_2 = 2

KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_VCPU_SHIFT, KVM_ARM_IRQ_VCPU2_SHIFT = 24, 16, 28
KVM_ARM_IRQ_TYPE_CPU = 0
KVM_ARM_IRQ_TYPE_SPI = 1          # in-kernel GICv2/v3: irq_id is the INTID, 32..1019

# in-kernel vGICv3 (KVM_CREATE_DEVICE)
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_DEV_ARM_VGIC_GRP_ADDR = 0
KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3
KVM_DEV_ARM_VGIC_GRP_CTRL = 4
KVM_DEV_ARM_VGIC_CTRL_INIT = 0
KVM_VGIC_V3_ADDR_TYPE_DIST = 2       # 64 KiB
KVM_VGIC_V3_ADDR_TYPE_REDIST = 3     # 128 KiB per vCPU
KVM_ARM_IRQ_CPU_IRQ, KVM_ARM_IRQ_CPU_FIQ = 0, 1

KVM_REG_ARM64 = 0x6000000000000000
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16
KVM_REG_ARM_FW = 0x0014 << 16
KVM_REG_ARM_PSCI_VERSION = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW | 0


def arm64_core_reg(byte_offset: int) -> int:
    """ONE_REG id of a field of struct kvm_regs (offset in bytes, counted in u32s)."""
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (byte_offset // 4)


def arm64_sys_reg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG
            | (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2)


def arm64_x(n: int) -> int:
    """x0..x30: struct kvm_regs { struct user_pt_regs { u64 regs[31]; sp; pc; pstate } }."""
    if not 0 <= n <= 30:
        raise ValueError(f"x{n}: arm64 has x0..x30")
    return arm64_core_reg(8 * n)


ARM64_SP = arm64_core_reg(8 * 31)
ARM64_PC = arm64_core_reg(8 * 32)
ARM64_PSTATE = arm64_core_reg(8 * 33)
ARM64_MPIDR_EL1 = arm64_sys_reg(3, 0, 0, 0, 5)
MPIDR_HWID_BITMASK = 0xFF00FFFFFF
