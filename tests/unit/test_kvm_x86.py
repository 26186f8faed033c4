"""harness.guest.kvm.x86 against the kernel's own x86 headers, kvm_run.io decoding, and the
16-bit encoder against binutils' disassembler.

Golden: tests/unit/golden/uapi/kvm_x86_uapi.json (what kvm_x86_uapi.c compiles to with the
host's gcc) and tests/unit/golden/x86/code16.txt (objdump -m i8086 of the program below);
regenerate both with GUESTPM_REGOLD=1."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import cgolden
import pytest

from harness.guest import x86io
from harness.guest.kvm import uapi, vm, x86

GOLDEN = Path(__file__).parent / "golden"


def test_uapi_matches_the_kernel_headers():
    golden = cgolden.values(GOLDEN / "uapi" / "kvm_x86_uapi.c", "gcc", "quad")
    regs = dict(zip(x86.REG_NAMES, range(0, 8 * len(x86.REG_NAMES), 8)))
    ours = {
        "KVM_SET_TSS_ADDR": x86.KVM_SET_TSS_ADDR, "KVM_GET_REGS": x86.KVM_GET_REGS,
        "KVM_SET_REGS": x86.KVM_SET_REGS, "KVM_GET_SREGS": x86.KVM_GET_SREGS,
        "KVM_SET_SREGS": x86.KVM_SET_SREGS, "SIZEOF_kvm_regs": x86.REGS.size,
        "SIZEOF_kvm_sregs": x86.SREGS_SIZE, "SIZEOF_kvm_segment": x86.SEGMENT.size,
        "kvm_regs_rip": regs["rip"], "kvm_regs_rflags": regs["rflags"], "kvm_regs_rdx": regs["rdx"],
        "kvm_sregs_cs": x86.CS_OFFSET, "kvm_segment_selector": 12, "kvm_segment_type": 14,
        "kvm_sregs_gdt": x86.GDT_OFFSET, "kvm_sregs_cr0": x86.CR0, "kvm_sregs_cr3": x86.CR3,
        "kvm_sregs_cr4": x86.CR4, "kvm_sregs_efer": x86.EFER,
        "SIZEOF_kvm_cpuid_entry2": x86.CPUID_ENTRY.size,
        "KVM_GET_SUPPORTED_CPUID": x86.KVM_GET_SUPPORTED_CPUID, "KVM_SET_CPUID2": x86.KVM_SET_CPUID2,
        "KVM_CREATE_IRQCHIP": x86.KVM_CREATE_IRQCHIP, "KVM_CREATE_PIT2": x86.KVM_CREATE_PIT2,
        "KVM_TRANSLATE": x86.KVM_TRANSLATE, "SIZEOF_kvm_translation": x86.TRANSLATION.size,
        "kvm_translation_physical_address": 8, "kvm_translation_valid": 16,
    }
    assert ours == golden
    # the segment layout the two offsets above name, as x86.SEGMENT packs it
    packed = x86.SEGMENT.pack(0x1122, 0xFFFF, 0xABCD, 3, 1, 0, 0, 1, 0, 0, 0, 0, 0)
    assert packed[12:14] == b"\xcd\xab" and packed[14] == 3


class _Vcpu:
    """What out_values/complete_in use of a vCPU: its kvm_run page, through vm.Vcpu's
    own io_data/complete_io_in."""
    def __init__(self):
        self.run_page = bytearray(4096)

    io_data = vm.Vcpu.io_data
    complete_io_in = vm.Vcpu.complete_io_in


def test_io_exit_values_out_and_in():
    v = _Vcpu()
    uapi.RUN_EXIT_REASON.pack_into(v.run_page, 0, uapi.KVM_EXIT_IO)
    uapi.RUN_IO.pack_into(v.run_page, uapi.UNION_OFFSET, uapi.KVM_EXIT_IO_OUT, 2, 0x510, 3, 0xFF8)
    v.run_page[0xFF8:0xFFE] = bytes.fromhex("3412 7856 bc9a")
    ex = vm.decode_run(v.run_page)
    assert (ex.reason, ex.is_write, ex.len, ex.port, ex.count) == ("IO", True, 2, 0x510, 3)
    assert x86.out_values(v, ex) == [0x1234, 0x5678, 0x9ABC]
    uapi.RUN_IO.pack_into(v.run_page, uapi.UNION_OFFSET, uapi.KVM_EXIT_IO_IN, 1, 0x510, 1, 0x800)
    ex = vm.decode_run(v.run_page)
    x86.complete_in(v, ex, 0x1A5)        # wider than the access: only its byte goes in
    assert v.run_page[0x800:0x802] == b"\xa5\x00"


def _program() -> bytes:
    """Every instruction form the cases use."""
    c = x86.Code16().mov_dx(x86io.PORT).mov_cx(200)
    for size in (1, 2, 4):
        c.mov_a(size, 0x89AB_CDEF).out_dx(size).in_dx(size)
    c.store(1, 0xE000, 0x77).store(2, 0xE002, 0x1234).load_a(1, 0xE004).load_a(2, 0xE006)
    return c.label("top").out_dx(1).loop("top").hlt().assemble()


def _disassemble(code: bytes, tmp: Path) -> str:
    f = tmp / "code.bin"
    f.write_bytes(code)
    out = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i8086", str(f)],
                         check=True, capture_output=True, text=True).stdout
    return "\n".join(re.sub(r"\s+", " ", ln.split("\t", 2)[-1]).strip()
                     for ln in out.splitlines() if re.match(r"\s+[0-9a-f]+:\t", ln)) + "\n"


def test_code16_is_what_the_disassembler_reads(tmp_path):
    golden = GOLDEN / "x86" / "code16.txt"
    if os.environ.get("GUESTPM_REGOLD"):
        golden.write_text(_disassemble(_program(), tmp_path))
    if not shutil.which("objdump"):
        pytest.skip("objdump (binutils) is not installed")
    assert _disassemble(_program(), tmp_path) == golden.read_text()


def test_loop_out_of_reach_and_real_mode_bounds_are_refused():
    c = x86.Code16().label("far")
    for _ in range(70):
        c.out_dx(2).out_dx(4)        # 1 + 2 bytes each: 210 bytes
    with pytest.raises(ValueError, match="out of reach"):
        c.loop("far")
    with pytest.raises(ValueError, match="first 64 KiB"):
        x86.real_mode_at(None, 0x1_0000)


def test_a_stuck_vcpus_stack_is_read_across_pages_and_reduced_to_kernel_text():
    """The raw trace a hung x86 L2 vCPU reports: the stack read page by page through
    KVM_TRANSLATE (here a map), stopping at an unmapped page, and only the words that
    point into the kernel image kept (mm.rst's kernel text mapping)."""
    import struct
    ram = bytearray(0x4000)
    words = [0xFFFF_FFFF_8135_473E, 0x1234, 0xFFFF_8880_0000_1000,   # text, a number, direct map
             0xFFFF_FFFF_814B_BB00, 0xFFFF_FFFF_C000_1000]            # text, a module
    ram[0x2FF0:0x3000] = struct.pack("<2Q", *words[:2])               # the stack's first page
    ram[0x1000:0x1018] = struct.pack("<3Q", *words[2:])               # ...continues on another
    pages = {0xFFFF_C900_0000_0000: 0x2000, 0xFFFF_C900_0000_1000: 0x1000}
    rsp = 0xFFFF_C900_0000_0FF0

    def to_physical(a):
        base = pages.get(a & ~0xFFF)
        return None if base is None else base + (a & 0xFFF)

    got = x86.read_stack(rsp, ram, to_physical, size=0x2000)
    assert len(got) == 0x1010                    # the third page is not mapped
    assert got[:16] == struct.pack("<2Q", *words[:2])
    assert got[16:40] == struct.pack("<3Q", *words[2:])
    assert x86.stack_text(got) == ["0xffffffff8135473e", "0xffffffff814bbb00"]
    assert x86.stack_text(got, limit=1) == ["0xffffffff8135473e"]
