"""Out-of-tree kernel modules (test fixtures) built for a stock Debian kernel.

The module is built against Debian's own linux-headers package for the kernel under
test, with the compiler that package depends on (gcc-12 for bookworm's 6.1, gcc-14 for
trixie, gcc-16 for sid): in a throwaway mmdebstrap chroot of the kernel's suite, so the
host's toolchain and glibc do not matter.  Built once per (sources, kernel) and cached.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from . import aptrepo, cache
from .errors import SetupError
from .kernels import Kernel

Progress = Callable[[str], None]
BUILD_TIMEOUT = 900      # s; measured 50-80 s per kernel, cold


class Unbuildable(Exception):
    """No headers to build against (not a stock Debian kernel, or another arch)."""


def host_deb_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build(src: Path, kernel: Kernel, deb_arch: str, progress: Progress = lambda s: None) -> Path:
    """The .ko of the single-module Kbuild directory `src`, built for `kernel`."""
    kbuild = (src / "Kbuild").read_text()
    name = kbuild.split(":=")[-1].strip().removesuffix(".o")
    if not kernel.debian or not kernel.release:
        raise Unbuildable(f"{kernel.spec} is not a stock Debian kernel: no linux-headers "
                          f"package to build {name} against")
    if deb_arch != host_deb_arch():
        raise Unbuildable(f"building {name} for {deb_arch} on a {host_deb_arch()} host "
                          "is not supported")
    suite, version = kernel.debian
    sources = sorted(p for p in src.iterdir() if p.suffix in (".c", ".h") or p.name == "Kbuild")
    key = cache.digest(kernel.release, version, *(f"{p.name}\0{p.read_text()}" for p in sources))
    out = cache.cache_dir() / "extmod" / f"{name}-{kernel.release}-{key[:16]}"
    ko = out / f"{name}.ko"
    if ko.exists():
        return ko
    with cache.locked(out):
        if ko.exists():
            return ko
        with cache.staging_dir(out) as tmp:
            _mmdebstrap(name, sources, kernel.release, suite, version, deb_arch, tmp, progress)
    return ko


def _mmdebstrap(name: str, sources: list[Path], release: str, suite: str, version: str,
                deb_arch: str, dest: Path, progress: Progress) -> None:
    if not shutil.which("mmdebstrap"):
        raise SetupError("mmdebstrap not found: apt-get install mmdebstrap (or guestpm setup)")
    mirror = aptrepo.system_mirror()
    headers = f"linux-headers-{release}"
    log = dest / "build.log"
    hooks = [
        'mkdir -p "$1/build"',
        "copy-in " + " ".join(shlex.quote(str(p)) for p in sources) + " /build",
        f'chroot "$1" make -C /usr/src/{headers} M=/build modules',
        f"copy-out /build/{name}.ko {shlex.quote(str(dest))}",
    ]
    cmd = ["mmdebstrap", "--variant=minbase", f"--arch={deb_arch}",
           f"--include=make,{headers}={version}",
           # the Release files' Valid-Until is not checked (see aptrepo): signatures are
           '--aptopt=Acquire::Check-Valid-Until "false"',
           *(f"--customize-hook={h}" for h in hooks),
           suite, "/dev/null",
           f"deb [signed-by={mirror.keyring}] {mirror.uri} {suite} main"]
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

