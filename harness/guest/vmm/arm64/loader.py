"""The arm64 Image loader (Documentation/arch/arm64/booting.rst): the header the VMM
checks before it loads a kernel, and where the Image, the initrd and the DTB go in RAM."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..policy import VmmError

MiB = 1 << 20

MAGIC = 0x644D5241                  # "ARM\x64" at offset 0x38
HEADER = struct.Struct("<II QQQ QQQ II")   # code0 code1 text_offset image_size flags
                                           # res2 res3 res4 magic res5


class NotAnImage(ValueError):
    pass


@dataclass(frozen=True)
class Arm64Image:
    text_offset: int
    image_size: int          # bytes the kernel needs from its load address (incl. bss)
    flags: int

    @property
    def little_endian(self) -> bool:
        return not self.flags & 1


def parse(head: bytes, what: str = "the kernel") -> Arm64Image:
    """The header of an uncompressed arm64 Image (pure)."""
    if len(head) < HEADER.size:
        raise NotAnImage(f"{what}: {len(head)} bytes, shorter than an arm64 Image header")
    if head[:2] == b"\x1f\x8b":
        raise NotAnImage(f"{what}: gzip data (a Debian vmlinuz); give the uncompressed Image")
    if head[:2] == b"MZ" and head[0x38:0x3C] != struct.pack("<I", MAGIC):
        raise NotAnImage(f"{what}: a PE/EFI file but not an arm64 Linux Image")
    fields = HEADER.unpack_from(head)
    if fields[8] != MAGIC:
        raise NotAnImage(f"{what}: no arm64 Image magic at 0x38 (found {head[0x38:0x3C]!r})")
    img = Arm64Image(text_offset=fields[2], image_size=fields[3], flags=fields[4])
    if not img.little_endian:
        raise NotAnImage(f"{what}: a big-endian arm64 Image")
    return img


def load_kernel(path: str) -> bytes:
    """The Image from a file or a block device (read to its end: the padding of a
    disk lands in the kernel's bss, which it clears)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise VmmError(f"cannot read the kernel {path}: {e.strerror}") from None
    try:
        parse(data[:64], path)
    except NotAnImage as e:
        raise VmmError(str(e)) from None
    return data


@dataclass(frozen=True)
class Placement:
    """Offsets into RAM (pure)."""
    kernel: int
    initrd: int
    dtb: int


def place(hdr: Arm64Image, kernel_len: int, initrd_len: int, ram_size: int) -> Placement:
    """Image at text_offset (from a 2 MiB aligned base), the initrd after its
    image_size, the DTB in the last 2 MiB (booting.rst: 8-byte aligned, at most 2 MiB)."""
    k_at = hdr.text_offset
    k_end = k_at + max(hdr.image_size, kernel_len)
    i_at = (k_end + 2 * MiB - 1) & ~(2 * MiB - 1)
    dtb_at = ram_size - 2 * MiB
    if i_at + initrd_len > dtb_at:
        raise VmmError(f"{ram_size // MiB} MiB of RAM cannot hold a "
                       f"{k_end // MiB} MiB kernel and a {initrd_len // MiB} MiB initrd")
    return Placement(k_at, i_at, dtb_at)
