"""x86 KVM from stdlib Python: registers, the port-I/O exit, a 16-bit encoder, and a
vCPU that starts in real mode at a given address.

The smallest x86 guest there is: no paging, no descriptor tables, no irqchip.  A vCPU
comes out of KVM_CREATE_VCPU in real mode at the reset vector (CS base 0xffff0000);
moving CS to base 0 and RIP to the code is all it takes to run a few instructions,
and every port access and every access to an address no memory slot covers exits to
userspace (api.rst: KVM_EXIT_IO, KVM_EXIT_MMIO), HLT too while there is no in-kernel
irqchip (KVM_EXIT_HLT)."""

from __future__ import annotations

import fcntl
import struct

from . import uapi

# ---------------------------------------------------------------- uAPI (arch/x86/include/uapi/asm/kvm.h)
REGS = struct.Struct("<18Q")       # rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
SEGMENT = struct.Struct("<QIH10B")  # base, limit, selector, type present dpl db s l g
                                    # avl unusable padding: 24 bytes
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
DTABLE = struct.Struct("<QH6x")     # base, limit, padding[3]
SREGS_SIZE = 8 * SEGMENT.size + 2 * DTABLE.size + 7 * 8 + 4 * 8   # 312
CS_OFFSET = 0                       # cs is the first segment of struct kvm_sregs

KVM_SET_TSS_ADDR = uapi._IO(0x47)
KVM_GET_REGS = uapi._IOR(0x81, REGS.size)
KVM_SET_REGS = uapi._IOW(0x82, REGS.size)
KVM_GET_SREGS = uapi._IOR(0x83, SREGS_SIZE)
KVM_SET_SREGS = uapi._IOW(0x84, SREGS_SIZE)

# Outside any slot the tiny guests use: VMX needs three pages below 4 GiB for the
# real-mode TSS (api.rst, KVM_SET_TSS_ADDR); SVM accepts and ignores it.  Below 2 GiB
# because fcntl.ioctl passes an integer argument as a C int.
TSS_ADDR = 0x7FFF_D000


def out_values(vcpu, ex) -> list[int]:
    """The values an OUT (or OUTS: `count` of them) wrote, from a decoded IO exit."""
    raw = vcpu.io_data(ex)
    return [int.from_bytes(raw[i:i + ex.len], "little") for i in range(0, len(raw), ex.len)]


def complete_in(vcpu, ex, *values: int) -> None:
    """Hand KVM the values of the IN that just exited, each cut to the access size."""
    mask = (1 << (8 * ex.len)) - 1
    vcpu.complete_io_in(ex, b"".join((v & mask).to_bytes(ex.len, "little") for v in values))


def set_tss_addr(vm) -> None:
    fcntl.ioctl(vm.fd, KVM_SET_TSS_ADDR, TSS_ADDR)


def get_regs(vcpu) -> dict[str, int]:
    buf = bytearray(REGS.size)
    fcntl.ioctl(vcpu.fd, KVM_GET_REGS, buf)
    return dict(zip(REG_NAMES, REGS.unpack(buf)))


def set_regs(vcpu, **values: int) -> None:
    regs = get_regs(vcpu)
    regs.update(values)
    fcntl.ioctl(vcpu.fd, KVM_SET_REGS, REGS.pack(*(regs[n] for n in REG_NAMES)))


def real_mode_at(vcpu, address: int) -> None:
    """Start `vcpu` (fresh from KVM_CREATE_VCPU: real mode) at physical `address`
    (< 64 KiB): CS base and selector 0, IP `address`, RFLAGS only its fixed bit 1."""
    if not 0 <= address < 0x1_0000:
        raise ValueError(f"{address:#x}: real mode with CS 0 reaches the first 64 KiB only")
    sregs = bytearray(SREGS_SIZE)
    fcntl.ioctl(vcpu.fd, KVM_GET_SREGS, sregs)
    _base, limit, _selector, *attrs = SEGMENT.unpack_from(sregs, CS_OFFSET)
    SEGMENT.pack_into(sregs, CS_OFFSET, 0, limit, 0, *attrs)
    fcntl.ioctl(vcpu.fd, KVM_SET_SREGS, bytes(sregs))
    set_regs(vcpu, rip=address, rflags=0x2)


TRANSLATION = struct.Struct("<QQBBB5x")   # linear, physical, valid, writeable, usermode
KVM_TRANSLATE = uapi._IOC(uapi._IOC_READ | uapi._IOC_WRITE, 0x85, TRANSLATION.size)
# Where the kernel image lies in its virtual address space (Documentation/arch/x86/
# x86_64/mm.rst: "kernel text mapping", 512 MiB up to the modules' 1520 MiB)
KERNEL_IMAGE = (0xFFFF_FFFF_8000_0000, 0xFFFF_FFFF_A000_0000)
PAGE = 4096


