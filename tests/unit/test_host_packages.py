"""What `guestpm setup` installs and the up-front check of a run: every command the
harness execs maps to the Debian package that ships it, and a missing one stops the
run in one line naming the package."""

from __future__ import annotations

import pytest

from harness import host_packages, profiles
from harness.errors import SetupError


def test_a_run_needs_mount_for_mmdebstraps_root_mode_and_each_profiles_qemu():
    need = host_packages.run_packages([profiles.X86_64_Q35, profiles.ARM64_VIRT])
    assert need["mount"] == "mount"
    assert need["mmdebstrap"] == "mmdebstrap"
    assert need["qemu-system-x86_64"] == "qemu-system-x86"
    assert need["qemu-system-aarch64"] == "qemu-system-arm"
    # arm64 brings its UEFI variant's firmware along: tests boot it too
    assert need["/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"] == "qemu-efi-aarch64"
    assert "dtc" not in need        # unit tests only


def test_setup_installs_what_a_run_and_the_unit_tests_exec():
    need = host_packages.host_packages([profiles.X86_64_Q35])
    assert {"mount", "mmdebstrap", "iasl", "qemu-img", "dpkg-deb", "apt-get", "zstd",
            "dtc"} <= set(need)


def test_the_harness_execs_nothing_setup_does_not_provide():
    """Audit: the host commands named in harness/ (outside the guest) are all known."""
    import re
    from pathlib import Path
    root = Path(host_packages.__file__).parent
    execd = set()
    for p in root.rglob("*.py"):
        if "guest" in p.relative_to(root).parts:
            continue
        for m in re.finditer(r'(?:run|Popen|run_logged|_tool)\(\s*\[\s*"([a-z][\w.+-]*)"', p.read_text()):
            execd.add(m[1])
        for m in re.finditer(r'_(?:tool|apt)\("([\w.+-]+)"', p.read_text()):
            execd.add(m[1])
        for m in re.finditer(r'\bcmd = \[\s*"([a-z][\w.+-]*)"', p.read_text()):
            execd.add(m[1])
    known = set(host_packages.host_packages(list(profiles.PROFILES.values())))
    # Essential (dpkg, coreutils, util-linux, bash) or the build tools guestpm build
    # installs (harness.kernel.build.build_packages)
    essential_or_build = {"dpkg", "dpkg-query", "rm", "mkswap", "bash", "git", "make"}
    assert {"mmdebstrap", "qemu-img", "dpkg-deb", "zstd", "apt-get"} <= execd  # the scan works
    assert execd - known - essential_or_build == set()


def test_a_missing_command_fails_in_one_line_naming_the_package(monkeypatch):
    monkeypatch.setattr(host_packages, "present", lambda what: what not in ("mount", "iasl"))
    with pytest.raises(SetupError) as e:
        host_packages.check_host([profiles.X86_64_Q35])
    msg = str(e.value)
    assert "\n" not in msg
    assert "mount (package mount)" in msg and "iasl (package acpica-tools)" in msg
    assert msg.endswith("`apt-get install acpica-tools mount`")


def test_nothing_missing_passes(monkeypatch):
    monkeypatch.setattr(host_packages, "present", lambda what: True)
    host_packages.check_host([profiles.X86_64_Q35, profiles.ARM64_VIRT])
