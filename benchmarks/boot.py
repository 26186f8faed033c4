"""Boot benchmark: QEMU start -> shell, per kernel x arch.

For each target, alternately (so machine noise hits both alike):
  bare     the same QEMU argv the harness builds, read by a minimal loop on the
           console socket until /init's ready line: the floor any harness pays;
           also the first sign of the kernel on the console (its first byte, or the
           profile's kernel_started line after firmware): what silent_after_s bounds;
  harness  Machine.launch() + wait_ready() (QMP negotiated, console via pexpect,
           host key parsed) and then the first ssh command.
Prints median wall times, the guest's own uptime at the ready line, and the
harness overhead ratio = harness / bare - 1 (goal <= 10 %).

    .venv/bin/python benchmarks/boot.py [--kernel K]... [--arch A]... [--reps N]
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import profiles
from harness.image import rootfs
from harness.kernel import kernels
from harness.vm import cmdline
from harness.vm.boot import READY
from harness.vm.machine import Machine
from harness.vm.ssh import KeyPair


def bare(profile, kernel, initrd) -> tuple[float, float, float]:
    qmp_a, qmp_b = socket.socketpair()
    con_a, con_b = socket.socketpair()
    spec = cmdline.BootSpec(str(kernel.image), str(initrd), qmp_b.fileno(), con_b.fileno(),
                            append=(f"guestpm.authkey={KeyPair.generate().cmdline_value}",))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmdline.qemu_args(profile, spec), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(qmp_b.fileno(), con_b.fileno()))
    qmp_b.close()
    con_b.close()
    buf, first = b"", None
    try:
        con_a.settimeout(300)
        while True:
            data = con_a.recv(65536)
            if not data:
                raise RuntimeError("QEMU exited before the ready line")
            buf += data
            if not first and (not profile.kernel_started or
                              re.search(profile.kernel_started, buf.decode(errors="replace"))):
                first = time.monotonic() - t0
            m = READY.search(buf.decode(errors="replace"))
            if m:
                return time.monotonic() - t0, float(m.group(1)), first
    finally:
        proc.kill()
        proc.wait()
        qmp_a.close()
        con_a.close()


def harness(profile, kernel, initrd) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as work:
        m = Machine(profile, kernel, initrd, Path(work)).launch()
        try:
            info = m.wait_ready()
            m.ssh.run("true").check()
            return info.wall_s, info.guest_uptime_s, time.monotonic() - m.started_at
        finally:
            m.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", action="append", default=[])
    ap.add_argument("--arch", action="append", default=[])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ks = args.kernel or list(kernels.DEFAULT_KERNELS)
    archs = args.arch or list(profiles.DEFAULT_ARCHES)
    print(f"{'kernel':<12} {'arch':<10} {'1st byte':>8} {'bare s':>7} {'harness s':>9} "
          f"{'uptime s':>8} {'+ssh s':>7} {'overhead':>8}")
    for k in ks:
        for a in archs:
            p = profiles.get(a)
            kern = kernels.resolve(k, p)
            initrd = rootfs.initramfs(kern, p)
            b, h, u, s, f = [], [], [], [], []
            for _ in range(args.reps):
                bw, _up, first = bare(p, kern, initrd)
                f.append(first)
                hw, up, ssh_s = harness(p, kern, initrd)
                b.append(bw)
                h.append(hw)
                u.append(up)
                s.append(ssh_s)
            mb, mh = statistics.median(b), statistics.median(h)
            print(f"{k:<12} {a:<10} {statistics.median(f):8.2f} {mb:7.2f} {mh:9.2f} "
                  f"{statistics.median(u):8.2f} "
                  f"{statistics.median(s):7.2f} {(mh / mb - 1) * 100:7.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
