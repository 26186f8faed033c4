"""Matrix benchmark: what the default `guestpm run` costs, and where the time goes.

Runs the default matrix (or, with --results DIR alone, reads a run that already
happened) and prints:
  wall     the run's wall time and the CPU time of everything it started (QEMU
           included: the children's rusage), measured only with --run;
  boots    QEMU boots per machine configuration (kernel, profile, extra arguments:
           the command line without the per-instance parts: fds, keys, ports, the
           test's own overlay paths), their ratio to the distinct configurations,
           and snapshot restores (`-incoming`) apart;
  restore  per profile, the mean time of a boot, a restore and a snapshot's write
           (results/latest/boots.jsonl);
  families the test time of each family (the sum of its tests' durations in the
           verdict record; under -n 2 that is about twice the wall share), L2 on its
           own.

    .venv/bin/python benchmarks/matrix.py --run [--results DIR] [-- guestpm run args]
    .venv/bin/python benchmarks/matrix.py --results DIR

DIR is a run directory or a results directory whose `latest` is read; a run from
before run directories (junit.xml, no verdicts.jsonl) is read as it is.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import resource
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.plugin.pool import FIRST_BOOT
from harness.plugin.summary import family_of
from harness.results import runs, verdicts

# the parts of a QEMU command line that differ between two boots of one configuration
_INSTANCE = [
    (re.compile(r"\bfd=\d+"), "fd=N"),
    (re.compile(r"guestpm\.authkey=\S+?(?=[ ']|$)"), "guestpm.authkey=K"),
    (re.compile(r"(?<=[=,])/\S*?/(pytest-\d+|machines)/[^,' ]*/([^/,' ]+)"), r"TEST/\2"),
    (re.compile(r"(?<=[=,])/tmp/[^,' ]*/(qmp\.sock)"), r"TMP/\1"),
]
_INCOMING = re.compile(r" -incoming ('exec:[^']*'|\S+)")


def configuration(cmdline: str) -> str:
    """A QEMU command line without what is particular to one boot, a restore's
    `-incoming` included (pure)."""
    cmdline = _INCOMING.sub("", cmdline)
    for pattern, repl in _INSTANCE:
        cmdline = pattern.sub(repl, cmdline)
    return cmdline.strip()


def label(config: str) -> str:
    """A short name for a configuration: kernel, machine, firmware, what the test added
    (devices, drives, ACPI tables, kernel parameters)."""
    args = shlex.split(config)

    def value(flag: str) -> str:
        return args[args.index(flag) + 1] if flag in args else ""
    image = Path(value("-kernel"))
    kernel = image.parent.name if image.name == "vmlinuz" else image.name
    base = {"-M", "-accel", "-cpu", "-smp", "-m", "-chardev", "-mon", "-serial", "-netdev",
            "-kernel", "-initrd", "-append", "-display"}
    added = []
    for i, a in enumerate(args[1:-1], 1):
        if a.startswith("-") and a not in base and not args[i + 1].startswith("-"):
            v = args[i + 1]
            if a == "-device" and v.startswith("virtio-net-pci,netdev=net0") or \
                    a == "-global" and ".disable_s" in v:         # the profile's own
                continue
            parts = dict(x.partition("=")[::2] for x in v.split(",") if "=" in x)
            shown = v if a == "-global" else Path(parts.get("file", v.split(",")[0])).name
            added.append(f"{a} {shown}")
        elif a in ("-machine", "-bios"):
            added.append(a)
    params = [p for p in value("-append").split()
              if not p.startswith(("console=", "panic=", "rdinit=", "guestpm.authkey"))]
    return " ".join([kernel.removeprefix("vmlinuz-"), value("-M").split(",")[0], *added,
                     *params])


def starts(machines: Path) -> tuple[collections.Counter, collections.Counter]:
    """QEMU boots and snapshot restores per configuration, from each machine's
    qemu-cmdline*.txt."""
    booted: collections.Counter = collections.Counter()
    restored: collections.Counter = collections.Counter()
    for f in sorted(machines.glob("*/qemu-cmdline*.txt")):
        text = f.read_text()
        (restored if _INCOMING.search(text) else booted)[configuration(text)] += 1
    return booted, restored


OWN_BOOT = "the test's own boot, its subject"


def _runs(machine: Path) -> list[Path]:
    """A machine's QEMU command lines in the order they ran (run2 after the first)."""
    def order(f: Path) -> int:
        m = re.search(r"\.run(\d+)\.txt$", f.name)
        return int(m.group(1)) if m else 1
    return sorted(machine.glob("qemu-cmdline*.txt"), key=order)


