"""L2 benchmark: a real guest kernel under the kernel under test's KVM, with guestpm's
reference VMM, per kernel and KVM mode; and where an L2 scenario's time goes.

`--results DIR` reads a finished run (results/machines/*/l2-*/result.json and
boots.jsonl) and prints, per VMM run, the phases of its time (seconds, the VMM's clock
in L1; the L1 host's boot from boots.jsonl):
  L1 boot    the L1 host machine's boot to its ready line (its first run only)
  L2 boot    VMM start -> the L2 /init's first report ("up"); `(k N)`: the L2 kernel's
             uptime at that report, the rest is the VMM's set-up and the kernel's early
             boot before its clock starts
  pre-clock  that rest (L2 boot - k): about 9 s more on a >= 6.3 L1 host whose CPU lacks
             FEAT_EVT (QEMU 7.2's max), where KVM traps every CTR_EL0 read (figures.md)
  scenario   "up" -> `echo disk` ("hibernating"), or -> the end of the run (suspend)
  write      "hibernating" -> the SHUTDOWN exit: the image's preallocation, creation,
             compression and write to pmem
  relaunch   the new VM's start -> its /init's "up" report (the booting kernel)
  read       its "up" -> the restored /init's "thawed" (or its end, when the image is
             refused): the image's read and the restore
  console    PL011 MMIO exits of the run (and of its relaunch): each costs milliseconds
Live (without --results), per L1 host (VHE, nVHE) it boots one and prints:
  mmio      one MMIO exit through L1 KVM and the VMM's Python: wall us per exit, and
            the Python share (harness.guest.vmm.arm64.bench, 2000 loads)
  boot      L2 boot: the VMM's wall time from start to the scenario's first report,
            the L2 uptime at that report, MMIO exits in the whole honour scenario
  suspend   SYSTEM_SUSPEND honoured in KVM with a 10 s RTC alarm: SUSPEND exit ->
            WAKEUP exit (the alarm's wait included), WAKEUP -> the L2 "resumed" report
  whole     the VMM's wall time for the whole honour scenario (boot, suspend, power-off)
  hibernate the phases above for a SYSTEM_OFF2 round trip onto a pmem swap, with the
            hibernation tests' RAM (tests/e2e/test_l2_hibernate.py)
Figures are host wall time under TCG (L1) and L1 KVM (L2); compare ratios in one run.

    .venv/bin/python benchmarks/l2.py [--kernel K]... [--mode vhe|nvhe]... [--skip mmio,suspend]
    .venv/bin/python benchmarks/l2.py --results DIR
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import profiles
from harness.image import rootfs
from harness.kernel import kernels
from harness.results.runs import latest
from harness.vm import l2
from harness.vm.machine import Machine

VMM = f"{l2.VMM} --kernel {l2.KERNEL_DISK} --initrd-extra {l2.MODULES_DISK} "
HIBERNATE_RAM_MIB = 384            # tests/e2e/test_l2_hibernate.py's RAM_MIB and RESUME
RESUME = "guestpm.resume=pmem0 no_console_suspend oops=panic"


def _json(m: Machine, cmd: str) -> dict:
    r = m.ssh.run(cmd, timeout=600)
    return json.loads(r.output.strip().splitlines()[-1])


def _t(exits: list[dict], event: str, text: str = "", typ: str = "") -> float | None:
    return next((e["t"] for e in exits if e["event"] == event
                 and e.get("text", "").startswith(text) and e.get("type", "") == typ), None)


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def breakdown(result: dict) -> dict:
    """The phases of one VMM run's time (see the module's docstring; pure): None where
    the run has no such phase."""
    ex = result["exits"]
    start, up = _t(ex, "start"), _t(ex, "l2-report", "up ")
    upline = next((e["text"] for e in ex if e["event"] == "l2-report"
                   and e["text"].startswith("up ")), "")
    uptime = re.search(r"uptime=([\d.]+)", upline)
    hib = _t(ex, "l2-report", "hibernating")
    down = _t(ex, "system-event", typ="SHUTDOWN")
    end = _t(ex, "finish")
    out = {"ram_mib": next((e["ram_mib"] for e in ex if e["event"] == "setup"), None),
           "l2_boot": _sub(up, start), "l2_uptime": float(uptime.group(1)) if uptime else None,
           "before_clock": _sub(_sub(up, start), float(uptime.group(1)) if uptime else None),
           "scenario": _sub(hib if hib is not None else end, up),
           "write": _sub(down, hib) if hib is not None else None,
           "relaunch": None, "read": None,
           "console_exits": result.get("mmio_exits", {}).get("pl011", 0),
           "whole": result.get("elapsed_s")}
    again = result.get("relaunch")
    if again:
        rx = again["exits"]
        rup = _t(rx, "l2-report", "up ")
        out["relaunch"] = _sub(rup, _t(rx, "start"))
        out["read"] = _sub(_t(rx, "l2-report", "thawed") or _t(rx, "finish"), rup)
        out["console_exits"] += again.get("mmio_exits", {}).get("pl011", 0)
        out["whole"] = round(out["whole"] + again.get("elapsed_s", 0), 1)
    return out


def from_results(res: Path) -> list[tuple[str, str, dict, float | None]]:
    """(machine, run, its breakdown, the L1 host's boot for its first run) for each VMM
    run of a finished run (a run directory, or a results directory's latest run)."""
    res = Path(res) if (Path(res) / "boots.jsonl").exists() or (Path(res) / "machines").exists() \
        else latest(res) or Path(res)
    boots = {}
    if (res / "boots.jsonl").exists():
        for line in (res / "boots.jsonl").read_text().splitlines():
            b = json.loads(line)
            if b["kind"] == "boot":
                boots.setdefault(b["machine"], b["wall_s"])
    rows = []
    for f in sorted((res / "machines").glob("*/l2-*/result.json"),
                    key=lambda p: (p.parent.parent.name, int(p.parent.name.split("-")[2]))):
        machine, run = f.parent.parent.name, f.parent.name
        first = run.split("-")[2] == "0"
        rows.append((machine, run, breakdown(json.loads(f.read_text())),
                     boots.get(machine) if first else None))
    return rows


def _cell(v) -> str:
    return "-" if v is None else f"{v:g}"


def print_breakdown(rows) -> None:
    print(f"{'L1 host machine':<44} {'run':<22} {'RAM':>4} {'L1 boot':>7} {'L2 boot (k)':>13} "
          f"{'pre-clock':>9} {'scenario':>8} {'write':>6} {'relaunch':>8} {'read':>6} "
          f"{'console':>7} {'whole':>6}")
    for machine, run, b, l1 in rows:
        boot = f"{_cell(b['l2_boot'])} ({_cell(b['l2_uptime'])})"
        print(f"{machine[:44]:<44} {run[:22]:<22} {_cell(b['ram_mib']):>4} {_cell(l1):>7} "
              f"{boot:>13} {_cell(b['before_clock']):>9} {_cell(b['scenario']):>8} "
              f"{_cell(b['write']):>6} "
              f"{_cell(b['relaunch']):>8} {_cell(b['read']):>6} {b['console_exits']:>7} "
              f"{_cell(b['whole']):>6}")


def before_clock_by_host(rows) -> dict[str, tuple[float, int]]:
    """(median pre-clock seconds, runs) per L1 host kernel, from from_results' rows (pure):
    the L1 host, not the L2 guest, decides it (figures.md, issue 30)."""
    by: dict[str, list[float]] = {}
    for machine, _run, b, _l1 in rows:
        if b["before_clock"] is not None:
            by.setdefault(machine.split("-l2-")[0], []).append(b["before_clock"])
    return {h: (round(statistics.median(v), 1), len(v)) for h, v in sorted(by.items())}


def one(profile, kernel, mode: str, workdir: Path, skip: set[str]) -> dict:
    out: dict = {}
    with Machine(profile, kernel, rootfs.initramfs(kernel, profile), workdir,
                 append=l2.MODES[mode], qemu_args=l2.guest_disks(kernel).qemu_args) as m:
        m.launch()
        out["l1_boot_s"] = round(m.wait_ready().wall_s, 1)
        if "mmio" not in skip:
            out["mmio"] = _json(m, "cd /opt/guestpm && python3 -m harness.guest.vmm.arm64.bench 2000")
        if "suspend" not in skip:
            out["run"] = _json(m, VMM + "--suspend honour --append 'guestpm.suspend=1 "
                               "guestpm.mem_sleep=deep guestpm.alarm=10'")
        if "hibernate" not in skip:
            out["hib"] = _json(m, VMM + f"--suspend off --ram-mib {HIBERNATE_RAM_MIB} --pmem "
                               f"/tmp/bench-pmem --relaunch always --relaunch-append "
                               f"'{RESUME}' --append '{RESUME} guestpm.hibernate=1'")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append")
    ap.add_argument("--mode", action="append", choices=list(l2.MODES))
    ap.add_argument("--skip", default="", help="comma-separated: mmio, suspend, hibernate")
    ap.add_argument("--results", type=Path, help="break down the L2 runs of a finished run")
    a = ap.parse_args()
    if a.results:
        rows = from_results(a.results)
        print_breakdown(rows)
        for host, (med, n) in before_clock_by_host(rows).items():
            print(f"{host}: pre-clock median {med:g} s over {n} VMM runs")
        return 0
    skip = set(filter(None, a.skip.split(",")))
    p = profiles.get("arm64")
    for spec in a.kernel or kernels.DEFAULT_KERNELS:
        k = kernels.resolve(spec, p)
        for mode in a.mode or list(l2.MODES):
            with tempfile.TemporaryDirectory(prefix="guestpm-bench-") as tmp:
                r = one(p, k, mode, Path(tmp), skip)
            print(f"{spec} {mode}: L1 boot {r['l1_boot_s']} s", flush=True)
            if "mmio" in r:
                print(f"  MMIO exit {r['mmio']['us_per_exit']} us, of which Python "
                      f"{r['mmio']['python_us_per_exit']} us", flush=True)
            if "run" in r:
                ex = r["run"]["exits"]
                susp, wake = _t(ex, "system-event", typ="SUSPEND"), _t(ex, "system-event",
                                                                        typ="WAKEUP")
                b = breakdown(r["run"])
                print(f"  suspend (honour): L2 boot {b['l2_boot']} s (uptime {b['l2_uptime']}), "
                      f"SUSPEND->WAKEUP {_sub(wake, susp)} s, WAKEUP->resumed "
                      f"{_sub(_t(ex, 'l2-report', 'resumed'), wake)} s, whole {b['whole']} s, "
                      f"MMIO exits {sum(r['run']['mmio_exits'].values())} ({r['run']['outcome']})",
                      flush=True)
            if "hib" in r:
                b = breakdown(r["hib"])
                print(f"  hibernate ({HIBERNATE_RAM_MIB} MiB): L2 boot {b['l2_boot']} s (uptime "
                      f"{b['l2_uptime']}), scenario {b['scenario']}, write {b['write']}, "
                      f"relaunch {b['relaunch']}, read {b['read']}, console exits "
                      f"{b['console_exits']}, whole {b['whole']} s ({r['hib']['outcome']}, "
                      f"relaunch {(r['hib'].get('relaunch') or {}).get('outcome')})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
