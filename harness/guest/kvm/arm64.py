"""KVM on arm64: the vCPU and interrupt calls only arm64 has, the PSCI/SMCCC numbers,
and a tiny aarch64 assembler for guest code.

No prebuilt binaries, no C: the few instructions a uAPI scenario needs are
encoded here (ARM DDI 0487, A64 base instructions) and checked against GNU as
in tests/unit/test_arm64_asm.py.  The calls take the arch-neutral objects of
kvm/vm.py (Vm, Vcpu), which know nothing of arm64."""

from __future__ import annotations

import errno
import fcntl
import struct
from typing import TYPE_CHECKING

from . import uapi

if TYPE_CHECKING:
    from .vm import Vcpu, Vm

# ---------------------------------------------------------------- PSCI (ARM DEN0022)
PSCI_VERSION = 0x84000000
PSCI_CPU_OFF = 0x84000002
PSCI_CPU_ON64 = 0xC4000003
PSCI_AFFINITY_INFO64 = 0xC4000004
PSCI_SYSTEM_OFF = 0x84000008
PSCI_SYSTEM_RESET = 0x84000009
PSCI_FEATURES = 0x8400000A
PSCI_SYSTEM_SUSPEND = 0x8400000E
PSCI_SYSTEM_SUSPEND64 = 0xC400000E
PSCI_SYSTEM_RESET2 = 0x84000012
PSCI_SYSTEM_RESET2_64 = 0xC4000012
PSCI_SYSTEM_OFF2 = 0x84000015
PSCI_SYSTEM_OFF2_64 = 0xC4000015

PSCI_OFF2_TYPE_HIBERNATE_OFF = 1 << 0

PSCI_SUCCESS = 0
PSCI_NOT_SUPPORTED = -1
PSCI_INVALID_PARAMS = -2
PSCI_DENIED = -3
PSCI_INTERNAL_FAILURE = -6
PSCI_INVALID_ADDRESS = -9
PSCI_RET_NAMES = {0: "SUCCESS", -1: "NOT_SUPPORTED", -2: "INVALID_PARAMETERS", -3: "DENIED",
                  -4: "ALREADY_ON", -5: "ON_PENDING", -6: "INTERNAL_FAILURE",
                  -7: "NOT_PRESENT", -8: "DISABLED", -9: "INVALID_ADDRESS"}
AFFINITY_ON, AFFINITY_OFF = 0, 1


def psci_version(major: int, minor: int) -> int:
    return (major << 16) | minor


def version_str(v: int) -> str:
    return f"{v >> 16}.{v & 0xFFFF}"


