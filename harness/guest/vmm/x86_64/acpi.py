"""The L2 guest's ACPI tables, pure: RSDP, XSDT, FACS, FADT and MADT built here, the
DSDT compiled on the host by iasl (guest-rootfs/acpi/l2_x86_dsdt.asl) and read back
from the disk it reaches L1 on.

The tables sit in the BIOS area the e820 map reserves (0xE0000..0xFFFFF), where a
kernel that is not told the RSDP's address (boot_params.acpi_rsdp_addr) scans for it.
The fixed hardware they describe is pm.py's: PM1a event and control blocks, the PM
timer and a GPE0 block on port I/O, the SCI on ISA IRQ 9 (level, active high: KVM's
IO-APIC takes the line as the VMM drives it).  Layouts: ACPI 6.x, sections 5.2.5
(RSDP), 5.2.6 (header), 5.2.8 (XSDT), 5.2.9 (FADT), 5.2.10 (FACS), 5.2.12 (MADT)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ---------------------------------------------------------------- where and what
AREA, AREA_END = 0xE_0000, 0x10_0000       # e820-reserved, scanned for "RSD PTR "
RSDP_ADDR = AREA                           # 16-byte aligned
FACS_ADDR = AREA + 0x40                    # 64-byte aligned
XSDT_ADDR = AREA + 0x80                    # then FADT, MADT, DSDT, 16-byte aligned each

OEM_ID, OEM_TABLE_ID, OEM_REVISION = b"GUESTP", b"GUESTPM ", 1
CREATOR_ID, CREATOR_REVISION = b"GPMV", 1

SCI_IRQ = 9
PM_BASE = 0x600                            # the blocks below, one bus region (pm.py)
PM1A_EVT, PM1_EVT_LEN = PM_BASE + 0x00, 4  # status (2 bytes), enable (2 bytes)
PM1A_CNT, PM1_CNT_LEN = PM_BASE + 0x04, 2
PM_TMR, PM_TMR_LEN = PM_BASE + 0x08, 4
GPE0_BLK, GPE0_BLK_LEN = PM_BASE + 0x20, 4  # status (2 bytes), enable (2): GPEs 0..15
PM_SIZE = 0x40
SLP_TYP_S5 = 5                             # \_S5 in the DSDT says the same
WAKE_GPE = 0                               # \_SB.PWRB's _PRW in the DSDT: GPE 0, S0..S3
LPS0_PORT = 0x660                          # the DSDT's LPS0 _DSM writes its function here
VPMC_ADDR, VPMC_SIZE = 0xD000_0000, 0x10   # HYPE0001's _DSM region: above RAM (3 GiB
                                           # at most), below the IO-APIC

LAPIC_ADDR, IOAPIC_ADDR, IOAPIC_ID = 0xFEE0_0000, 0xFEC0_0000, 0  # where KVM's irqchip is
IAPC_LEGACY_DEVICES, IAPC_VGA_NOT_PRESENT = 1 << 0, 1 << 2  # no 8042: reboot=k only
FADT_WBINVD, FADT_PROC_C1, FADT_SLP_BUTTON, FADT_FIX_RTC = 1 << 0, 1 << 2, 1 << 5, 1 << 6
FADT_LOW_POWER_S0 = 1 << 21                # s2idle is this platform's suspend
FADT_FLAGS = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_FIX_RTC | FADT_LOW_POWER_S0
MADT_PCAT_COMPAT = 1                       # a PIC is there too (KVM's in-kernel 8259s)
ISO_ACTIVE_HIGH, ISO_LEVEL = 0x1, 0xC      # MPS INTI flags: polarity 01, trigger 11

HEADER = struct.Struct("<4sIBB6s8sI4sI")   # 36 bytes
GAS = struct.Struct("<BBBBQ")              # space, bit width, bit offset, access size, addr
SYSTEM_IO = 1
FADT_REVISION, FADT_LENGTH = 6, 276
MADT_REVISION = 3


class AcpiError(ValueError):
    """A table that cannot be used: the message says why, in one line."""


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes `data` (with 0 in its checksum field) sum to 0 mod 256."""
    return -sum(data) & 0xFF


def table(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header, checksummed over the whole."""
    raw = bytearray(HEADER.pack(signature, HEADER.size + len(body), revision, 0, OEM_ID,
                                OEM_TABLE_ID, OEM_REVISION, CREATOR_ID, CREATOR_REVISION)
                    + body)
    raw[9] = checksum(raw)
    return bytes(raw)


def rsdp(xsdt_addr: int) -> bytes:
    """ACPI 2.0+ RSDP: no RSDT, the XSDT's address; both checksums."""
    raw = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, 0, 36,
                                xsdt_addr, 0))
    raw[8] = checksum(raw[:20])
    raw[32] = checksum(raw)
    return bytes(raw)


def xsdt(entries: list[int]) -> bytes:
    return table(b"XSDT", 1, b"".join(struct.pack("<Q", a) for a in entries))


