"""Replay a finished run through the work-unit scheduler for N workers.

From a results directory (junit.xml, boots.jsonl, tests/*/machine-* links) it takes each
test's measured duration, groups the tests into the work units of
harness/plugin/units.py (or, with --units target, one unit per target: the start
commit's), and simulates pytest-xdist handing the units out as the plugin's scheduler
does (units.pick: the longest estimate first, unless a unit of the worker's own target is
nearly as long; the shortest to a worker still busy), a worker takes its next unit when
at most two of its
tests are left (xdist's low watermark; a worker holds its last test until it knows the
next one), and a worker runs a unit's tests in order.

The boots of the pool's machines (the shared machine, the PSCI, vfio and L1 hosts) are
taken out of the tests that paid for them in the measured run and charged again to each
worker that needs such a machine in the replay: a worker keeps a target's pool while it
runs units of that target one after another, and boots it anew after a unit of another
target.  So a split that makes a machine boot twice shows it.  A machine that the
measured run restored from a snapshot is charged its profile's mean boot (another worker
would have no snapshot to restore).

It prints one row per N (`N seconds`), then the critical path: the unit that takes
longest alone, with the boots it needs.

    .venv/bin/python benchmarks/schedule.py --results DIR [--units units|target] [--workers 2 4 8 16]
        [--without-self-tests]     # what `guestpm run` runs
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.plan.targets import Target, safe_name
from harness.plugin import units as unitsmod
from harness.results import runs, verdicts
from harness.results.runs import latest

WATERMARK = 2          # xdist loadscope: more work when at most this many tests are left


@dataclass
class Test:
    nodeid: str
    seconds: float                          # measured, its pool boots taken out
    target: str | None = None
    needs: set[tuple[str, str]] = field(default_factory=set)   # pool machines (target, tag)


def nodeid_of(classname: str, name: str, root: Path = ROOT) -> str:
    """pytest's node id from junit's classname and name: the longest dotted prefix of
    the classname that is a file under `root` is the module."""
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (root / path).exists():
            return "::".join([path] + parts[i:] + [name])
    return "::".join(["/".join(parts[:-1]) + ".py", parts[-1], name]) if len(parts) > 1 \
        else f"{classname}::{name}"


def read_junit(path: Path, root: Path = ROOT, self_tests: bool = True
               ) -> tuple[list[tuple[str, float, str | None]], float]:
    """[(nodeid, seconds, target property or None)] in the file's order (without
    guestpm's self-tests unless `self_tests`), and the session's wall time (the
    testsuite's `time`)."""
    tree = ET.parse(path).getroot()
    suite = tree if tree.tag == "testsuite" else tree.find("testsuite")
    out = []
    for case in suite.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if not self_tests and (props.get("kind") == "self-test" or
                               case.get("classname", "").startswith("tests.unit.")):
            continue
        out.append((nodeid_of(case.get("classname", ""), case.get("name", ""), root),
                    float(case.get("time", 0)), props.get("target")))
    return out, float(suite.get("time", 0))


def read_boots(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def pool_tag(machine: str, target: str) -> str | None:
    """The pool tag of a machine directory name `SLUG-TAG-WORKER-N` (shared, vhe, nvhe,
    vfio, l2-vhe, ...); None for a test's own machine (its tag is the test's name)."""
    kernel, _, arch = target.rpartition("/")
    slug = Target(kernel, arch).slug
    if not machine.startswith(slug + "-"):
        return None
    tag = machine[len(slug) + 1:].rsplit("-", 2)[0]
    return None if tag.startswith("test_") else tag


def artifacts_name(nodeid: str, target: str | None) -> str:
    """The results/tests/ directory name of a test (as harness/plugin/targets.py names it)."""
    if target is not None:
        kernel, _, arch = target.rpartition("/")
        nodeid = nodeid.replace(target, Target(kernel, arch).slug)
    return safe_name(nodeid.removeprefix("tests/e2e/"), 120)


def machines_used(results: Path) -> dict[str, set[str]]:
    """results/tests/NAME -> the machine directories the test used (its links)."""
    d = results / "tests"
    if not d.is_dir():
        return {}
    return {t.name: {p.name.removeprefix("machine-") for p in t.iterdir()
                     if p.name.startswith("machine-")} for t in d.iterdir() if t.is_dir()}


def boot_costs(boots: list[dict]) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """The seconds a pool machine (target, tag) costs to start, snapshot included, and
    per test the pool seconds it paid in the measured run."""
    by_profile: dict[tuple[str, str], list[float]] = {}
    for b in boots:
        if b["kind"] == "boot":
            by_profile.setdefault((b["target"], b["profile"]), []).append(b["wall_s"])
    boot_means = {k: statistics.mean(v) for k, v in by_profile.items()}
    cost: dict[tuple[str, str], float] = {}
    paid: dict[str, float] = {}
    started: dict[str, tuple[str, str]] = {}      # machine -> its key, for its snapshot
    for b in boots:
        tag = pool_tag(b["machine"], b["target"])
        if tag is None:
            continue
        key = (b["target"], tag)
        if b["kind"] == "snapshot":
            if started.get(b["machine"]) == key:
                cost[key] = cost.get(key, 0) + b["wall_s"]
                paid[b["test"]] = paid.get(b["test"], 0) + b["wall_s"]
            continue
        paid[b["test"]] = paid.get(b["test"], 0) + b["wall_s"]
        if key in cost:             # a second machine of the key (a splat retired one)
            continue
        started[b["machine"]] = key
        cost[key] = b["wall_s"] if b["kind"] == "boot" else \
            boot_means.get((b["target"], b["profile"]), b["wall_s"])
    return cost, paid


def latest_run(results: Path) -> Path:
    """A run directory as given, else the latest run of a results directory."""
    return Path(results) if (Path(results) / "junit.xml").exists() else \
        latest(results) or Path(results)


def load(results: Path, root: Path = ROOT, self_tests: bool = True
         ) -> tuple[list[Test], dict, float]:
    """The tests of a run (durations net of pool boots, the pool machines each used),
    the pool machines' costs, and the measured wall.  `results`: a run directory, or a
    results directory whose latest run is read."""
    results = latest_run(results)
    cases, wall = read_junit(results / "junit.xml", root, self_tests)
    boots = read_boots(results / "boots.jsonl")
    cost, paid = boot_costs(boots)
    ids = sorted({t for _, _, t in cases if t} | {b["target"] for b in boots})
    used = machines_used(results)
    tests = []
    for nodeid, seconds, target in cases:
        target = target or unitsmod.target_in(nodeid, ids)[0]
        t = Test(nodeid, max(0.0, seconds - paid.get(nodeid, 0)), target)
        if target:
            for m in used.get(artifacts_name(nodeid, target), ()):
                tag = pool_tag(m, target)
                if tag and (target, tag) in cost:
                    t.needs.add((target, tag))
        tests.append(t)
    return tests, cost, wall


def group(tests: list[Test], by: str, ids: list[str]) -> OrderedDict[str, list[Test]]:
    """Tests per work unit, in their order: `units` (harness/plugin/units.py) or
    `target` (one unit per target, the start commit's)."""
    out: OrderedDict[str, list[Test]] = OrderedDict()
    for t in tests:
        u = unitsmod.unit_of(t.nodeid, ids)
        if by == "target":
            u = t.target or u
        out.setdefault(u, []).append(t)
    return out


def alone(unit: list[Test], cost: dict) -> float:
    """A unit's seconds on a worker of its own: its tests and each machine it needs once."""
    needs = set().union(*(t.needs for t in unit)) if unit else set()
    return sum(t.seconds for t in unit) + sum(cost[k] for k in needs)


def simulate(queue: OrderedDict[str, list[Test]], workers: int, cost: dict,
             watermark: int = WATERMARK, affinity: float = unitsmod.AFFINITY,
             measured: dict[str, float] | None = None) -> tuple[float, list[list[str]]]:
    """The wall time of running `queue` on `workers` workers, and each worker's units
    (pure).  Units are handed out as the plugin's scheduler does (units.pick), with the
    estimates it would have: `measured`, an earlier run's test seconds, or none."""
    pending = OrderedDict((u, list(ts)) for u, ts in queue.items())
    q: list[list[tuple[str, Test]]] = [[] for _ in range(workers)]
    got: list[list[str]] = [[] for _ in range(workers)]
    live: list[tuple[str | None, set]] = [(None, set()) for _ in range(workers)]
    shut = [False] * workers
    now = [0.0] * workers

    def assign(w: int) -> None:
        if not pending:
            shut[w] = True
            return
        u = unitsmod.pick(OrderedDict((k, {t.nodeid: False for t in v})
                                      for k, v in pending.items()),
                          unitsmod.target_of_unit(got[w][-1]) if got[w] else None, affinity,
                          held_s=unitsmod.estimate([t.nodeid for _, t in q[w]], measured),
                          measured=measured)
        q[w] += [(u, t) for t in pending.pop(u)]
        got[w].append(u)

    for w in range(workers):
        assign(w)
    for w in range(workers):
        if len(q[w]) <= watermark:
            assign(w)
    heap = [(0.0, w) for w in range(workers)]
    end = 0.0
    while heap:
        t0, w = heapq.heappop(heap)
        if not q[w]:
            end = max(end, t0)
            continue
        if len(q[w]) == 1 and not shut[w]:      # held until more work or shutdown
            assign(w)
        _, test = q[w].pop(0)
        target, machines = live[w]
        if test.target is not None and test.target != target:
            target, machines = test.target, set()
        extra = sum(cost[k] for k in test.needs - machines)
        live[w] = (target, machines | test.needs)
        now[w] = t0 + test.seconds + extra
        if not shut[w] and len(q[w]) <= watermark:
            assign(w)
        heapq.heappush(heap, (now[w], w))
    return max(now + [end]), got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--units", choices=("units", "target"), default="units")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--affinity", type=float, default=unitsmod.AFFINITY,
                    help="units.pick's affinity (0: longest first only)")
    ap.add_argument("--without-self-tests", action="store_true",
                    help="replay only what `guestpm run` runs: no unit tests, no self-tests")
    ap.add_argument("--estimates-from", type=Path, metavar="DIR",
                    help="an earlier run (a results or run directory) whose test seconds "
                         "order the units, as `guestpm run` orders them by results/latest's "
                         "(default: none, the per-file guesses of a first run)")
    ap.add_argument("--verbose", action="store_true", help="each worker's units")
    a = ap.parse_args(argv)
    tests, cost, wall = load(a.results, self_tests=not a.without_self_tests)
    measured = verdicts.durations(runs.resolve(a.estimates_from)) if a.estimates_from else None
    ids = sorted({t.target for t in tests if t.target})
    queue = group(tests, a.units, ids)
    total = sum(t.seconds for t in tests)
    print(f"{len(tests)} tests in {len(queue)} units ({a.units}); measured wall "
          f"{wall:.0f} s; test seconds net of pool boots {total:.0f} s; pool boots "
          f"{len(cost)}, {sum(cost.values()):.0f} s once each")
    for n in a.workers:
        s, got = simulate(queue, n, cost, affinity=a.affinity, measured=measured)
        print(f"{n:>2} {s:7.0f}")
        if a.verbose:
            for w, us in enumerate(got):
                print(f"     worker {w}: {', '.join(us)}")
    crit = max(queue, key=lambda u: alone(queue[u], cost))
    needs = set().union(*(t.needs for t in queue[crit]))
    print(f"critical path: {crit}: {alone(queue[crit], cost):.0f} s "
          f"({len(queue[crit])} tests, boots {sum(cost[k] for k in needs):.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