def _reason(why: str) -> str:
    """A boot's recorded reason without what is particular to it (paths, seconds)."""
    return re.sub(r"\d+(\.\d+)? s\b", "N s", why.split(" (")[0].split(": ")[0])


def extra_boots(results: Path) -> collections.Counter:
    """The boots beyond one per configuration, by why each was not a restore: the
    `why` of its boots.jsonl line (harness/plugin/pool.py), or, for a start with no
    line, the test's own boot.  Of each configuration's boots, the first of its
    configuration (else any recorded one) is its one boot."""
    whys: dict[str, list[str]] = collections.defaultdict(list)
    path = results / "boots.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec["kind"] == "boot":
            whys[rec["machine"]].append(rec.get("why", "not recorded"))
    per_config: dict[str, list[str]] = collections.defaultdict(list)
    for machine in sorted(p for p in (results / "machines").glob("*") if p.is_dir()):
        recorded = iter(whys.get(machine.name, []))
        for f in _runs(machine):
            text = f.read_text()
            if not _INCOMING.search(text):
                per_config[configuration(text)].append(next(recorded, OWN_BOOT))
    extra: collections.Counter = collections.Counter()
    for reasons in per_config.values():
        one = FIRST_BOOT if FIRST_BOOT in reasons else \
            next((r for r in reasons if r != OWN_BOOT), reasons[0])
        reasons.remove(one)
        extra.update(r if r == OWN_BOOT else _reason(r) for r in reasons)
    return extra


def start_times(boots_jsonl: Path) -> dict[str, dict[str, list[float]]]:
    """Per profile and kind (boot, restore, snapshot): the seconds each took."""
    out: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    if boots_jsonl.exists():
        for line in boots_jsonl.read_text().splitlines():
            rec = json.loads(line)
            out[rec["profile"]][rec["kind"]].append(rec["wall_s"])
    return out


def run_dir(results: Path) -> Path:
    """The run to read: `results` itself, or its latest; an older run's layout as is."""
    try:
        return runs.resolve(results)
    except verdicts.RecordError:
        return results


def family_times(results: Path) -> dict[str, float]:
    """Seconds of test time per family (the e2e files; unit tests as `unit`)."""
    out: dict[str, float] = collections.defaultdict(float)
    if (results / verdicts.FILE).is_file():
        for v in verdicts.read(results).verdicts:
            out[family_of(v.file)] += v.duration
        return dict(out)
    for tc in ET.parse(results / "junit.xml").iter("testcase"):    # before run directories
        module = tc.get("classname", "").replace(".", "/")
        out[family_of(module + ".py")] += float(tc.get("time", 0))
    return dict(out)


def report(results: Path, wall: float | None, cpu: float | None) -> str:
    lines = []
    if wall is not None:
        lines.append(f"wall {wall:7.0f} s   CPU (all children) {cpu:7.0f} s")
    b, r = starts(results / "machines")
    total, distinct = sum(b.values()), len(set(b) | set(r))
    lines.append(f"boots {total}, distinct configurations {distinct}, ratio "
                 f"{total / max(distinct, 1):.2f}, snapshot restores {sum(r.values())}")
    for config, n in b.most_common():
        if n > 1:
            lines.append(f"  {n:3d} x {label(config)}")
    extra = extra_boots(results)
    lines.append(f"boots beyond one per configuration: {sum(extra.values())}, by why")
    for why, n in extra.most_common():
        lines.append(f"  {n:3d}  {why}")
    times = start_times(results / "boots.jsonl")
    if times:
        lines.append("restore against boot (mean seconds, count):")
    for profile, kinds in sorted(times.items()):
        lines.append(f"  {profile:12s} " + "   ".join(
            f"{kind} {sum(v) / len(v):5.2f} ({len(v)})"
            for kind in ("boot", "restore", "snapshot") if (v := kinds.get(kind))))
    times = family_times(results)
    lines.append("families (test seconds):")
    for fam, t in sorted(times.items(), key=lambda kv: -kv[1]):
        if fam != "l2":
            lines.append(f"  {fam:12s} {t:7.0f}")
    if "l2" in times:
        lines.append(f"  {'L2 (apart)':12s} {times['l2']:7.0f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run the default matrix first")
    ap.add_argument("--results", default=str(ROOT / "results"),
                    help="a run directory, or a results directory (its latest is read)")
    ap.add_argument("guestpm_args", nargs="*", help="more `guestpm run` arguments (after --)")
    a = ap.parse_args(argv)
    results = Path(a.results)
    wall = cpu = None
    if a.run:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run([str(ROOT / ".venv" / "bin" / "guestpm"), "run",
                        f"--results={results}", *a.guestpm_args], cwd=ROOT)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(report(run_dir(results), wall, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
