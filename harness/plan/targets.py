"""The targets of a run (kernel x arch) and the checks that can be made before anything
boots: specs, images and, with `host`, the commands, QEMU and firmware the run execs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from harness import host_packages, profiles
from harness.kernel import kernels


@dataclass(frozen=True)
class Target:
    kernel: str
    arch: str

    @property
    def id(self) -> str:
        return f"{self.kernel}/{self.arch}"

    @property
    def slug(self) -> str:
        """A short file name for the target, unique whatever the spec: debian:6.1/arm64 ->
        debian-6.1-arm64; path:/long/dir/vmlinuz-X,modules=... -> vmlinuz-X-arm64-1a2b3c4d."""
        scheme, _, rest = self.kernel.partition(":")
        if scheme == "debian":
            return safe_name(f"debian-{rest}-{self.arch}")
        stem = Path(rest.split(",")[0].rstrip("/")).name or scheme
        digest = hashlib.sha1(self.kernel.encode()).hexdigest()[:8]
        return safe_name(f"{stem[:24]}-{self.arch}-{digest}")

    def __str__(self) -> str:
        return self.id


def safe_name(name: str, limit: int = 150) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")
    if len(name) > limit:       # readable head, unique tail
        name = name[:limit - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def expand(kernel_specs: list[str], arch_names: list[str]) -> list[Target]:
    """The kernel x arch targets (the defaults where none are given), each spec parsed
    and each arch known: one clear line, before anything boots (the CLI's and pytest's)."""
    ks = kernel_specs or list(kernels.DEFAULT_KERNELS)
    archs = arch_names or list(profiles.DEFAULT_ARCHES)
    for a in archs:
        profiles.get(a)
    for k in ks:
        kernels.parse_spec(k)
    return [Target(k, a) for k in ks for a in archs]


def check(ts: list[Target], host: bool = True) -> None:
    """Everything about the targets that can be known before booting: specs, images
    (there, of the arch, whole) and, with `host`, QEMU and firmware.  GuestpmError on
    the first problem."""
    for t in ts:
        kernels.check_spec(t.kernel, profiles.get(t.arch))
    for p in {profiles.get(t.arch) for t in ts} if host else ():
        host_packages.check_qemu(p)
    if host:
        host_packages.check_host([profiles.get(t.arch) for t in ts])
