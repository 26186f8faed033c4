import lzma
import struct

import pytest

from harness.errors import KernelError
from harness.image.module_tree import ModuleTree, modinfo


def fake_ko(**info: str) -> bytes:
    """A minimal 64-bit little-endian ELF with a .modinfo section."""
    modinfo_data = b"".join(f"{k}={v}\0".encode() for k, v in info.items())
    shstr = b"\0.modinfo\0.shstrtab\0"
    body_off = 64
    mi_off, sh_off = body_off, body_off + len(modinfo_data)
    shdrs_off = sh_off + len(shstr)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shdrs_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)

    def shdr(name, off, size):
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, off, size, 0, 0, 1, 0)
    return (bytes(header) + modinfo_data + shstr + shdr(0, 0, 0) + shdr(1, mi_off, len(modinfo_data))
            + shdr(10, sh_off, len(shstr)))


def test_modinfo_reads_depends():
    assert modinfo(fake_ko(license="GPL", depends="kvm,ccp", name="kvm_amd"))["depends"] == \
        ["kvm,ccp"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "lib/modules/6.1.0-50-amd64"
    (root / "kernel/arch/x86/kvm").mkdir(parents=True)
    (root / "kernel/crypto").mkdir(parents=True)
    (root / "kernel/arch/x86/kvm/kvm-amd.ko").write_bytes(fake_ko(depends="kvm,ccp"))
    (root / "kernel/arch/x86/kvm/kvm.ko.xz").write_bytes(lzma.compress(fake_ko(depends="irqbypass")))
    (root / "kernel/crypto/ccp.ko").write_bytes(fake_ko(depends=""))
    (root / "kernel/crypto/irqbypass.ko").write_bytes(fake_ko(depends=""))
    (root / "kernel/crypto/loop.ko").write_bytes(fake_ko(depends="missing_mod"))
    (root / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    return ModuleTree(root)


def test_closure_orders_dependencies_first_and_skips_builtin(tree):
    names = [n for n, _ in tree.closure(["virtio_pci", "kvm_amd", "kvm"])]
    assert names == ["irqbypass", "kvm", "ccp", "kvm_amd"]


def test_closure_decompresses(tree):
    data = dict(tree.closure(["kvm"]))["kvm"]
    assert data.startswith(b"\x7fELF")


def test_missing_module_names_who_needs_it(tree):
    with pytest.raises(KernelError, match="missing_mod is neither built in.*needed by loop"):
        tree.closure(["loop"])


def test_drivers_for_a_modalias(tmp_path, monkeypatch):
    """HYPE0001's driver is looked up by modalias, built in (modules.builtin.modinfo) or
    a module (its .modinfo), so a kernel that has it as a module is not taken for one
    that lacks it."""
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "lib/modules/7.2.0"
    (root / "kernel/drivers/acpi").mkdir(parents=True)
    (root / "kernel/drivers/acpi/vpmc.ko").write_bytes(
        fake_ko(name="vpmc", alias="acpi*:HYPE0001:*", depends=""))
    (root / "kernel/drivers/acpi/other.ko").write_bytes(fake_ko(name="other", alias="x"))
    (root / "modules.builtin.modinfo").write_bytes(
        b"button.alias=acpi*:PNP0C0C:*\0button.license=GPL\0")
    tree = ModuleTree(root)
    assert tree.drivers_for("acpi*:HYPE0001:*") == ([], ["vpmc"])
    assert tree.drivers_for("acpi*:PNP0C0C:*") == (["button"], [])
    assert tree.drivers_for("acpi*:NONE0000:*") == ([], [])
    assert tree.drivers_for("acpi*:HYPE0001:*") == ([], ["vpmc"])     # from the cache now
