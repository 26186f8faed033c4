"""The x86 64-bit boot protocol (harness/guest/vmm/x86_64/boot.py) and the 16550 of the
x86 L2 backend: pure, on a bzImage header made here and on a real one's golden facts."""

import struct

import pytest

from harness.guest.vmm.x86_64 import boot
from harness.guest.vmm.x86_64.uart import Uart16550


def bzimage(setup_sects=27, version=0x020F, xloadflags=0x7F, body=b"\x90" * 4096) -> bytes:
    """A bzImage as the kernel's build lays it out: setup sectors with the header at
    0x1f1, then the protected-mode kernel."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[boot.SETUP_SECTS] = setup_sects
    struct.pack_into("<H", setup, boot.BOOT_FLAG, 0xAA55)
    setup[0x200:0x202] = b"\xeb\x6a"          # jmp over the header: it ends at 0x26c
    setup[boot.HEADER_MAGIC:boot.HEADER_MAGIC + 4] = b"HdrS"
    struct.pack_into("<H", setup, boot.VERSION, version)
    setup[boot.LOADFLAGS] = boot.LOADED_HIGH
    struct.pack_into("<I", setup, boot.INITRD_ADDR_MAX, 0x7FFF_FFFF)
    struct.pack_into("<H", setup, boot.XLOADFLAGS, xloadflags)
    struct.pack_into("<I", setup, boot.CMDLINE_SIZE, 2047)
    struct.pack_into("<I", setup, boot.INIT_SIZE, 0x0200_0000)
    return bytes(setup) + body


def test_header_and_load_layout():
    img = boot.parse(bzimage())
    assert (img.version, len(img.setup), len(img.kernel)) == (0x020F, 28 * 512, 4096)
    assert (img.initrd_addr_max, img.cmdline_size, img.init_size) == (0x7FFF_FFFF, 2047, 32 << 20)
    assert img.entry64 == 0x10_0200


@pytest.mark.parametrize("image, why", [
    (b"\x7fELF" + bytes(0x400), "no 'HdrS' setup header"),
    (bzimage(version=0x020B), "boot protocol 2.11 < 2.12"),
    (bzimage(xloadflags=0), "no 64-bit entry point"),
    (bzimage(body=b""), "truncated bzImage"),
])
def test_what_cannot_boot_says_why(image, why):
    with pytest.raises(boot.BootError, match=why.replace(".", r"\.").replace("(", r"\(")):
        boot.parse(image)


def test_zero_page_carries_the_header_the_loader_fields_and_e820():
    img = boot.parse(bzimage())
    ram = 256 << 20
    initrd = boot.initrd_address(img, ram, 3 << 20)
    assert initrd == ram - (3 << 20) and initrd % 4096 == 0
    zp = boot.zero_page(img, ram, "console=ttyS0", initrd, 3 << 20)
    assert zp[boot.HEADER_MAGIC:boot.HEADER_MAGIC + 4] == b"HdrS"
    assert zp[0x26C] == 0                       # past the header: not copied
    assert zp[boot.TYPE_OF_LOADER] == 0xFF
    assert zp[boot.LOADFLAGS] == boot.LOADED_HIGH | boot.CAN_USE_HEAP
    assert struct.unpack_from("<I", zp, boot.CMD_LINE_PTR)[0] == boot.CMDLINE_ADDR
    assert struct.unpack_from("<II", zp, boot.RAMDISK_IMAGE) == (initrd, 3 << 20)
    n = zp[boot.E820_ENTRIES]
    table = [boot.E820_ENTRY.unpack_from(zp, boot.E820_TABLE + 20 * i) for i in range(n)]
    assert table == [(0, 0x9FC00, 1), (0x9FC00, 0x60400, 2), (0x100000, ram - 0x100000, 1)]


def test_initrd_and_command_line_bounds():
    img = boot.parse(bzimage())
    with pytest.raises(boot.BootError, match="does not fit"):
        boot.initrd_address(img, 64 << 20, 40 << 20)
    with pytest.raises(boot.BootError, match="2046 at most"):
        boot.zero_page(img, 256 << 20, "x" * 2047, 0, 0)


def test_long_mode_structures():
    gdt = struct.unpack("<4Q", boot.gdt())
    assert gdt[boot.BOOT_CS // 8] == 0x00AF_9B00_0000_FFFF     # L=1, P, S, code, execute/read
    assert gdt[boot.BOOT_DS // 8] == 0x00CF_9300_0000_FFFF     # D/B=1, P, S, data, read/write
    pages = boot.page_tables()
    assert struct.unpack_from("<Q", pages[boot.PML4])[0] == boot.PDPT | 3
    assert struct.unpack_from("<Q", pages[boot.PDPT])[0] == boot.PD | 3
    pd = struct.unpack("<512Q", pages[boot.PD])
    assert pd[0] == 0x83 and pd[511] == (511 << 21) | 0x83


def test_uart_sends_passes_the_8250_probe_and_raises_thri():
    sent, irq = [], []
    u = Uart16550(sent.append, irq.append)
    u.write(7, 0xA5)
    assert u.read(7) == 0xA5                     # scratch register
    u.write(4, 0x1A)                             # loopback, RTS, OUT2
    assert u.read(6) & 0xF0 == 0x90              # CTS, DCD
    u.write(0, ord("x"))                         # looped back: not sent
    u.write(4, 0x0B)
    u.write(2, 0x01)                             # FCR: FIFOs on
    assert u.read(2) == 0xC1                     # 16550A, no interrupt
    u.write(1, 0x02)                             # THRI on while empty: raised at once
    assert irq == [True] and u.read(2) == 0xC2 and irq == [True, False]
    u.write(0, ord("o"))
    u.write(0, ord("k"))
    assert sent == [b"o", b"k"] and u.read(5) == 0x60 and irq[-1] is True
    u.write(3, 0x80)                             # DLAB: divisor latch
    u.write(0, 0x0C)
    assert u.read(0) == 0x0C and sent == [b"o", b"k"]


def test_cmos_reads_the_clock_in_bcd_with_uip_clear():
    from harness.guest.vmm.x86_64.cmos import Cmos
    c = Cmos(lambda: 1_764_763_199)            # 2025-12-03 11:59:59 UTC, a Wednesday
    regs = {}
    for index in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0A, 0x0B, 0x0D):
        c.write(0, 0x80 | index)               # bit 7: the NMI mask, not the index
        regs[index] = c.read(1)
    assert regs == {0x00: 0x59, 0x02: 0x59, 0x04: 0x11, 0x06: 0x04, 0x07: 0x03, 0x08: 0x12,
                    0x09: 0x25, 0x32: 0x20, 0x0A: 0x26, 0x0B: 0x02, 0x0D: 0x80}


def test_cpuid_carries_the_vcpus_apic_id():
    from harness.guest.kvm import x86
    entries = [(0, 0, 0, 0x1F, 0, 0, 0), (1, 0, 0, 0x806F8, 0x0103_0800, 0, 0),
               (0xB, 0, 1, 1, 2, 0x100, 7), (0xB, 1, 1, 0, 0, 0x201, 7)]
    buf = struct.pack("<II", len(entries), 0) + b"".join(x86.CPUID_ENTRY.pack(*e) for e in entries)
    out = x86.cpuid_for_vcpu(buf, 3)
    got = [x86.CPUID_ENTRY.unpack_from(out, 8 + 40 * i) for i in range(len(entries))]
    assert got[0] == entries[0]
    assert got[1][4] == 0x0303_0800                    # leaf 1 EBX[31:24]
    assert [g[6] for g in got[2:]] == [3, 3]           # x2APIC ID in every 0xB sub-leaf
    entries[1] = (1, 0, 0, 0x806F8, 0x0103_0800, 0x81F8_3203, 0)   # TSC-deadline on
    buf = struct.pack("<II", len(entries), 0) + b"".join(x86.CPUID_ENTRY.pack(*e) for e in entries)
    out = x86.cpuid_for_vcpu(buf, 0, x86.TSC_DEADLINE_TIMER)
    assert x86.CPUID_ENTRY.unpack_from(out, 8 + 40)[5] == 0x80F8_3203   # leaf 1 ECX bit 24