def translate(vcpu, linear: int) -> int | None:
    """KVM_TRANSLATE: the guest physical address of `linear` in the vCPU's current
    page tables, None where it is not mapped."""
    buf = bytearray(TRANSLATION.pack(linear, 0, 0, 0, 0))
    fcntl.ioctl(vcpu.fd, KVM_TRANSLATE, buf)
    _, physical, valid, _, _ = TRANSLATION.unpack(buf)
    return physical if valid else None


def stack_text(words: bytes, limit: int = 24) -> list[str]:
    """The words of a stack that point into the kernel image, in stack order: a raw
    trace, as the kernel's own `?` entries are (pure)."""
    lo, hi = KERNEL_IMAGE
    out = []
    for (w,) in struct.iter_unpack("<Q", words[:len(words) // 8 * 8]):
        if lo <= w < hi:
            out.append(hex(w))
            if len(out) == limit:
                break
    return out


def read_stack(rsp: int, ram, to_physical, size: int = 1024) -> bytes:
    """Up to `size` bytes of the stack from `rsp`, page by page through `to_physical`
    (KVM_TRANSLATE: `translate`), from the guest's RAM (an mmap at guest physical 0);
    short where a page is not mapped or not in RAM (pure, given to_physical)."""
    out = b""
    while len(out) < size:
        at = rsp + len(out)
        gpa = to_physical(at)
        n = min(size - len(out), PAGE - at % PAGE)
        if gpa is None or gpa + n > len(ram):
            break
        out += bytes(ram[gpa:gpa + n])
    return out


def state(vcpu) -> dict:
    """rip, rax, rdx and MP_STATE: what the report of a stuck vCPU shows."""
    out: dict = {"vcpu": vcpu.id}
    try:
        regs = get_regs(vcpu)
        out.update({n: hex(regs[n]) for n in ("rip", "rax", "rdx")})
        out["mp_state"] = vcpu.mp_state
    except OSError as e:
        out["error"] = e.strerror
    return out


# ---------------------------------------------------------------- 16-bit encoder

class Code16:
    """The few real-mode instructions the tiny guests need, encoded by hand (operand
    size 16 by default; 0x66 selects 32).  Memory operands are absolute offsets in DS,
    which is 0, so an offset is a guest physical address."""

    def __init__(self) -> None:
        self.code = bytearray()
        self.labels: dict[str, int] = {}

    def _emit(self, *parts: bytes) -> Code16:
        for p in parts:
            self.code += p
        return self

    @staticmethod
    def _w(v: int) -> bytes:
        return (v & 0xFFFF).to_bytes(2, "little")

    def label(self, name: str) -> Code16:
        self.labels[name] = len(self.code)
        return self

    def mov_dx(self, imm: int) -> Code16:
        return self._emit(b"\xba", self._w(imm))

    def mov_cx(self, imm: int) -> Code16:
        return self._emit(b"\xb9", self._w(imm))

    def mov_a(self, size: int, imm: int) -> Code16:
        """mov al|ax|eax, imm"""
        return self._emit({1: b"\xb0" + bytes([imm & 0xFF]), 2: b"\xb8" + self._w(imm),
                           4: b"\x66\xb8" + (imm & 0xFFFF_FFFF).to_bytes(4, "little")}[size])

    def out_dx(self, size: int) -> Code16:
        """out dx, al|ax|eax"""
        return self._emit({1: b"\xee", 2: b"\xef", 4: b"\x66\xef"}[size])

    def in_dx(self, size: int) -> Code16:
        """in al|ax|eax, dx"""
        return self._emit({1: b"\xec", 2: b"\xed", 4: b"\x66\xed"}[size])

    def store(self, size: int, addr: int, imm: int) -> Code16:
        """mov byte|word [addr], imm"""
        op = {1: b"\xc6\x06", 2: b"\xc7\x06"}[size]
        return self._emit(op, self._w(addr), (imm & ((1 << (8 * size)) - 1))
                          .to_bytes(size, "little"))

    def load_a(self, size: int, addr: int) -> Code16:
        """mov al|ax, [addr]"""
        return self._emit({1: b"\xa0", 2: b"\xa1"}[size], self._w(addr))

    def loop(self, label: str) -> Code16:
        """loop label (dec cx; jnz): the target lies within 128 bytes back"""
        rel = self.labels[label] - (len(self.code) + 2)
        if not -128 <= rel < 0:
            raise ValueError(f"loop to {label}: {rel} bytes is out of reach")
        return self._emit(b"\xe2", bytes([rel & 0xFF]))

    def hlt(self) -> Code16:
        return self._emit(b"\xf4")

    def assemble(self) -> bytes:
        return bytes(self.code)


# ---------------------------------------------------------------- a Linux-capable VM

KVM_GET_SUPPORTED_CPUID = uapi._IOC(uapi._IOC_READ | uapi._IOC_WRITE, 0x05, 8)
KVM_SET_CPUID2 = uapi._IOW(0x90, 8)
KVM_CREATE_IRQCHIP = uapi._IO(0x60)
KVM_CREATE_PIT2 = uapi._IOW(0x77, 64)
CPUID_ENTRY = struct.Struct("<7I12x")     # function index flags eax ebx ecx edx, padding[3]
CPUID_MAX_ENTRIES = 256
# struct kvm_sregs: 8 segments, gdt, idt, then cr0 cr2 cr3 cr4 cr8 efer apic_base
GDT_OFFSET = 8 * SEGMENT.size
CR_OFFSET = GDT_OFFSET + 2 * DTABLE.size
CR0, CR3, CR4, EFER = (CR_OFFSET + 8 * i for i in (0, 2, 3, 5))


def supported_cpuid(kvm) -> bytes:
    """KVM_GET_SUPPORTED_CPUID: struct kvm_cpuid2 as KVM filled it, for KVM_SET_CPUID2."""
    buf = bytearray(8 + CPUID_MAX_ENTRIES * CPUID_ENTRY.size)
    struct.pack_into("<I", buf, 0, CPUID_MAX_ENTRIES)
    fcntl.ioctl(kvm.fd, KVM_GET_SUPPORTED_CPUID, buf)
    (n,) = struct.unpack_from("<I", buf, 0)
    return bytes(buf[:8 + n * CPUID_ENTRY.size])


TSC_DEADLINE_TIMER = 1 << 24          # CPUID leaf 1 ECX: the local APIC's TSC-deadline mode


def cpuid_for_vcpu(cpuid2: bytes, apic_id: int, hide_leaf1_ecx: int = 0) -> bytes:
    """KVM's supported CPUID with this vCPU's APIC ID where CPUID reports one: leaf 1
    EBX[31:24] and the x2APIC ID of leaves 0xB and 0x1F (EDX); the leaf 1 ECX bits of
    `hide_leaf1_ecx` cleared."""
    buf = bytearray(cpuid2)
    (n,) = struct.unpack_from("<I", buf, 0)
    for i in range(n):
        off = 8 + i * CPUID_ENTRY.size
        fn, index, flags, eax, ebx, ecx, edx = CPUID_ENTRY.unpack_from(buf, off)
        if fn == 1:
            ebx = (ebx & 0x00FF_FFFF) | (apic_id << 24)
            ecx &= ~hide_leaf1_ecx
        elif fn in (0xB, 0x1F):
            edx = apic_id
        CPUID_ENTRY.pack_into(buf, off, fn, index, flags, eax, ebx, ecx, edx)
    return bytes(buf)


def set_cpuid(vcpu, cpuid2: bytes) -> None:
    buf = bytearray(cpuid2)          # longer than 1024 bytes: fcntl passes it in place
    fcntl.ioctl(vcpu.fd, KVM_SET_CPUID2, buf)


def create_irqchip(vm) -> None:
    """The in-kernel PIC, IOAPIC and local APICs (before any vCPU), and the PIT."""
    fcntl.ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0)
    fcntl.ioctl(vm.fd, KVM_CREATE_PIT2, bytes(64))


def long_mode(vcpu, cr3: int, gdt_base: int, gdt_limit: int, code, data) -> None:
    """64-bit mode with paging: CS/DS/ES/FS/GS/SS from the flat GDT's descriptors."""
    sregs = bytearray(SREGS_SIZE)
    fcntl.ioctl(vcpu.fd, KVM_GET_SREGS, sregs)
    for i, name in enumerate(SEGMENTS[:6]):
        seg = code if name == "cs" else data
        SEGMENT.pack_into(sregs, i * SEGMENT.size, 0, 0xFFFF_FFFF, seg.selector, seg.type,
                          1, 0, seg.db, 1, seg.long, 1, 0, 0, 0)
    DTABLE.pack_into(sregs, GDT_OFFSET, gdt_base, gdt_limit)
    cr0, = struct.unpack_from("<Q", sregs, CR0)
    struct.pack_into("<Q", sregs, CR0, cr0 | 0x8000_0011)   # PE, ET, PG
    struct.pack_into("<Q", sregs, CR3, cr3)
    struct.pack_into("<Q", sregs, CR4, 1 << 5)              # PAE
    struct.pack_into("<Q", sregs, EFER, (1 << 8) | (1 << 10))   # LME, LMA
    fcntl.ioctl(vcpu.fd, KVM_SET_SREGS, bytes(sregs))
