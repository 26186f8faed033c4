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

# Debian packages the host needs, by the command that proves each is there.
HOST_PACKAGES = {"mmdebstrap": "mmdebstrap", "dpkg-deb": "dpkg", "apt-get": "apt",
                 "iasl": "acpica-tools", "qemu-img": "qemu-utils",
                 "dtc": "device-tree-compiler"}    # the FDT writer's unit tests



def host_packages(archs: list[profiles.Profile]) -> dict[str, str]:
    """Command or file -> the Debian package that provides it.  Firmware of every
    profile of the same architecture comes along (tests boot those variants too)."""
    need = dict(HOST_PACKAGES)
    for p in archs:
        need[p.qemu_binary] = p.qemu_package
        for variant in profiles.PROFILES.values():
            if variant.arch == p.arch and variant.firmware:
                need[variant.firmware] = variant.firmware_package
    return need


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
    missing = sorted({pkg for what, pkg in host_packages(archs).items() if not _present(what)})
    if missing:
        _apt_install(missing, "guestpm")


def install_build_packages(archs: list[str]) -> None:
    """What `guestpm build` needs (compilers, flex, bison, ...), as root only."""
    pkgs = sorted({p for a in archs for p in build.build_packages(a)})
    have = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *pkgs],
                          capture_output=True, text=True).stdout
    installed = {ln.split()[0] for ln in have.splitlines() if ln.endswith(" installed")}
    missing = [p for p in pkgs if p not in installed]
    if missing:
        _apt_install(missing, "building kernels")
