"""--qemu: another QEMU than the system's (a directory, or a suite's QEMU unpacked into
the cache): what is fetched, what the system keeps providing, and the command line."""

from __future__ import annotations

import os

import pytest

from harness import host_packages, profiles
from harness.errors import SetupError
from harness.vm import cmdline

# bookworm-backports' QEMU 10 as apt-cache shows it (shortened), on a bookworm host
DEPENDS = {
    "qemu-system-x86": "libaio1 (>= 0.3.93), libbpf1 (>= 1:0.0.8), libc6 (>= 2.34), "
                       "qemu-system-common (= 1:10.0.2+ds-2~bpo12+1), qemu-system-data "
                       "(>> 1:10.0.2+ds~), seabios (>> 1.16.3-1~), ipxe-qemu",
    "qemu-system-arm": "libc6 (>= 2.34), libpixman-1-0 (>= 0.30.0), qemu-system-common "
                       "(= 1:10.0.2+ds-2~bpo12+1), qemu-system-data (>> 1:10.0.2+ds~)",
    "qemu-system-common": "libc6 (>= 2.34), libcap-ng0 (>= 0.7.9) | libfoo",
    "qemu-system-data": "", "seabios": "",
}
INSTALLED = {"libaio1": "0.3.113-4", "libc6": "2.36-9", "libpixman-1-0": "0.42.2-1",
             "seabios": "1.16.2-1", "ipxe-qemu": "1.0.0+git-20190125.36a4c85-5.1"}
IN_SUITE = {"qemu-system-common": "1:10.0.2+ds-2~bpo12+1", "qemu-system-data":
            "1:10.0.2+ds-2~bpo12+1", "seabios": "1.16.3-2~bpo12+1"}


def test_the_suite_gives_what_the_system_lacks_or_has_too_old():
    unpack, system = host_packages.plan_qemu_fetch(
        ["qemu-system-arm", "qemu-system-x86"], DEPENDS.__getitem__, INSTALLED.get,
        IN_SUITE.get, host_packages.version_satisfies)   # dpkg's ordering
    # seabios 1.16.2 is too old for QEMU 10's x86 machines: the suite's comes along
    assert unpack == ["qemu-system-arm", "qemu-system-x86", "qemu-system-common",
                      "qemu-system-data", "seabios"]
    # libraries come from the system's own suite; ipxe-qemu (unversioned) is there
    assert system == ["libbpf1"]          # (alternatives are left to the system)


def test_depends_keep_names_ops_and_versions_and_drop_alternatives():
    assert host_packages.parse_depends("a (>= 1), b:any, c | d, e (>> 1:2~)") == [
        ("a", ">=", "1"), ("b", None, None), ("e", ">>", "1:2~")]


def _clean(monkeypatch):
    """use_qemu() sets the process environment: monkeypatch undoes it after the test."""
    monkeypatch.setenv(cmdline.QEMU_DIR_ENV, "")
    monkeypatch.setenv("QEMU_MODULE_DIR", "")


def test_an_unpacked_debian_qemu_brings_its_data_and_modules(tmp_path, monkeypatch):
    root = tmp_path / "qemu"
    for d in ("usr/bin", "usr/share/qemu", "usr/share/seabios",
              "usr/lib/x86_64-linux-gnu/qemu"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/qemu-system-x86_64").touch()
    _clean(monkeypatch)
    cmdline.use_qemu(str(root))
    assert os.environ["QEMU_MODULE_DIR"] == str(root / "usr/lib/x86_64-linux-gnu/qemu")
    spec = cmdline.BootSpec("bzImage", "initrd", 3, 4)
    args = cmdline.qemu_args(profiles.X86_64_Q35, spec)
    assert args[0] == str(root / "usr/bin/qemu-system-x86_64")
    i = args.index("-L")
    assert args[i:i + 4] == ["-L", str(root / "usr/share/qemu"),
                             "-L", str(root / "usr/share/seabios")]


def test_a_directory_of_binaries_is_used_as_it_is(tmp_path, monkeypatch):
    (tmp_path / "qemu-system-aarch64").touch()
    _clean(monkeypatch)
    cmdline.use_qemu(str(tmp_path))
    args = cmdline.qemu_args(profiles.ARM64_VIRT, cmdline.BootSpec("Image", "initrd", 3, 4))
    assert args[0] == str(tmp_path / "qemu-system-aarch64") and "-L" not in args


def test_a_directory_without_qemu_is_refused_in_one_line(tmp_path, monkeypatch):
    _clean(monkeypatch)
    with pytest.raises(SetupError, match=r"--qemu .*: no qemu-system-\* binary in"):
        cmdline.use_qemu(str(tmp_path))


def test_without_qemu_the_system_one_runs(monkeypatch):
    _clean(monkeypatch)
    assert cmdline.qemu_binary(profiles.X86_64_Q35) == "qemu-system-x86_64"
