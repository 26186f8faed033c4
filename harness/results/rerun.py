"""The runs `guestpm compare` makes itself: both kernels of a two-spec comparison in
one run (so that they share the machine's noise), and the re-runs of --confirm."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.children import stop
from harness.errors import GuestpmError
from harness.results import runs, verdicts
from harness.results.compare import CompareError, Row

ROOT = Path(__file__).resolve().parents[2]


def run_kernels(specs: list[str], profiles: list[str], selection: list[str], parent: Path,
                jobs: int = 0, extra: Sequence[str] = ()) -> verdicts.Record:
    """Run `selection` (pytest arguments; default tests/e2e) on every spec x profile in
    one pytest run into a new run directory under `parent`; its record."""
    parent = Path(parent).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in parent.iterdir()}
    n_targets = len(set(specs)) * max(len(profiles), 1)
    cmd = [sys.executable, "-m", "pytest", *(selection or ["tests/e2e"]), "-p",
           "no:cacheprovider", "-q", "-rfE", f"--results={parent}",
           *(f"--kernel={k}" for k in dict.fromkeys(specs)), *(f"--arch={a}" for a in profiles),
           *extra]
    workers = min(jobs or os.cpu_count() or 1, n_targets)
    if workers > 1:
        cmd += ["-n", str(workers), "--dist", "loadgroup"]
    print("guestpm compare: $ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait()
    finally:
        stop(proc, 30)
    new = sorted(p for p in parent.iterdir() if p.name not in before and p.name != runs.LATEST
                 and (p / verdicts.FILE).is_file())
    if rc == 5:
        raise CompareError(f"the selection ({' '.join(selection) or 'tests/e2e'}) matched no "
                           "test")
    if rc not in (0, 1) or not new:
        raise CompareError(f"the run of {', '.join(specs)} ended with pytest exit status {rc} "
                           f"before judging (see its output above)")
    return verdicts.read(new[-1])


def split(rec: verdicts.Record, spec: str) -> verdicts.Record:
    """The part of a two-kernel run that judged `spec`."""
    return verdicts.Record(rec.header, [v for v in rec.verdicts if v.kernel == spec], rec.path)


class Rerunner:
    """compare.confirm's runner: each re-run is one pytest run of the changed tests on
    the kernels their records name (both sides'), into PARENT/confirm/RUN, so that the
    results' own `latest` stays put.  `check(specs, profiles)`: GuestpmError where this
    host cannot run those kernels (the caller's pre-boot check, harness/plan/targets.py)."""

    def __init__(self, parent: Path, jobs: int = 0,
                 check: Callable[[list[str], list[str]], None] = lambda specs, profiles: None):
        self.parent, self.jobs, self.check = Path(parent) / "confirm", jobs, check

    def __call__(self, rows: list[Row], i: int):
        pairs = [r.sides() for r in rows]
        ids = list(dict.fromkeys(v.nodeid for pair in pairs for v in pair))
        specs = [v.kernel for pair in pairs for v in pair]
        profiles = list(dict.fromkeys(b.profile for b, _ in pairs))
        if i == 0:          # kernels the records name but this host cannot run: one line
            try:
                self.check(list(dict.fromkeys(specs)), profiles)
            except GuestpmError as e:
                raise CompareError(f"--confirm cannot re-run the records' kernels: {e}") \
                    from None
        print(f"guestpm compare: re-run {i + 1}: {len(rows)} changed verdict(s) on "
              f"{', '.join(dict.fromkeys(specs))}", file=sys.stderr, flush=True)
        rec = run_kernels(specs, profiles, ids, self.parent, self.jobs)
        base, patched = {b.kernel for b, _ in pairs}, {p.kernel for _, p in pairs}
        if base == patched:
            return rec.verdicts, rec.verdicts       # the same kernels on both sides
        return ([v for v in rec.verdicts if v.kernel in base],
                [v for v in rec.verdicts if v.kernel in patched])
