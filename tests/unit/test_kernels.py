import pytest

from harness import profiles
from harness.errors import KernelError
from harness.kernel import kernels


def bzimage(release=b"6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP"):
    data = bytearray(0x400)
    data[0x1F1] = 1                  # one setup sector after the boot sector: 1024 bytes
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
    data[0x300:0x300 + len(release)] = release
    return bytes(data)


def arm64_image(release=b"7.2.13+deb14-arm64"):
    data = bytearray(0x100)
    data[0x38:0x3C] = b"ARM\x64"
    return bytes(data) + b"Linux version " + release + b" (gcc) #1\0"


def test_identify_images():
    assert kernels.identify_image(bzimage()) == "bzImage"
    assert kernels.identify_image(arm64_image()) == "arm64-Image"


@pytest.mark.parametrize("head,message", [
    (b"\x7fELF\x02\x01\x01" + b"\0" * 11 + b"\xb7\x00" + b"\0" * 64, "ELF vmlinux \\(aarch64\\)"),
    (b"\x1f\x8b\x08" + b"\0" * 100, "gzip file that holds no kernel image"),
    (b"MZ\0\0zimg" + b"\0" * 100, "zboot"),
    (b"#!/bin/sh\necho hi\n" + b"\0" * 1000, "not a Linux kernel image"),
], ids=["vmlinux", "gzip", "zboot", "script"])
def test_identify_rejects_non_images(head, message):
    with pytest.raises(KernelError, match=message):
        kernels.identify_image(head)


def test_release_strings():
    assert kernels.image_release(bzimage(), "bzImage") == "6.1.0-50-amd64"
    assert kernels.image_release(arm64_image(), "arm64-Image") == "7.2.13+deb14-arm64"


def test_wrong_arch_is_refused_before_booting(tmp_path):
    img = tmp_path / "bzImage"
    img.write_bytes(bzimage())
    with pytest.raises(KernelError, match="is a bzImage but --arch arm64 boots an arm64-Image: wrong architecture"):
        kernels.resolve(f"path:{img}", profiles.get("arm64"))
    k = kernels.resolve(f"path:{img}", profiles.get("x86_64"))
    assert (k.release, k.modules) == ("6.1.0-50-amd64", None)


def test_path_with_modules_dir(tmp_path):
    img = tmp_path / "Image"
    img.write_bytes(arm64_image())
    mods = tmp_path / "mods" / "lib/modules/7.2.13+deb14-arm64"
    (mods / "kernel").mkdir(parents=True)
    k = kernels.resolve(f"path:{img},modules={tmp_path / 'mods'}", profiles.get("arm64"))
    assert k.modules == mods
    with pytest.raises(KernelError, match="not a modules directory"):
        kernels.resolve(f"path:{img},modules={tmp_path}", profiles.get("arm64"))


@pytest.mark.parametrize("spec,message", [
    ("debian:jessie-security", "take a version \\(debian:5.10"),
    ("debian:", "unknown kernel 'debian:'"),
    ("path:", "path: takes a kernel image file"),
    ("6.1", "unknown kernel '6.1'"),
    ("path:/nonexistent/bzImage", "does not exist"),
    ("path:/x,initrd=y", "path: takes only modules=DIR"),
])
def test_bad_specs_are_one_clear_line(spec, message):
    with pytest.raises(KernelError, match=message) as e:
        kernels.resolve(spec, profiles.get("x86_64"))
    assert "\n" not in str(e.value)


def test_unknown_arch():
    from harness.errors import GuestpmError
    with pytest.raises(GuestpmError, match="known are arm64, arm64-uefi, x86_64, x86_64-pc"):
        profiles.get("riscv64")


def pe_arm64_image(raw_end: int, release=b"7.2.13+deb14-arm64") -> bytes:
    """An arm64 Image with an EFI stub: a PE header whose one section ends at raw_end."""
    data = bytearray(0x200)
    data[0x38:0x3C] = b"ARM\x64"
    data[0x3C:0x40] = (0x40).to_bytes(4, "little")
    data[0x40:0x44] = b"PE\0\0"
    data[0x46:0x48] = (1).to_bytes(2, "little")          # one section
    data[0x54:0x56] = (0x10).to_bytes(2, "little")       # optional header size
    sec = 0x40 + 24 + 0x10
    data[sec + 16:sec + 20] = (raw_end - 0x200).to_bytes(4, "little")   # SizeOfRawData
    data[sec + 20:sec + 24] = (0x200).to_bytes(4, "little")             # PointerToRawData
    body = b"Linux version " + release + b" (gcc) #1\0"
    return bytes(data) + body + b"\0" * (raw_end - 0x200 - len(body))


