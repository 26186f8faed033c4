"""The aarch64 encoder against GNU as (golden: tests/unit/golden/arm64-asm.txt).

Regenerate with GUESTPM_REGOLD=1 where aarch64-linux-gnu-as is installed
(binutils-aarch64-linux-gnu); the test itself needs no cross tools."""

import os
import subprocess
from pathlib import Path

import pytest

from harness.guest.kvm.arm64 import (
    NOP,
    WFI,
    Asm,
    b,
    hvc,
    ldr_x,
    mov_imm64,
    mov_reg,
    movk,
    movz,
    smc,
    str_x,
)

GOLDEN = Path(__file__).parent / "golden" / "arm64-asm.txt"

CASES = [
    ("movz x0, #0x1234", [movz(0, 0x1234)]),
    ("movz x9, #0x1000, lsl #16", [movz(9, 0x1000, 16)]),
    ("movk x3, #0xffff, lsl #48", [movk(3, 0xFFFF, 48)]),
    ("movk x30, #0x1, lsl #32", [movk(30, 1, 32)]),
    ("hvc #0", [hvc(0)]),
    ("hvc #0x1234", [hvc(0x1234)]),
    ("smc #0", [smc(0)]),
    ("str x0, [x9]", [str_x(0, 9, 0)]),
    ("str x0, [x9, #16]", [str_x(0, 9, 16)]),
    ("str xzr, [x9, #8]", [str_x(31, 9, 8)]),
    ("ldr x1, [x2, #24]", [ldr_x(1, 2, 24)]),
    ("mov x1, x2", [mov_reg(1, 2)]),
    ("wfi", [WFI]),
    ("nop", [NOP]),
    ("b .-8", [b(-8)]),
    ("b .+12", [b(12)]),
    # mov_imm64: the shortest movz/movk sequence the VMM's addresses need
    ("movz x9, #0x1000, lsl #16", mov_imm64(9, 0x1000_0000)),
    ("movz x4, #0x0", mov_imm64(4, 0)),
    ("movz x2, #0x1; movk x2, #0xffff, lsl #32; movk x2, #0xffff, lsl #48",
     mov_imm64(2, 0xFFFF_FFFF_0000_0001)),
]


def _assemble(lines: list[str]) -> list[list[int]]:
    """Each line assembled by GNU as, as 32-bit words."""
    out = []
    for line in lines:
        src = "\n".join(s.strip() for s in line.split(";")) + "\n"
        obj = Path(f"/tmp/guestpm-asm-{os.getpid()}.o")
        subprocess.run(["aarch64-linux-gnu-as", "-o", str(obj), "-"], input=src.encode(),
                       check=True)
        raw = subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text",
                              str(obj), "/dev/stdout"], check=True, capture_output=True).stdout
        obj.unlink()
        out.append([int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)])
    return out


def _golden() -> dict[str, list[int]]:
    if os.environ.get("GUESTPM_REGOLD"):
        words = _assemble([asm for asm, _ in CASES])
        GOLDEN.write_text("".join(f"{asm}\t{' '.join(f'{w:08x}' for w in ws)}\n"
                                  for (asm, _), ws in zip(CASES, words)))
    out = {}
    for line in GOLDEN.read_text().splitlines():
        asm, _, hexwords = line.partition("\t")
        out[asm] = [int(w, 16) for w in hexwords.split()]
    return out


@pytest.mark.parametrize("asm,ours", CASES, ids=[c[0] for c in CASES])
def test_encoding_matches_gnu_as(asm, ours):
    assert [f"{w:08x}" for w in ours] == [f"{w:08x}" for w in _golden()[asm]]


def test_labels_resolve_backwards_and_forwards():
    a = Asm(0x8000_0000)
    a.label("top")
    a.emit(hvc(0)).b("end").b("top")
    a.label("end")
    a.emit(NOP)
    words = [int.from_bytes(a.assemble()[i:i + 4], "little") for i in range(0, 16, 4)]
    assert words == [hvc(0), b(8), b(-8), NOP]
    assert a.addr("end") == 0x8000_000C


@pytest.mark.parametrize("bad", [lambda: str_x(0, 9, 4), lambda: movz(0, 0x10000),
                                 lambda: b(2), lambda: movk(0, 1, 8)])
def test_unencodable_operands_are_refused(bad):
    with pytest.raises(ValueError):
        bad()
