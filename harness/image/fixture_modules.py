"""Out-of-tree kernel modules (test fixtures) built for the kernel under test.

A stock Debian kernel: the module is built against Debian's own linux-headers package
for it, with the compiler that package depends on (gcc-12 for bookworm's 6.1, gcc-14
for trixie, gcc-16 for sid), in a throwaway mmdebstrap chroot of the kernel's suite, so
the host's toolchain and glibc do not matter.  For another arch (arm64 headers on an
amd64 host) the chroot is multiarch: the headers package of the target arch pulls
`gcc-N-for-host`, which is Debian's cross compiler, and the Multi-Arch: foreign
linux-kbuild of the host arch.

A `guestpm build` kernel (build:DIR|TREE): against its own O= directory, with the
toolchain it was built with.

Built once per (sources, kernel) and cached.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import cache, profiles
from harness.children import run_logged
from harness.errors import SetupError
from harness.kernel import aptrepo
from harness.kernel import build as kbuild
from harness.kernel.kernels import Kernel

Progress = Callable[[str], None]
BUILD_TIMEOUT = 900      # s; a cold build takes about a tenth of it (docs/figures.md)


class Unbuildable(Exception):
    """No headers to build against (not a stock Debian kernel, or another arch)."""


def kbuild_arch(deb_arch: str) -> profiles.KbuildArch | None:
    """The Kbuild facts (ARCH, the cross prefix Debian's gcc-N-for-host uses) of a
    Debian arch, from the profiles."""
    return next((p.kbuild for p in profiles.PROFILES.values()
                 if p.deb_arch == deb_arch and p.kbuild), None)


def module_name(src: Path) -> str:
    """The module of a single-module Kbuild file: its `obj-m := NAME.o` line."""
    found = re.search(r"^obj-m\s*[:+]?=\s*(\S+)\.o\s*$", (src / "Kbuild").read_text(), re.MULTILINE)
    if not found:
        raise SetupError(f"{src}/Kbuild has no `obj-m := NAME.o` line")
    return found.group(1)


def _sources(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.suffix in (".c", ".h") or p.name == "Kbuild")


def build(src: Path, kernel: Kernel, deb_arch: str, progress: Progress = lambda s: None) -> Path:
    """The .ko of the single-module Kbuild directory `src`, built for `kernel`."""
    name = module_name(src)
    if kernel.spec.startswith("build:"):
        return _build_in_tree(src, kernel, progress)
    if not kernel.debian or not kernel.release:
        raise Unbuildable(f"{kernel.spec} is not a stock Debian kernel or a `guestpm build`: "
                          f"no headers to build {name} against")
    if kbuild_arch(deb_arch) is None:
        raise Unbuildable(f"building {name} for {deb_arch} is not supported")
    suite, version = kernel.debian
    if deb_arch != profiles.host_deb_arch():
        _check_cross(name, kernel.release, suite, deb_arch)
    sources = _sources(src)
    key = cache.digest(kernel.release, version, *(f"{p.name}\0{p.read_text()}" for p in sources))
    out = cache.cache_dir() / "extmod" / f"{name}-{kernel.release}-{key[:16]}"
    ko = out / f"{name}.ko"
    if ko.exists():
        return ko
    with cache.locked(out):
        if ko.exists():
            return ko
        with cache.staging_dir(out) as tmp:
            build_in_chroot(name, sources, kernel.release, suite, version, deb_arch, tmp,
                            progress)
    return ko


def _check_cross(name: str, release: str, suite: str, deb_arch: str) -> None:
    """Cross builds need the headers package to name Debian's cross compiler
    (gcc-N-for-host: sid's 7.2 does); bookworm's and trixie's depend on plain gcc-N."""
    repo = aptrepo.AptRepo(cache.cache_dir() / "apt" / suite, suite, aptrepo.system_mirror())
    with cache.locked(repo.root):
        repo.update()
    depends = repo.show(f"linux-headers-{release}", deb_arch).get("Depends", "")
    if "-for-host" not in depends:
        gcc = next((d.strip().split()[0] for d in depends.split(",")
                    if d.strip().startswith("gcc")), "no gcc")
        raise Unbuildable(f"building {name} for {deb_arch} on this "
                          f"{profiles.host_deb_arch()} host needs a headers package that "
                          f"depends on gcc-N-for-host (Debian's cross compiler); "
                          f"linux-headers-{release} depends on {gcc}")


def _build_in_tree(src: Path, kernel: Kernel, progress: Progress) -> Path:
    """Against a `guestpm build`'s O= directory (CONFIG_MODULES=y: the base fragment)."""
    name = module_name(src)
    b = kbuild.find(Path(kernel.spec.partition(":")[2]), kernel.arch)
    obj = b.dir / "obj"
    if "CONFIG_MODULES=y" not in b.config.read_text(errors="replace").splitlines():
        raise Unbuildable(f"{b.dir} was built without CONFIG_MODULES: {name} cannot load")
    sources = _sources(src)
    key = cache.digest(str(b.dir), *(p.read_bytes() for p in (
        b.config, obj / "Module.symvers", obj / "include/generated/utsrelease.h")
        if p.exists()), *(f"{p.name}\0{p.read_text()}" for p in sources))
    out = cache.cache_dir() / "extmod" / f"{name}-build-{key[:16]}"
    ko = out / f"{name}.ko"
    if ko.exists():
        return ko
    tc = kbuild.toolchain(kernel.arch, b.meta.get("cross_compile"),
                          use_ccache=bool(b.meta.get("ccache")))
    with cache.locked(out):
        if ko.exists():
            return ko
        with cache.staging_dir(out) as tmp:
            for p in sources:
                shutil.copy(p, tmp / p.name)
            progress(f"building {name} against {b.dir}")
            log = tmp / "build.log"
            status = run_logged(["make", "-C", str(obj), f"M={tmp}", *tc.make_vars(),
                                 "modules"], log, obj, tc.env())
            if status != 0 or not (tmp / f"{name}.ko").exists():
                kept = cache.cache_dir() / "extmod" / f"{name}-build-failed.log"
                kept.write_text(log.read_text(errors="replace"))
                tail = "\n".join(kept.read_text().splitlines()[-15:])
                raise SetupError(f"building {name} against {b.dir} failed (make exit "
                                 f"{status}); log {kept}:\n{tail}")
    return ko


def chroot_suites(suite: str) -> list[str]:
    """The suites of the build chroot: a backports suite's packages (the headers, their
    kbuild) build with its base suite's toolchain, so a backports chroot has both
    (trixie-backports -> trixie, trixie-backports); the base suite comes first."""
    base, sep, _ = suite.partition("-backports")
    return [base, suite] if sep else [suite]


def build_in_chroot(name: str, sources: list[Path], release: str, suite: str, version: str,
                    deb_arch: str, dest: Path, progress: Progress) -> None:
    """Build module `name` from `sources` into `dest` in an mmdebstrap chroot holding
    the headers of `release` (package version `version` from `suite`) for `deb_arch`."""
    if not shutil.which("mmdebstrap"):
        raise SetupError("mmdebstrap not found: apt-get install mmdebstrap (or guestpm setup)")
    if os.geteuid() == 0 and not shutil.which("mount"):
        # root mode mounts /proc and /sys in the chroot; without them objtool fails
        raise SetupError("mount not found (mmdebstrap's root mode mounts /proc in the build "
                         "chroot): apt-get install mount (or guestpm setup)")
    mirror = aptrepo.system_mirror()
    headers = f"linux-headers-{release}"
    log = dest / "build.log"
    host = profiles.host_deb_arch()
    cross = deb_arch != host
    make = f"make -C /usr/src/{headers} M=/build"
    if cross:      # the headers' gcc-N-for-host:ARCH is the cross compiler
        ka = kbuild_arch(deb_arch)
        assert ka is not None, "build() refused an arch without Kbuild facts"
        make += f" ARCH={ka.arch} CROSS_COMPILE={ka.cross_prefix}"
    hooks = [
        'mkdir -p "$1/build"',
        "copy-in " + " ".join(shlex.quote(str(p)) for p in sources) + " /build",
        f'chroot "$1" {make} modules',
        f"copy-out /build/{name}.ko {shlex.quote(str(dest))}",
    ]
    arches = [f"--architectures={host},{deb_arch}"] if cross else [f"--arch={deb_arch}"]
    include = f"{headers}:{deb_arch}={version}" if cross else f"{headers}={version}"
    suites = chroot_suites(suite)
    cmd = ["mmdebstrap", "--variant=minbase", *arches,
           # binutils: gcc runs `as`, which trixie-backports' headers do not pull in
           f"--include=make,binutils,{include}",
           # the Release files' Valid-Until is not checked (see aptrepo): signatures are
           '--aptopt=Acquire::Check-Valid-Until "false"',
           *(f"--customize-hook={h}" for h in hooks),
           suites[0], "/dev/null",
           *(f"deb [signed-by={mirror.keyring}] {mirror.uri} {s} main" for s in suites)]
    progress(f"building {name} against Debian {suite} {headers}={version} "
             f"(an mmdebstrap chroot, about a minute)")
    with open(log, "w") as fh:
        fh.write(shlex.join(cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT)
            status = str(proc.returncode)
        except subprocess.TimeoutExpired:          # run() has killed it
            status = f"none: killed after {BUILD_TIMEOUT} s"
    if status != "0" or not (dest / f"{name}.ko").exists():
        kept = cache.cache_dir() / "extmod" / f"{name}-{release}-failed.log"
        kept.write_text(log.read_text())
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SetupError(f"building {name} for {release} failed (mmdebstrap exit "
                         f"{status}); log {kept}:\n{tail}")

