"""L2 benchmark: a real guest kernel under the kernel under test's KVM, with guestpm's
reference VMM, per kernel and KVM mode.

Per L1 host (VHE, nVHE) it prints:
  mmio      one MMIO exit through L1 KVM and the VMM's Python: wall us per exit, and
            the Python share (harness.guest.vmm.arm64.bench, 2000 loads)
  boot      L2 boot: the VMM's wall time from start to the scenario's first report,
            the L2 uptime at that report, MMIO exits in the whole honour scenario
  suspend   SYSTEM_SUSPEND honoured in KVM with a 10 s RTC alarm: SUSPEND exit ->
            WAKEUP exit (the alarm's wait included), WAKEUP -> the L2 "resumed" report
  whole     the VMM's wall time for the whole honour scenario (boot, suspend, power-off)
  hibernate SYSTEM_OFF2 round trip onto a pmem swap (512 MiB guest): `echo disk` (the
            "hibernating" report) -> the SHUTDOWN exit, and the new VM's start -> the
            restored /init's "thawed" report
Figures are host wall time under TCG (L1) and L1 KVM (L2); compare ratios in one run.

    .venv/bin/python benchmarks/l2.py [--kernel K]... [--mode vhe|nvhe]...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import profiles
from harness.image import rootfs
from harness.kernel import kernels
from harness.vm import l2
from harness.vm.machine import Machine

VMM = f"{l2.VMM} --kernel {l2.KERNEL_DISK} --initrd-extra {l2.MODULES_DISK} "


def _json(m: Machine, cmd: str) -> dict:
    r = m.ssh.run(cmd, timeout=400)
    return json.loads(r.output.strip().splitlines()[-1])


def _t(exits: list[dict], event: str, text: str = "", typ: str = "") -> float:
    return next(e["t"] for e in exits if e["event"] == event
                and e.get("text", "").startswith(text) and e.get("type", "") == typ)


def one(profile, kernel, mode: str, workdir: Path) -> dict:
    with Machine(profile, kernel, rootfs.initramfs(kernel, profile), workdir,
                 append=l2.MODES[mode], qemu_args=l2.guest_disks(kernel).qemu_args) as m:
        m.launch()
        m.wait_ready()
        mmio = _json(m, "cd /opt/guestpm && python3 -m harness.guest.vmm.arm64.bench 2000")
        run = _json(m, VMM + "--suspend honour --append 'guestpm.suspend=1 "
                    "guestpm.mem_sleep=deep guestpm.alarm=10'")
        res = "guestpm.resume=pmem0 no_console_suspend"
        hib = _json(m, VMM + f"--suspend off --ram-mib 512 --pmem /tmp/bench-pmem --relaunch "
                    f"always --relaunch-append '{res}' --append '{res} guestpm.hibernate=1'")
    ex = run["exits"]
    up = next(e for e in ex if e["event"] == "l2-report" and e["text"].startswith("up "))
    uptime = float(up["text"].split("uptime=")[1].split()[0])
    suspend = _t(ex, "system-event", typ="SUSPEND")
    wake = _t(ex, "system-event", typ="WAKEUP")
    resumed = _t(ex, "l2-report", "resumed")
    hx, rx = hib["exits"], (hib.get("relaunch") or {}).get("exits", [])
    try:
        off = round(_t(hx, "system-event", typ="SHUTDOWN") - _t(hx, "l2-report", "hibernating"), 1)
        back = round(_t(rx, "l2-report", "thawed") - _t(rx, "start"), 1)
        hibernate = f"{off}+{back}"
    except StopIteration:
        hibernate = f"failed ({hib['outcome']}, relaunch {(hib.get('relaunch') or {}).get('outcome')})"
    return {"mmio_us": mmio["us_per_exit"], "python_us": mmio["python_us_per_exit"],
            "boot_s": round(up["t"], 2), "l2_uptime_s": uptime,
            "boot_mmio_exits": sum(run["mmio_exits"].values()),
            "suspend_to_wakeup_s": round(wake - suspend, 2),
            "wakeup_to_resumed_s": round(resumed - wake, 2), "whole_s": run["elapsed_s"],
            "outcome": run["outcome"], "hibernate": hibernate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append")
    ap.add_argument("--mode", action="append", choices=list(l2.MODES))
    a = ap.parse_args()
    p = profiles.get("arm64")
    print(f"{'kernel':<12} {'mode':<5} {'MMIO us':>8} {'(py)':>6} {'L2 boot s':>9} "
          f"{'uptime':>6} {'exits':>6} {'susp->wake':>10} {'wake->L2':>8} {'whole s':>7} "
          "hibernate off+restore s")
    for spec in a.kernel or kernels.DEFAULT_KERNELS:
        k = kernels.resolve(spec, p)
        for mode in a.mode or list(l2.MODES):
            with tempfile.TemporaryDirectory(prefix="guestpm-bench-") as tmp:
                r = one(p, k, mode, Path(tmp))
            print(f"{spec:<12} {mode:<5} {r['mmio_us']:>8} {r['python_us']:>6} "
                  f"{r['boot_s']:>9} {r['l2_uptime_s']:>6} {r['boot_mmio_exits']:>6} "
                  f"{r['suspend_to_wakeup_s']:>10} {r['wakeup_to_resumed_s']:>8} "
                  f"{r['whole_s']:>7} {r['hibernate']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