def test_expected_sizes_of_real_headers():
    """Golden: the header fields of Debian's 6.1 images (files 1472 bytes longer: signed)."""
    bz = bytearray(0x200)
    bz[0x1F1] = 39                                         # setup_sects
    bz[0x1F4:0x1F8] = (512544).to_bytes(4, "little")       # syssize, 16-byte paragraphs
    assert kernels.expected_size(bytes(bz), "bzImage") == 40 * 512 + 512544 * 16 == 8221184
    assert kernels.expected_size(pe_arm64_image(0x4000), "arm64-Image") == 0x4000
    assert kernels.expected_size(arm64_image(), "arm64-Image") is None   # no EFI stub


@pytest.mark.parametrize("cut", [0x1000, 0x300, 0x50])
def test_truncated_images_are_refused(tmp_path, cut):
    img = tmp_path / "Image"
    img.write_bytes(pe_arm64_image(0x4000)[:cut])
    with pytest.raises(KernelError, match="is truncated: its arm64-Image header promises"):
        kernels.resolve(f"path:{img}", profiles.get("arm64"))
    img.write_bytes(pe_arm64_image(0x4000))
    assert kernels.resolve(f"path:{img}", profiles.get("arm64")).release == "7.2.13+deb14-arm64"


def test_truncated_bzimage_is_refused(tmp_path):
    data = bytearray(bzimage()) + bytes(0x2000)
    data[0x1F1] = 1
    data[0x1F4:0x1F8] = (0x200).to_bytes(4, "little")      # 2*512 + 0x2000 bytes promised
    img = tmp_path / "bzImage"
    img.write_bytes(bytes(data[:0x2000]))
    with pytest.raises(KernelError, match="promises 9216 bytes, the file has 8192"):
        kernels.resolve(f"path:{img}", profiles.get("x86_64"))


def test_gzipped_arm64_image(tmp_path):
    import gzip
    img = tmp_path / "Image.gz"
    img.write_bytes(gzip.compress(pe_arm64_image(0x4000)))
    k = kernels.resolve(f"path:{img}", profiles.get("arm64"))
    assert k.release == "7.2.13+deb14-arm64"
    assert kernels.inspect_image(img).compressed
    img.write_bytes(gzip.compress(pe_arm64_image(0x4000))[:-100])
    with pytest.raises(KernelError, match="damaged or truncated gzip"):
        kernels.resolve(f"path:{img}", profiles.get("arm64"))
    img.write_bytes(gzip.compress(bzimage()))
    with pytest.raises(KernelError, match="gzip'd bzImage: only arm64 Images"):
        kernels.resolve(f"path:{img}", profiles.get("x86_64"))


def test_boot_layout_finds_config_and_modules(tmp_path):
    """/boot/vmlinuz-RELEASE + /boot/config-RELEASE + /lib/modules/RELEASE (Debian, Fedora)."""
    rel = "5.10.0-32-arm64"
    (tmp_path / "boot").mkdir()
    img = tmp_path / "boot" / f"vmlinuz-{rel}"
    img.write_bytes(arm64_image(rel.encode()))
    (tmp_path / "boot" / f"config-{rel}").write_text("CONFIG_KVM=y\n")
    mods = tmp_path / "lib/modules" / rel
    mods.mkdir(parents=True)
    (mods / "modules.builtin").write_text("")
    k = kernels.resolve(f"path:{img}", profiles.get("arm64"))
    assert (k.release, k.modules, k.config_options()) == (rel, mods, {"CONFIG_KVM": "y"})


@pytest.mark.parametrize("value,kind", [("6.1", "label"), ("5.10", "version"),
                                        ("bullseye", "suite"), ("bookworm-backports", "suite")])
def test_debian_spec_kinds(value, kind):
    assert kernels.debian_kind(value) == kind


def test_version_lookup_prefers_a_main_suite(monkeypatch, tmp_path):
    """debian:6.12 is in trixie and in bookworm-backports: the release wins."""
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    have = {"bullseye": "5.10.223-1", "bookworm": "6.1.176-1", "trixie": "6.12.95-1",
            "bookworm-backports": "6.12.95-1~bpo12+1"}

    class Repo:
        def __init__(self, suite):
            self.suite = suite

        def show(self, name, arch):
            if self.suite not in have:
                raise kernels.SetupError("no such suite")
            return {"Version": have[self.suite]}
    monkeypatch.setattr(kernels, "updated_repo", lambda suite, why: Repo(suite))
    assert kernels.suite_for("6.12", profiles.get("arm64"), print) == "trixie"
    assert kernels.suite_for("5.10", profiles.get("arm64"), print) == "bullseye"
    have["bookworm-backports"] = "6.16.3-1~bpo12+1"
    assert kernels.suite_for("6.16", profiles.get("arm64"), print) == "bookworm-backports"
    with pytest.raises(KernelError, match="no Debian suite on this mirror has a 4.19 kernel"):
        kernels.suite_for("4.19", profiles.get("arm64"), lambda s: None)