def s64(v: int) -> int:
    """x0 as the signed value PSCI returns."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def ret_name(v: int) -> str:
    v = s64(v)
    return PSCI_RET_NAMES.get(v, hex(v) if v >= 0 else str(v))


# ---------------------------------------------------------------- encoder
XZR = 31     # as Rt of a store / Rm of ORR; as a base register 31 means SP instead


def _reg(r: int) -> int:
    if not 0 <= r <= 31:
        raise ValueError(f"register {r}: 0..31")
    return r


def movz(rd: int, imm16: int, shift: int = 0) -> int:
    if shift not in (0, 16, 32, 48) or not 0 <= imm16 <= 0xFFFF:
        raise ValueError(f"movz #{imm16:#x}, lsl #{shift}")
    return 0xD2800000 | (shift // 16) << 21 | imm16 << 5 | _reg(rd)


def movk(rd: int, imm16: int, shift: int = 0) -> int:
    if shift not in (0, 16, 32, 48) or not 0 <= imm16 <= 0xFFFF:
        raise ValueError(f"movk #{imm16:#x}, lsl #{shift}")
    return 0xF2800000 | (shift // 16) << 21 | imm16 << 5 | _reg(rd)


def mov_imm64(rd: int, value: int) -> list[int]:
    """movz + movk for each non-zero half-word (always at least the movz)."""
    value &= 0xFFFFFFFFFFFFFFFF
    halves = [(value >> s) & 0xFFFF for s in (0, 16, 32, 48)]
    first = next((i for i, h in enumerate(halves) if h), 0)
    words = [movz(rd, halves[first], 16 * first)]
    words += [movk(rd, h, 16 * i) for i, h in enumerate(halves) if h and i != first]
    return words


def hvc(imm16: int = 0) -> int:
    return 0xD4000002 | (imm16 & 0xFFFF) << 5


def smc(imm16: int = 0) -> int:
    return 0xD4000003 | (imm16 & 0xFFFF) << 5


def str_x(rt: int, rn: int, offset: int = 0) -> int:
    """STR Xt, [Xn, #offset] (unsigned offset, multiple of 8)."""
    if offset % 8 or not 0 <= offset < 8 * 4096:
        raise ValueError(f"str offset {offset}")
    return 0xF9000000 | (offset // 8) << 10 | _reg(rn) << 5 | _reg(rt)


def ldr_x(rt: int, rn: int, offset: int = 0) -> int:
    """LDR Xt, [Xn, #offset] (unsigned offset, multiple of 8)."""
    if offset % 8 or not 0 <= offset < 8 * 4096:
        raise ValueError(f"ldr offset {offset}")
    return 0xF9400000 | (offset // 8) << 10 | _reg(rn) << 5 | _reg(rt)


def mov_reg(rd: int, rm: int) -> int:
    """MOV Xd, Xm (ORR Xd, XZR, Xm)."""
    return 0xAA0003E0 | _reg(rm) << 16 | _reg(rd)


def b(offset: int) -> int:
    """B to PC + offset (bytes, ±128 MiB)."""
    if offset % 4 or not -(1 << 27) <= offset < (1 << 27):
        raise ValueError(f"branch offset {offset}")
    return 0x14000000 | ((offset >> 2) & 0x3FFFFFF)


WFI = 0xD503207F
NOP = 0xD503201F


class Asm:
    """Guest code at `base` with labels: append encoded words, resolve branches last."""

    def __init__(self, base: int):
        self.base = base
        self.words: list[int | tuple[str, str]] = []
        self.labels: dict[str, int] = {}

    def here(self) -> int:
        return self.base + 4 * len(self.words)

    def label(self, name: str) -> int:
        if name in self.labels:
            raise ValueError(f"label {name} defined twice")
        self.labels[name] = self.here()
        return self.labels[name]

    def emit(self, *words: int) -> Asm:
        self.words.extend(words)
        return self

    def mov(self, rd: int, value: int) -> Asm:
        return self.emit(*mov_imm64(rd, value))

    def b(self, label: str) -> Asm:
        self.words.append(("b", label))
        return self

    def addr(self, label: str) -> int:
        return self.labels[label]

    def assemble(self) -> bytes:
        out = []
        for i, w in enumerate(self.words):
            if isinstance(w, tuple):
                pc = self.base + 4 * i
                if w[1] not in self.labels:
                    raise ValueError(f"undefined label {w[1]}")
                w = b(self.labels[w[1]] - pc)
            out.append(w)
        return struct.pack(f"<{len(out)}I", *out)


# ---------------------------------------------------------------- KVM calls
def preferred_target(vm: Vm) -> int:
    buf = bytearray(uapi.VCPU_INIT.size)
    fcntl.ioctl(vm.fd, uapi.KVM_ARM_PREFERRED_TARGET, buf)
    return uapi.VCPU_INIT.unpack(buf)[0]


def vcpu_init(vcpu: Vcpu, *features: int) -> None:
    """KVM_ARM_VCPU_INIT with these feature bits: also how a vCPU is reset."""
    words = [0] * 7
    for f in features:
        words[f // 32] |= 1 << (f % 32)
    fcntl.ioctl(vcpu.fd, uapi.KVM_ARM_VCPU_INIT,
                uapi.VCPU_INIT.pack(preferred_target(vcpu.vm), *words))


def vcpu_state(vcpu: Vcpu) -> dict:
    """pc, x0..x3 and MP_STATE: what a report of a stuck vCPU shows."""
    out: dict = {"vcpu": vcpu.id}
    try:
        out["pc"] = hex(vcpu.get_reg(uapi.ARM64_PC))
        for n in range(4):
            out[f"x{n}"] = hex(vcpu.get_reg(uapi.arm64_x(n)))
        out["mp_state"] = vcpu.mp_state
    except OSError as e:
        out["error"] = errno.errorcode.get(e.errno or 0, str(e.errno))
    return out


def spi(vm: Vm, intid: int, level: bool) -> None:
    """Drive a shared peripheral interrupt of the in-kernel vGIC (INTID 32..1019)."""
    vm.irq_line((uapi.KVM_ARM_IRQ_TYPE_SPI << uapi.KVM_ARM_IRQ_TYPE_SHIFT) | intid, level)


def cpu_irq(vm: Vm, vcpu_id: int, level: bool, fiq: bool = False) -> None:
    """Drive a vCPU's IRQ (or FIQ) input: the userspace-irqchip path, no vGIC."""
    irq = ((uapi.KVM_ARM_IRQ_TYPE_CPU << uapi.KVM_ARM_IRQ_TYPE_SHIFT)
           | ((vcpu_id & 0xFF) << uapi.KVM_ARM_IRQ_VCPU_SHIFT)
           | (((vcpu_id >> 8) & 0xF) << uapi.KVM_ARM_IRQ_VCPU2_SHIFT)
           | (uapi.KVM_ARM_IRQ_CPU_FIQ if fiq else uapi.KVM_ARM_IRQ_CPU_IRQ))
    vm.irq_line(irq, level)
