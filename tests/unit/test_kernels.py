import pytest

from harness import kernels, profiles
from harness.errors import KernelError


def bzimage(release=b"6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP"):
    data = bytearray(0x400)
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
    (b"\x1f\x8b\x08" + b"\0" * 100, "gzip"),
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
    with pytest.raises(KernelError, match="is an bzImage but --arch arm64 boots an arm64-Image"):
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
    ("debian:6.6", "known Debian labels are debian:6.1, debian:6.12, debian:7.2"),
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
