"""The x86 L2's ACPI tables (harness/guest/vmm/x86_64/acpi.py) and their fixed hardware
(pm.py): bytes at offsets against ACPI 6.x's layouts, checksums, golden tables, and
iasl's own disassembler as a second reader."""

import itertools
import shutil
import struct
import subprocess

import pytest

from harness.guest.vmm.x86_64 import acpi, pm
from harness.image import aml

needs_iasl = pytest.mark.skipif(not shutil.which("iasl"), reason="iasl (acpica-tools) absent")

# MADT for two vCPUs, as ACPI 6.5 table 5.43 lays it out; iasl -d decodes it as:
# local APIC 0/0 enabled, local APIC 1/1 enabled, IO-APIC 0 at 0xfec00000 GSI base 0,
# interrupt source override bus 0 source 9 -> GSI 9, polarity 1 (high), trigger 3 (level)
MADT_2 = bytes.fromhex(
    "41504943520000000" "34c4755455354504755455354504d20010000004750 4d56"
    "0100000000 00e0fe01000000 0008000001000000 0008010101000000 010c0000 0000c0fe"
    "00000000 020a000909000000 0d00".replace(" ", ""))
RSDP = bytes.fromhex("52534420505452200747554553545002000000002400000080000e00"
                     "000000004e000000")


def test_every_table_sums_to_zero():
    t = acpi.build(2, _dsdt())
    for blob in t.blobs.values():
        if blob[:4] == b"FACS":          # the one table without a checksum
            continue
        assert sum(blob) & 0xFF == 0, blob[:4]
    assert sum(t.blobs[acpi.RSDP_ADDR][:20]) & 0xFF == 0     # the ACPI 1.0 checksum


def test_rsdp_and_madt_golden():
    assert acpi.rsdp(acpi.XSDT_ADDR) == RSDP
    assert acpi.madt(2) == MADT_2


def test_layout_in_the_bios_area():
    dsdt = _dsdt()
    t = acpi.build(4, dsdt)
    addrs = sorted(t.blobs)
    assert addrs[0] == t.rsdp_addr == 0xE0000 and t.end() <= 0x100000
    assert acpi.FACS_ADDR % 64 == 0 and all(a % 16 == 0 for a in addrs)
    for a, b in itertools.pairwise(addrs):         # no table runs into the next
        assert a + len(t.blobs[a]) <= b
    xsdt = t.blobs[acpi.XSDT_ADDR]
    fadt_at, madt_at = struct.unpack_from("<QQ", xsdt, 36)
    assert len(xsdt) == 52
    assert t.blobs[fadt_at][:4] == b"FACP" and t.blobs[madt_at][:4] == b"APIC"
    fadt = t.blobs[fadt_at]
    assert struct.unpack_from("<I", fadt, 36)[0] == 0         # FIRMWARE_CTRL: X_ only
    facs_at, dsdt_at = struct.unpack_from("<QQ", fadt, 132)
    assert struct.unpack_from("<I", fadt, 40)[0] == dsdt_at
    assert t.blobs[facs_at][:4] == b"FACS" and t.blobs[dsdt_at] == dsdt
    assert struct.unpack_from("<Q", t.blobs[acpi.RSDP_ADDR], 24)[0] == acpi.XSDT_ADDR
    assert madt_at + len(acpi.madt(4)) <= dsdt_at


def test_fadt_fields_at_their_offsets():
    f = acpi.fadt(0xE0040, 0xE0240)
    assert (f[:4], len(f), f[8]) == (b"FACP", 276, 6)
    assert struct.unpack_from("<H", f, 46)[0] == 9                       # SCI_INT
    assert struct.unpack_from("<I", f, 48)[0] == 0                       # no SMI_CMD
    assert struct.unpack_from("<8I", f, 56) == (0x600, 0, 0x604, 0, 0, 0x608, 0x620, 0)
    assert tuple(f[88:94]) == (4, 2, 0, 4, 4, 0)                         # block lengths
    assert f[108] == 0x32                                                # CENTURY
    assert struct.unpack_from("<H", f, 109)[0] == 0x5                    # legacy, no VGA
    assert struct.unpack_from("<I", f, 112)[0] == 0x0020_0065            # flags
    for off, port, bits in ((148, 0x600, 32), (172, 0x604, 16), (208, 0x608, 32),
                            (220, 0x620, 32)):
        assert acpi.GAS.unpack_from(f, off) == (1, bits, 0, 0, port)     # SystemIO
    for off in (160, 184, 196, 232, 244, 256):                           # absent blocks
        assert f[off:off + 12] == bytes(12)


def test_facs_layout():
    f = acpi.facs()
    assert (f[:4], len(f), struct.unpack_from("<I", f, 4)[0], f[32]) == (b"FACS", 64, 64, 2)


def test_dsdt_from_a_padded_disk_and_what_it_refuses():
    d = _dsdt()
    assert acpi.dsdt_from(d + bytes(512 - len(d) % 512)) == d
    with pytest.raises(acpi.AcpiError, match="not a DSDT: signature b'SSDT'"):
        acpi.dsdt_from(b"SSDT" + d[4:])
    with pytest.raises(acpi.AcpiError, match="outside the 40 bytes"):
        acpi.dsdt_from(d[:40])
    bad = bytearray(d)
    bad[-1] ^= 1
    with pytest.raises(acpi.AcpiError, match="checksum"):
        acpi.dsdt_from(bytes(bad))
    with pytest.raises(acpi.AcpiError, match="does not fit below 1 MiB"):
        acpi.build(2, acpi.table(b"DSDT", 2, bytes(0x20000)))


