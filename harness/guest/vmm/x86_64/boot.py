"""The x86 64-bit boot protocol (Documentation/arch/x86/boot.rst), pure: a bzImage's setup
header, the zero page (boot_params) with its e820 map, command line and initrd, and the
long-mode state the kernel's 64-bit entry point expects (flat GDT with __BOOT_CS 0x10 and
__BOOT_DS 0x18, an identity map, paging and long mode on, RSI = the zero page).

Everything here returns bytes or plain values: the backend copies them into guest memory
and registers (unit-tested on golden data, no /dev/kvm needed)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ---------------------------------------------------------------- guest physical layout
# The low 1 MiB holds the boot structures; the kernel loads at 1 MiB (its default
# load address) and the initrd as high as the protocol allows below the end of RAM.
GDT_ADDR = 0x0500
ZERO_PAGE = 0x7000
PML4, PDPT, PD = 0x9000, 0xA000, 0xB000   # identity map of the first 1 GiB, 2 MiB pages
CMDLINE_ADDR = 0x2_0000
KERNEL_ADDR = 0x10_0000
EBDA = 0x9_FC00                            # usable low memory ends here (e820 type 1)
IDENTITY_MAPPED = 1 << 30

BOOT_CS, BOOT_DS = 0x10, 0x18
E820_RAM, E820_RESERVED = 1, 2

# ---------------------------------------------------------------- the setup header
# offsets in the bzImage and in struct boot_params (the header is copied at 0x1f1)
SETUP_SECTS, BOOT_FLAG, HEADER_MAGIC, VERSION = 0x1F1, 0x1FE, 0x202, 0x206
TYPE_OF_LOADER, LOADFLAGS = 0x210, 0x211
RAMDISK_IMAGE, RAMDISK_SIZE, HEAP_END_PTR, CMD_LINE_PTR = 0x218, 0x21C, 0x224, 0x228
INITRD_ADDR_MAX, KERNEL_ALIGNMENT, RELOCATABLE = 0x22C, 0x230, 0x234
XLOADFLAGS, CMDLINE_SIZE, INIT_SIZE = 0x236, 0x238, 0x260
E820_ENTRIES, E820_TABLE, E820_MAX = 0x1E8, 0x2D0, 128
ACPI_RSDP_ADDR = 0x070                     # boot_params.acpi_rsdp_addr (zero-page.rst)
E820_ENTRY = struct.Struct("<QQI")

LOADED_HIGH, CAN_USE_HEAP = 0x01, 0x80
XLF_KERNEL_64 = 0x01
LOADER_UNDEFINED = 0xFF
MIN_VERSION = 0x020C                       # 2.12: xloadflags, the 64-bit entry point


class BootError(ValueError):
    """The image cannot be booted this way: the message says why, in one line."""


@dataclass(frozen=True)
class BzImage:
    version: int              # boot protocol version, e.g. 0x20f
    setup: bytes              # the real-mode setup, the header inside it
    kernel: bytes             # the protected-mode part: loaded at KERNEL_ADDR
    initrd_addr_max: int
    cmdline_size: int
    init_size: int            # memory the kernel needs from its load address on

    @property
    def entry64(self) -> int:
        """The 64-bit entry point: 0x200 past the protected-mode load address."""
        return KERNEL_ADDR + 0x200


def u8(b: bytes, off: int) -> int:
    return b[off]


def u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def parse(image: bytes) -> BzImage:
    """A bzImage's header: BootError for anything else (an ELF vmlinux, an arm64 Image,
    a protocol older than 2.12, a kernel without a 64-bit entry point)."""
    if len(image) < 0x300 or image[HEADER_MAGIC:HEADER_MAGIC + 4] != b"HdrS":
        raise BootError("not a bzImage: no 'HdrS' setup header at 0x202")
    if u16(image, BOOT_FLAG) != 0xAA55:
        raise BootError("not a bzImage: boot flag 0x1fe is not 0xaa55")
    version = u16(image, VERSION)
    if version < MIN_VERSION:
        raise BootError(f"boot protocol {version >> 8}.{version & 0xFF:02} < 2.12: "
                        "no 64-bit entry point to call")
    if not u16(image, XLOADFLAGS) & XLF_KERNEL_64:
        raise BootError("the kernel has no 64-bit entry point (xloadflags bit 0 clear)")
    sects = u8(image, SETUP_SECTS) or 4
    setup_len = (sects + 1) * 512
    if len(image) <= setup_len:
        raise BootError(f"truncated bzImage: {len(image)} bytes, setup alone is {setup_len}")
    return BzImage(version, image[:setup_len], image[setup_len:],
                   u32(image, INITRD_ADDR_MAX), u32(image, CMDLINE_SIZE),
                   u32(image, INIT_SIZE))


def e820(ram_bytes: int) -> list[tuple[int, int, int]]:
    """(address, size, type): low memory up to the EBDA, the BIOS area reserved, then
    everything from 1 MiB to the end of RAM."""
    return [(0, EBDA, E820_RAM), (EBDA, 0x10_0000 - EBDA, E820_RESERVED),
            (0x10_0000, ram_bytes - 0x10_0000, E820_RAM)]


def initrd_address(img: BzImage, ram_bytes: int, size: int) -> int:
    """Page-aligned, as high as the kernel allows (initrd_addr_max) and RAM holds, above
    what the kernel itself needs (init_size from its load address)."""
    top = min(ram_bytes, img.initrd_addr_max + 1, IDENTITY_MAPPED)
    addr = (top - size) & ~0xFFF
    if addr < KERNEL_ADDR + img.init_size:
        raise BootError(f"a {size >> 20} MiB initrd does not fit in {ram_bytes >> 20} MiB of "
                        f"RAM above the kernel's {img.init_size >> 20} MiB")
    return addr


def zero_page(img: BzImage, ram_bytes: int, cmdline: str, initrd_addr: int,
              initrd_size: int, rsdp_addr: int = 0) -> bytes:
    """struct boot_params: the image's setup header, what the loader fills in, e820,
    and where the ACPI RSDP is (0: none given; the kernel scans the BIOS area)."""
    if len(cmdline) >= img.cmdline_size:
        raise BootError(f"command line of {len(cmdline)} bytes: the kernel takes "
                        f"{img.cmdline_size - 1} at most")
    zp = bytearray(4096)
    end = HEADER_MAGIC + u8(img.setup, 0x201)    # the jump at 0x200 skips the header
    zp[SETUP_SECTS:end] = img.setup[SETUP_SECTS:end]
    zp[TYPE_OF_LOADER] = LOADER_UNDEFINED
    zp[LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP
    struct.pack_into("<H", zp, HEAP_END_PTR, 0xFE00)
    struct.pack_into("<I", zp, CMD_LINE_PTR, CMDLINE_ADDR)
    struct.pack_into("<II", zp, RAMDISK_IMAGE, initrd_addr, initrd_size)
    struct.pack_into("<Q", zp, ACPI_RSDP_ADDR, rsdp_addr)
    table = e820(ram_bytes)
    zp[E820_ENTRIES] = len(table)
    for i, entry in enumerate(table):
        E820_ENTRY.pack_into(zp, E820_TABLE + i * E820_ENTRY.size, *entry)
    return bytes(zp)


def gdt() -> bytes:
    """null, null, __BOOT_CS (64-bit code), __BOOT_DS (flat data)."""
    return struct.pack("<4Q", 0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF)


def page_tables() -> dict[int, bytes]:
    """address -> page: PML4[0] -> PDPT[0] -> PD of 512 present, writable 2 MiB pages."""
    present_rw, large = 0x3, 0x80
    return {PML4: struct.pack("<Q", PDPT | present_rw).ljust(4096, b"\0"),
            PDPT: struct.pack("<Q", PD | present_rw).ljust(4096, b"\0"),
            PD: b"".join(struct.pack("<Q", (i << 21) | present_rw | large) for i in range(512))}


# control registers and EFER of a vCPU in 64-bit mode with paging
CR0_PE, CR0_ET, CR0_PG = 1 << 0, 1 << 4, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


@dataclass(frozen=True)
class Segment:
    selector: int
    type: int         # 0xb: code, execute/read, accessed; 0x3: data, read/write, accessed
    db: int
    long: int


CODE64 = Segment(BOOT_CS, 0xB, 0, 1)
DATA = Segment(BOOT_DS, 0x3, 1, 0)
