"""The arm64 Linux Image header (Documentation/arch/arm64/booting.rst): what the VMM
checks before loading a kernel, and where it loads it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