def facs() -> bytes:
    """Required outside hardware-reduced ACPI; nothing here uses its waking vector."""
    return struct.pack("<4sIIIIIQB3xI24x", b"FACS", 64, 0, 0, 0, 0, 0, 2, 0)


def gas(port: int, length: int) -> bytes:
    return GAS.pack(SYSTEM_IO, 8 * length, 0, 0, port)


def fadt(facs_addr: int, dsdt_addr: int) -> bytes:
    """Revision 6 (276 bytes): the PM blocks and the GPE0 block on port I/O, both as the
    32-bit fields and as the X_ addresses, the FACS as X_FIRMWARE_CTRL only, no SMI command port (always in ACPI mode),
    no sleep button, the power button as a fixed feature."""
    body = bytearray(FADT_LENGTH - HEADER.size)

    def put(fmt: str, offset: int, *values) -> None:
        struct.pack_into("<" + fmt, body, offset - HEADER.size, *values)

    put("II", 36, 0, dsdt_addr)      # FIRMWARE_CTRL zero: X_FIRMWARE_CTRL says it
                                     # (with both, ACPICA installs the FACS twice)
    put("H", 46, SCI_IRQ)
    put("IIIIIIII", 56, PM1A_EVT, 0, PM1A_CNT, 0, 0, PM_TMR, GPE0_BLK, 0)
    put("BBBBBB", 88, PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, GPE0_BLK_LEN, 0)
    put("B", 108, 0x32)                    # CENTURY: the CMOS register cmos.py serves
    put("H", 109, IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT)
    put("I", 112, FADT_FLAGS)
    put("QQ", 132, facs_addr, dsdt_addr)
    for offset, port, length in ((148, PM1A_EVT, PM1_EVT_LEN), (172, PM1A_CNT, PM1_CNT_LEN),
                                 (208, PM_TMR, PM_TMR_LEN), (220, GPE0_BLK, GPE0_BLK_LEN)):
        body[offset - HEADER.size:offset - HEADER.size + GAS.size] = gas(port, length)
    return table(b"FACP", FADT_REVISION, bytes(body))


def madt(vcpus: int) -> bytes:
    """A local APIC per vCPU (processor UID = APIC ID = vCPU id), KVM's IO-APIC with
    GSIs from 0, and the SCI's override: ISA IRQ 9 -> GSI 9, level, active high."""
    body = struct.pack("<II", LAPIC_ADDR, MADT_PCAT_COMPAT)
    for n in range(vcpus):
        body += struct.pack("<BBBBI", 0, 8, n, n, 1)
    body += struct.pack("<BBBBII", 1, 12, IOAPIC_ID, 0, IOAPIC_ADDR, 0)
    body += struct.pack("<BBBBIH", 2, 10, 0, SCI_IRQ, SCI_IRQ, ISO_ACTIVE_HIGH | ISO_LEVEL)
    return table(b"APIC", MADT_REVISION, body)


def dsdt_from(data: bytes) -> bytes:
    """The DSDT in `data` (an .aml file, or the disk it came on: zero-padded to whole
    sectors), cut to its own length; AcpiError for anything else."""
    if len(data) < HEADER.size or data[:4] != b"DSDT":
        raise AcpiError(f"not a DSDT: signature {bytes(data[:4])!r}")
    length = HEADER.unpack_from(data)[1]
    if not HEADER.size <= length <= len(data):
        raise AcpiError(f"DSDT length {length} outside the {len(data)} bytes given")
    aml = bytes(data[:length])
    if sum(aml) & 0xFF:
        raise AcpiError("DSDT checksum does not add up: a truncated or altered table")
    return aml


@dataclass(frozen=True)
class Tables:
    rsdp_addr: int
    blobs: dict[int, bytes]          # guest physical address -> bytes

    def end(self) -> int:
        return max(a + len(b) for a, b in self.blobs.items())


def _align(n: int, to: int = 16) -> int:
    return (n + to - 1) & ~(to - 1)


def build(vcpus: int, dsdt: bytes) -> Tables:
    """Every table at its address in the reserved BIOS area."""
    fadt_addr = _align(XSDT_ADDR + HEADER.size + 2 * 8)
    madt_addr = _align(fadt_addr + FADT_LENGTH)
    madt_blob = madt(vcpus)
    dsdt_addr = _align(madt_addr + len(madt_blob))
    if dsdt_addr + len(dsdt) > AREA_END:
        raise AcpiError(f"a DSDT of {len(dsdt)} bytes does not fit below 1 MiB "
                        f"({AREA_END - dsdt_addr} bytes left)")
    blobs = {RSDP_ADDR: rsdp(XSDT_ADDR), FACS_ADDR: facs(),
             XSDT_ADDR: xsdt([fadt_addr, madt_addr]), fadt_addr: fadt(FACS_ADDR, dsdt_addr),
             madt_addr: madt_blob, dsdt_addr: dsdt}
    return Tables(RSDP_ADDR, blobs)