@needs_iasl
def test_iasl_reads_our_tables_as_we_meant_them(tmp_path):
    t = acpi.build(2, _dsdt())
    for blob in t.blobs.values():
        if blob[:4] in (b"FACP", b"APIC", b"XSDT"):
            (tmp_path / f"{blob[:4].decode()}.dat").write_bytes(blob)
    for name in ("FACP", "APIC", "XSDT"):
        out = subprocess.run(["iasl", "-d", f"{name}.dat"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        text = (tmp_path / f"{name}.dsl").read_text()
        assert "Incorrect checksum" not in text and "Invalid" not in text, text
    fadt = (tmp_path / "FACP.dsl").read_text()
    for line in ("SCI Interrupt : 0009", "PM1A Event Block Address : 00000600",
                 "GPE0 Block Length : 04", "Low Power S0 Idle (V5) : 1",
                 "Control Method Power Button (V1) : 0"):
        assert line in " ".join(fadt.split()), line
    madt = " ".join((tmp_path / "APIC.dsl").read_text().split())
    assert "Local Apic ID : 01" in madt and "Trigger Mode : 3" in madt


@needs_iasl
def test_the_shipped_dsdt_compiles_and_matches_the_vmms_s5(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    table = aml.compile_asl(aml.ASL_DIR / "l2_x86_dsdt.asl").read_bytes()
    assert acpi.dsdt_from(table) == table
    # Name (\_S5, Package (4) {5, ...}): _S5_ then PackageOp, length, 4 elements, BytePrefix 5
    i = table.index(b"_S5_")
    assert table[i + 4] == 0x12 and table[i + 6:i + 9] == bytes([4, 0x0A, acpi.SLP_TYP_S5])
    assert b"PNP0501" not in table and b"\x41\xd0\x05\x01" in table    # EisaId, compressed


def _dsdt() -> bytes:
    return acpi.table(b"DSDT", 2, b"\x10\x05\\_SB_")       # Scope (\_SB) {}, hand-made


# ---------------------------------------------------------------- the PM registers

class _Pm:
    def __init__(self):
        self.sci, self.sleeps, self.events, self.now = [], [], [], 100.0
        self.regs = pm.PmRegisters(self.sci.append, self.sleeps.append,
                                   lambda name, **f: self.events.append((name, f)),
                                   clock=lambda: self.now)


def test_power_button_raises_the_sci_only_while_enabled_and_clears_on_write_one():
    p = _Pm()
    p.regs.raise_power_button()
    assert p.sci == [] and p.regs.read(pm.STS) & 0xFFFF == pm.PWRBTN_STS
    p.regs.write(pm.EN, pm.PWRBTN_STS)
    assert p.sci == [True]
    assert p.regs.read(pm.STS) == pm.PWRBTN_STS | pm.PWRBTN_STS << 16   # a 32-bit read
    p.regs.write(pm.STS, 0)                      # writing zeros clears nothing
    assert p.sci == [True]
    p.regs.write(pm.STS, 0xFFFF_0000 | pm.PWRBTN_STS)   # the enable half is not touched
    assert p.sci == [True, False] and p.regs.read(pm.EN) & 0xFFFF == pm.PWRBTN_STS
    assert p.events == [("raise", {"what": "power-button", "sci": False})]


def test_gpes_byte_registers_and_the_sci():
    p = _Pm()
    p.regs.write(pm.GPE_EN + 1, 0x02)            # GPE 9 enabled
    p.regs.raise_gpe(3)
    assert p.sci == []
    p.regs.raise_gpe(9)
    assert p.sci == [True] and p.regs.read(pm.GPE_STS) & 0xFFFF == (1 << 3) | (1 << 9)
    p.regs.write(pm.GPE_STS + 1, 0x02)
    assert p.sci == [True, False] and p.regs.read(pm.GPE_STS) & 0xFFFF == 1 << 3
    with pytest.raises(ValueError, match="GPEs 0..15"):
        p.regs.raise_gpe(16)


def test_pm1_control_keeps_sci_en_and_asks_for_s5():
    p = _Pm()
    assert p.regs.read(pm.CNT) & 0xFFFF == pm.SCI_EN     # always in ACPI mode
    p.regs.write(pm.CNT, acpi.SLP_TYP_S5 << 10)          # the type alone: no sleep yet
    assert p.sleeps == []
    p.regs.write(pm.CNT, acpi.SLP_TYP_S5 << 10 | pm.SLP_EN)
    assert p.sleeps == [5] and p.regs.read(pm.CNT) & pm.SLP_EN == 0   # SLP_EN reads 0
    assert ("sleep-request", {"slp_typ": 5}) in p.events


def test_pm_timer_counts_at_3_58_mhz_in_24_bits():
    p = _Pm()
    p.now += 1.0
    assert p.regs.read(pm.TMR) == 3_579_545 & 0xFF_FFFF
    p.now += 4.0                                  # past 2**24 ticks: wraps
    assert p.regs.read(pm.TMR) == (5 * 3_579_545) & 0xFF_FFFF
    assert p.regs.read(0x30) == 0xFFFF_FFFF       # a hole in the block
