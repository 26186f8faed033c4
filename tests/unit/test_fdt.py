"""The reference VMM's FDT writer and board: golden blob, and dtc's reading of it."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.guest.vmm.arm64 import board, fdt

GOLDEN = Path(__file__).parent / "golden" / "fdt"
LAYOUT = board.Layout(256 << 20, 2, "console=ttyAMA0 quiet rdinit=/init",
                      (0x42000000, 0x42400000))


def _blob() -> bytes:
    return fdt.to_dtb(board.device_tree(LAYOUT))


def test_the_board_blob_is_the_golden_one():
    assert _blob() == (GOLDEN / "board-2cpu.dtb").read_bytes()


@pytest.mark.skipif(not shutil.which("dtc"), reason="dtc (device-tree-compiler) not installed: "
                    "guestpm setup installs it")
def test_dtc_reads_the_blob_as_the_golden_source(tmp_path):
    """dtc -I dtb is the reference reader; its output was checked by hand against the
    bindings (arm,gic-v3, arm,armv8-timer, arm,pl011, arm,pl031, psci)."""
    (tmp_path / "b.dtb").write_bytes(_blob())
    out = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "b.dtb")],
                         capture_output=True, text=True, check=True)
    assert _string_lists(out.stdout) == _string_lists((GOLDEN / "board-2cpu.dts").read_text())
    assert "Warning" not in out.stderr, out.stderr


def _string_lists(dts: str) -> str:
    """One spelling of a string-list property: dtc 1.6 (bookworm) prints
    `"arm,psci-1.0\\0arm,psci-0.2"`, dtc 1.7 (trixie) `"arm,psci-1.0", "arm,psci-0.2"`:
    the same bytes in the blob."""
    return dts.replace("\\0", '", "')


def test_header_and_blocks_follow_the_spec():
    b = _blob()
    magic, total, off_struct, off_strings, off_rsv, version, last, boot, size_str, size_struct = \
        struct.unpack_from(">10I", b)
    assert (magic, total, version, last, boot) == (0xD00DFEED, len(b), 17, 16, 0)
    assert off_rsv == 40 and b[40:56] == b"\0" * 16          # empty reservation map
    assert off_struct == 56 and off_strings == off_struct + size_struct
    assert off_strings + size_str == total
    assert struct.unpack_from(">I", b, off_strings - 4)[0] == fdt.FDT_END
    strings = b[off_strings:].split(b"\0")
    assert len(strings) == len(set(strings))                  # each name stored once


def test_values_encode_as_the_spec_says():
    assert fdt.encode(None) == b""
    assert fdt.encode(7) == b"\0\0\0\7"
    assert fdt.encode(fdt.U64(0x1_0000_0002)) == b"\0\0\0\1\0\0\0\2"
    assert fdt.encode(["a", "bc"]) == b"a\0bc\0"
    assert fdt.encode([1, fdt.U64(2)]) == b"\0\0\0\1" + b"\0" * 7 + b"\2"
    with pytest.raises(TypeError):
        fdt.encode(True)
    n = fdt.Node("x")
    n.prop("a", 1)
    with pytest.raises(ValueError):
        n.prop("a", 2)


def test_the_board_gives_each_vcpu_a_redistributor_and_a_cpu_node():
    for n in (1, 4):
        root = board.device_tree(board.Layout(128 << 20, n, "x"))
        cpus = next(c for c in root.children if c.name == "cpus")
        assert [c.name for c in cpus.children] == [f"cpu@{i}" for i in range(n)]
        gic = next(c for c in root.children if c.name.startswith("intc@"))
        reg = dict(gic.props)["reg"]
        assert struct.unpack(">4Q", reg)[3] == 0x20000 * n


def test_a_pmem_region_is_described_by_the_pmem_region_binding():
    root = board.device_tree(board.Layout(128 << 20, 1, "x", pmem_size=64 << 20))
    pmem = next(c for c in root.children if c.name.startswith("pmem@"))
    props = dict(pmem.props)
    assert pmem.name == f"pmem@{board.PMEM:x}"
    assert props["compatible"] == b"pmem-region\0"
    assert struct.unpack(">2Q", props["reg"]) == (board.PMEM, 64 << 20)
    plain = board.device_tree(board.Layout(128 << 20, 1, "x"))
    assert not any(c.name.startswith("pmem@") for c in plain.children)
