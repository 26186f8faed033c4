"""Disk images for guests: a cached, formatted swap base and per-test overlays on it.

The base is made once (a sparse raw file with a swap signature) and never written by a
guest: each test gets a qcow2 overlay, so a hibernation image in one test cannot be
found by another, and a fresh overlay is an empty swap by construction."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness import cache
from harness.errors import SetupError

SWAP_MB = 1024


def _tool(cmd: str, package: str) -> str:
    path = shutil.which(cmd) or next((p for p in (f"/sbin/{cmd}", f"/usr/sbin/{cmd}")
                                      if Path(p).exists()), None)
    if not path:
        raise SetupError(f"{cmd} not found: apt-get install {package} (or guestpm setup)")
    return path


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout}")


def swap_base(size_mb: int = SWAP_MB) -> Path:
    """A raw image holding an empty swap area (label guestpm-swap), cached."""
    base = cache.cache_dir() / "disks" / f"swap-{size_mb}M.raw"
    if base.exists():
        return base
    mkswap = _tool("mkswap", "util-linux")
    with cache.locked(base):
        if not base.exists():
            tmp = base.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.truncate(size_mb << 20)
            _run([mkswap, "-L", "guestpm-swap", str(tmp)])
            tmp.rename(base)
    return base


def overlay(base: Path, dest: Path) -> Path:
    """A fresh qcow2 overlay on `base` at `dest` (replacing any old one)."""
    qemu_img = _tool("qemu-img", "qemu-utils")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    _run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base.resolve()), "-F", "raw",
          str(dest)])
    return dest


def virtio_disk_args(image: Path, node: str = "swap", fmt: str = "qcow2",
                     readonly: bool = False) -> tuple[str, ...]:
    """QEMU arguments attaching `image` as a virtio-blk disk (the guest's vda)."""
    ro = ",readonly=on" if readonly else ""
    return ("-drive", f"if=none,id={node},file={image.resolve()},format={fmt}{ro}",
            "-device", f"virtio-blk-pci,drive={node}")


def payload(data: bytes, name: str) -> Path:
    """`data` as a raw disk (padded to whole sectors), cached by content: how a file
    reaches a guest without ssh (48 MB over slirp takes 20 s under TCG, a disk ~1 s)."""
    out = cache.cache_dir() / "disks" / f"{name}-{cache.digest(data)[:16]}.raw"
    if not out.exists():
        with cache.locked(out):
            if not out.exists():
                cache.write_atomic(out, data + b"\0" * (-len(data) % 512))
    return out

