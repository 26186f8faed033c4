"""Bad input gets one clear line, never a hang."""

import dataclasses
import subprocess
import sys
import time

import pytest

from harness import aptrepo, kernels, profiles
from harness.errors import SetupError
from harness.machine import Machine


def test_missing_qemu_names_the_package(tmp_path):
    p = dataclasses.replace(profiles.get("arm64"), qemu_binary="qemu-system-nonexistent")
    with pytest.raises(SetupError, match="qemu-system-nonexistent not found: apt-get install "
                                         "qemu-system-arm"):
        Machine(p, None, tmp_path / "initrd", tmp_path)


def test_empty_cache_and_unreachable_registry(tmp_path, monkeypatch):
    """A closed local port stands in for the registry: apt must fail fast and we must say
    which kernel was not cached and which mirror (and its origin) failed."""
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(aptrepo, "system_mirror", lambda etc=None: aptrepo.Mirror(
        "http://127.0.0.1:9/debian", aptrepo.DEFAULT_KEYRING, "/etc/apt/test.sources"))
    t = time.monotonic()
    with pytest.raises(SetupError) as e:
        kernels.resolve("debian:6.1", profiles.get("x86_64"))
    assert time.monotonic() - t < 60
    msg = str(e.value)
    assert "debian:6.1 for amd64 is not cached and could not be fetched" in msg
    assert "http://127.0.0.1:9/debian" in msg and "/etc/apt/test.sources" in msg
    assert "\n" not in msg


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "boot", "--kernel", "debian:woody",
                           "--arch", "x86_64"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "guestpm: error: unknown kernel 'debian:woody': take a version (debian:5.10, "
        "debian:6.1, ...) or a Debian suite (debian:bullseye, debian:bookworm-backports, ...); "
        "the defaults are debian:6.1, debian:6.12, debian:7.2"]


def test_missing_firmware_names_the_package(tmp_path):
    p = dataclasses.replace(profiles.get("arm64-uefi"), firmware=str(tmp_path / "QEMU_EFI.fd"))
    with pytest.raises(SetupError, match=r"QEMU_EFI.fd, which is missing: apt-get install "
                                         r"qemu-efi-aarch64"):
        Machine(p, None, tmp_path / "initrd", tmp_path / "m")
