"""The Debian packages this host needs to run guestpm (QEMU, firmware, mmdebstrap,
iasl, ...) and to build kernels, and installing the missing ones with apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess

from harness import profiles
from harness.errors import SetupError
from harness.kernel import build
from harness.progress import progress
from harness.vm.cmdline import qemu_binary

# What a run execs on the host, by the command that proves each is there -> the Debian
# package that ships it.  Audited against every subprocess the harness starts: guest
# root filesystems and fixture-module chroots (mmdebstrap, which in root mode mounts
# /proc and /sys into the chroot with `mount`: without it 7.2's objtool cannot read
# /proc; a minimal trixie has no `mount`, and mmdebstrap only Recommends it), kernels
# and QEMUs from the archive (apt-get, dpkg-deb), SSDTs (iasl), disks (qemu-img;
# mkswap is util-linux, Essential), zstd-compressed modules (zstd).
RUN_PACKAGES = {"mmdebstrap": "mmdebstrap", "mount": "mount", "dpkg-deb": "dpkg",
                "apt-get": "apt", "apt-cache": "apt", "iasl": "acpica-tools", "qemu-img": "qemu-utils",
                "zstd": "zstd"}
# what only the unit tests exec (`guestpm setup` installs it too)
TEST_PACKAGES = {"dtc": "device-tree-compiler"}      # the FDT writer's unit tests
HOST_PACKAGES = RUN_PACKAGES | TEST_PACKAGES


def run_packages(archs: list[profiles.Profile]) -> dict[str, str]:
    """What a run on `archs` execs: RUN_PACKAGES and each profile's QEMU and firmware
    (every profile of the same architecture: tests boot those variants too)."""
    need = dict(RUN_PACKAGES)
    for p in archs:
        need[qemu_binary(p)] = p.qemu_package
        for variant in profiles.PROFILES.values():
            if variant.arch == p.arch and variant.firmware:
                need[variant.firmware] = variant.firmware_package
    return need


def host_packages(archs: list[profiles.Profile]) -> dict[str, str]:
    """Command or file -> the Debian package that provides it: what `guestpm setup`
    installs."""
    return run_packages(archs) | TEST_PACKAGES


def missing(need: dict[str, str]) -> dict[str, str]:
    return {what: pkg for what, pkg in need.items() if not _present(what)}


def check_host(archs: list[profiles.Profile]) -> None:
    """Before anything runs: SetupError, one line naming every missing command and the
    package that ships it."""
    gone = missing(run_packages(archs))
    if gone:
        pkgs = " ".join(sorted(set(gone.values())))
        raise SetupError(f"missing on this host: "
                         + ", ".join(f"{w} (package {p})" for w, p in sorted(gone.items()))
                         + f": run `guestpm setup` as root or `apt-get install {pkgs}`")


def _present(what: str) -> bool:
    return os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None


def _apt_install(missing: list[str], why: str) -> None:
    if os.geteuid() != 0:
        raise SetupError(f"{why} needs {' '.join(missing)}: run "
                         f"`sudo apt-get install {' '.join(missing)}` (or guestpm setup as root)")
    progress(f"installing {' '.join(missing)} with apt-get ({why})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"`{' '.join(cmd)}` failed: "
                             + " | ".join(proc.stderr.strip().splitlines()[-3:]))


def install_host_packages(archs: list[profiles.Profile]) -> None:
    need = sorted(set(missing(host_packages(archs)).values()))
    if need:
        _apt_install(need, "guestpm")


def install_build_packages(archs: list[str]) -> None:
    """What `guestpm build` needs (compilers, flex, bison, ...), as root only."""
    pkgs = sorted({p for a in archs for p in build.build_packages(a)})
    have = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *pkgs],
                          capture_output=True, text=True).stdout
    installed = {ln.split()[0] for ln in have.splitlines() if ln.endswith(" installed")}
    missing = [p for p in pkgs if p not in installed]
    if missing:
        _apt_install(missing, "building kernels")
