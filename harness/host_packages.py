"""The Debian packages this host needs to run guestpm (QEMU, firmware, mmdebstrap,
iasl, ...) and to build kernels, and installing the missing ones with apt-get; and a
second QEMU from another suite (`--qemu debian:SUITE`), unpacked beside the system's
into the cache, never installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable

from harness import cache, profiles
from harness.errors import SetupError
from harness.kernel import aptrepo, build
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
                assert variant.firmware_package, f"{variant.firmware}: no package named"
                need[variant.firmware] = variant.firmware_package
    return need


def host_packages(archs: list[profiles.Profile]) -> dict[str, str]:
    """Command or file -> the Debian package that provides it: what `guestpm setup`
    installs."""
    return run_packages(archs) | TEST_PACKAGES


def missing(need: dict[str, str]) -> dict[str, str]:
    return {what: pkg for what, pkg in need.items() if not present(what)}


def check_host(archs: list[profiles.Profile]) -> None:
    """Before anything runs: SetupError, one line naming every missing command and the
    package that ships it."""
    gone = missing(run_packages(archs))
    if gone:
        pkgs = " ".join(sorted(set(gone.values())))
        raise SetupError("missing on this host: "
                         + ", ".join(f"{w} (package {p})" for w, p in sorted(gone.items()))
                         + f": run `guestpm setup` as root or `apt-get install {pkgs}`")


def check_qemu(profile: profiles.Profile) -> None:
    """SetupError naming the package when this host cannot run `profile`'s QEMU (its
    binary, its firmware): the first line a run says on a host without QEMU."""
    if not shutil.which(qemu_binary(profile)):
        raise SetupError(f"{qemu_binary(profile)} not found: apt-get install "
                         f"{profile.qemu_package} (or run `guestpm setup`)")
    if profile.firmware and not os.path.exists(profile.firmware):
        raise SetupError(f"{profile.name} boots {profile.firmware}, which is missing: "
                         f"apt-get install {profile.firmware_package} (or run `guestpm setup`)")


def present(what: str) -> bool:
    """Whether `what` (a path, or a command on PATH) is on this machine."""
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


# --qemu debian:SUITE: the QEMU packages unpacked (qemu-system-data: its ROMs and
# keymaps; qemu-system-common: its modules)
QEMU_PACKAGES = ("qemu-system-common", "qemu-system-data")
_DEP = re.compile(r"^(?P<name>[\w.+-]+)(?::\w+)?(?:\s*\((?P<op>[<>=]+)\s*(?P<ver>[^)]+)\))?$")


def parse_depends(depends: str) -> list[tuple[str, str | None, str | None]]:
    """(name, op, version) of each hard dependency; alternatives ('a | b') are left out."""
    out = []
    for group in depends.split(","):
        group = group.strip()
        if group and "|" not in group and (m := _DEP.match(group)):
            out.append((m["name"], m["op"], m["ver"]))
    return out


def plan_qemu_fetch(packages: list[str], depends: Callable[[str], str],
                    installed: Callable[[str], str | None],
                    in_suite: Callable[[str], str | None],
                    satisfies: Callable[[str, str, str], bool]) -> tuple[list[str], list[str]]:
    """What to unpack from the suite and what the system must install for `packages`:
    a dependency the system has at a good version is used from the system (libraries,
    ipxe); one it lacks or has too old comes from the suite when the suite has a good
    version (seabios for QEMU 10), else the system installs it (a library)."""
    unpack, system = list(packages), []
    todo = list(packages)
    while todo:
        for name, op, ver in parse_depends(depends(todo.pop(0))):
            if name in unpack or name in system:
                continue
            have = installed(name)
            if have is not None and (op is None or ver is None or satisfies(have, op, ver)):
                continue
            there = in_suite(name)
            if there is not None and (op is None or ver is None or satisfies(there, op, ver)) \
                    and not name.startswith("lib"):
                unpack.append(name)
                todo.append(name)
            else:
                system.append(name)
    return unpack, system


def _installed_version(name: str) -> str | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", name],
                          capture_output=True, text=True)
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and "installed" in words[:3] else None


def version_satisfies(have: str, op: str, ver: str) -> bool:
    """Whether Debian version `have` is `op` (>=, <=, >>, <<, =) `ver`, in dpkg's order."""
    ops = {">=": "ge", "<=": "le", ">>": "gt", "<<": "lt", "=": "eq"}
    return subprocess.run(["dpkg", "--compare-versions", have, ops[op], ver]).returncode == 0


def qemu_dir(spec: str | None) -> str | None:
    """--qemu's value as a directory: DIR as given, or debian:SUITE's QEMU unpacked
    into the cache (fetched once: apt-get download + dpkg-deb -x, nothing installed)."""
    if not spec or not spec.startswith("debian:"):
        return spec
    suite = spec.partition(":")[2]
    dest = cache.cache_dir() / "qemu" / suite
    wanted = sorted({p.qemu_package for p in profiles.PROFILES.values()})
    if (dest / "qemu.json").exists():
        return str(dest)
    arch = profiles.host_deb_arch()
    with cache.locked(dest):
        if (dest / "qemu.json").exists():
            return str(dest)
        repo = aptrepo.AptRepo(cache.cache_dir() / "apt" / suite, suite, aptrepo.system_mirror())
        with cache.locked(repo.root):
            repo.update()
        progress(f"--qemu {spec}: reading {', '.join(wanted)} from Debian {suite}")

        def show(name: str) -> dict:
            try:
                return repo.show(name, arch)
            except SetupError:
                return {}
        unpack, system = plan_qemu_fetch(
            wanted + list(QEMU_PACKAGES), lambda n: show(n).get("Depends", ""),
            _installed_version, lambda n: show(n).get("Version"), version_satisfies)
        if system:
            _apt_install(sorted(system), f"QEMU from Debian {suite}")
        with cache.staging_dir(dest) as tmp:
            debs = repo.download(unpack, arch, tmp / "debs")
            for deb in debs:
                progress(f"--qemu {spec}: unpacking {deb.name}")
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
                deb.unlink()
            (tmp / "debs").rmdir()
            (tmp / "qemu.json").write_text(json.dumps(
                {"suite": suite, "for": wanted,
                 "packages": [f"{n}={show(n).get('Version', '?')}" for n in unpack]}, indent=1))
    return str(dest)
