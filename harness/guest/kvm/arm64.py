"""A tiny aarch64 assembler for guest code, and the PSCI/SMCCC numbers it calls.

No prebuilt binaries, no C: the few instructions a uAPI scenario needs are
encoded here (ARM DDI 0487, A64 base instructions) and checked against GNU as
in tests/unit/test_arm64_asm.py."""

from __future__ import annotations

import struct

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

    def emit(self, *words: int) -> "Asm":
        self.words.extend(words)
        return self

    def mov(self, rd: int, value: int) -> "Asm":
        return self.emit(*mov_imm64(rd, value))

    def b(self, label: str) -> "Asm":
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
