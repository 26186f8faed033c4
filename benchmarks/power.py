"""Power-transition benchmark: S3 cycle, s2idle round trip, hibernate round trip.

Per kernel x arch, on one booted guest each (the same code paths the tests use):
  S3        x86 `-M pc` (q35 cannot do a second S3 cycle: docs/known-defects.md):
            `echo mem` -> QMP SUSPEND, system_wakeup -> WAKEUP -> the write returns
  s2idle    x86 q35 with the s2idle SSDT, woken by system_powerdown; arm64 woken by
            serial input: `echo freeze` -> the guest's 'PM: suspend-to-idle', wake -> return
  hibernate `echo disk` -> QEMU exits; the same command line again -> the restored
            kernel's "hibernation exit" (restore) -> first ssh command on it
Prints the median of --reps cycles (hibernate: --hib-reps round trips) in seconds.
Figures are host wall time under TCG; compare ratios within one run.

    .venv/bin/python benchmarks/power.py [--kernel K]... [--arch A]... [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import profiles
from harness.image import disks, rootfs
from harness.kernel import kernels
from harness.vm.machine import Machine
from harness.vm.power import (
    HIBERNATE_APPEND,
    PM_DEBUG,
    arm_s2idle_wake,
    console_shows_idle,
    hibernate,
    s2idle_machine_args,
    suspend_to_idle,
    suspend_to_ram,
)


def _boot(profile, kernel, initrd, workdir: Path, **kw) -> Machine:
    m = Machine(profile, kernel, initrd, workdir, **kw).launch()
    m.wait_ready()
    return m


def s3(profile, kernel, workdir: Path, reps: int) -> list[float]:
    pc = profiles.get("x86_64-pc")
    with _boot(pc, kernel, rootfs.initramfs(kernel, pc), workdir / "s3") as m:
        m.ssh.run("echo deep > /sys/power/mem_sleep").check()
        out = []
        for _ in range(reps):
            c = suspend_to_ram(m, lambda: m.qmp.execute("system_wakeup"))
            assert c.status == 0
            out.append(c.suspend_s + c.wake_s + c.return_s)
        return out


def s2idle(profile, kernel, initrd, workdir: Path, reps: int) -> list[float]:
    """The profile's own s2idle recipe (harness.vm.power), as the tests run it."""
    with _boot(profile, kernel, initrd, workdir / "s2idle", **s2idle_machine_args(profile)) as m:
        m.ssh.run(PM_DEBUG).check()
        wake = arm_s2idle_wake(m)
        out = []
        for _ in range(reps):
            c = suspend_to_idle(m, wake, console_shows_idle(m))
            assert c.status == 0
            out.append(c.entered_s + c.return_s)
        return out


def hibernation(profile, kernel, initrd, workdir: Path, reps: int) -> list[tuple]:
    """(round trip, echo disk -> QEMU exit, relaunch -> restored and answering ssh)"""
    image = disks.overlay(disks.swap_base(), workdir / "swap.qcow2")
    m = _boot(profile, kernel, initrd, workdir / "hibernate",
              qemu_args=disks.virtio_disk_args(image),
              append=HIBERNATE_APPEND)
    out = []
    try:
        m.ssh.run("swapon /dev/vda").check()
        for _ in range(reps):
            t0 = time.monotonic()
            hibernate(m)
            t1 = time.monotonic()
            m.relaunch()
            if not m.wait_restored():
                raise RuntimeError(f"booted afresh instead of restoring ({m.console_log})")
            m.ssh.run("true").check()
            t2 = time.monotonic()
            out.append((t2 - t0, t1 - t0, t2 - t1))
    finally:
        m.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append")
    ap.add_argument("--arch", action="append")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hib-reps", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for spec in a.kernel or kernels.DEFAULT_KERNELS:
        for arch in a.arch or profiles.DEFAULT_ARCHES:
            p = profiles.get(arch)
            k = kernels.resolve(spec, p)
            initrd = rootfs.initramfs(k, p)
            with tempfile.TemporaryDirectory(prefix="guestpm-bench-") as tmp:
                wd = Path(tmp)
                row = {"target": f"{spec} {arch}"}
                row["s3"] = s3(p, k, wd, a.reps) if arch == "x86_64" else None
                row["s2idle"] = s2idle(p, k, initrd, wd, a.reps)
                try:
                    row["hibernate"] = hibernation(p, k, initrd, wd, a.hib_reps)
                except Exception as e:          # a known defect must not hide the rest
                    row["hibernate"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0]}"
            rows.append(row)
            print(_fmt(row), flush=True)
    return 0


def _fmt(row: dict) -> str:
    def med(v):
        if v is None:
            return "-"
        if isinstance(v, str):
            return v[:60]
        if isinstance(v[0], tuple):           # hibernate: round trip (power-off + restore)
            total, off, back = (statistics.median(x) for x in zip(*v))
            return f"{total:6.2f} (n={len(v)}; off {off:.2f} + restore {back:.2f})"
        return f"{statistics.median(v):6.2f} (n={len(v)}, {min(v):.2f}-{max(v):.2f})"
    return f"{row['target']:<18} S3 {med(row['s3']):<28} s2idle {med(row['s2idle']):<28} " \
           f"hibernate {med(row['hibernate'])}"


if __name__ == "__main__":
    sys.exit(main())
