"""`guestpm compare` on two stock kernels whose ground truth differs: debian:6.12 and
debian:7.2 on arm64, the PSCI family.  SYSTEM_OFF2 (merged in 6.13) goes SKIP -> PASS;
nothing else changes.

Opt-in (--slow --self-test): it runs tests/e2e/test_psci.py on both kernels in one run
(its own machines).  The default run already judges both kernels' PSCI family, so CI
needs no boot for the same check: `guestpm compare debian:6.12@results
debian:7.2@results --arch arm64 -- tests/e2e/test_psci.py` reads that run's record."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.results import compare, runs, verdicts

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.harness_selftest,
              pytest.mark.arch("arm64"), pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
BASE, PATCHED = "debian:6.12", "debian:7.2"


def test_system_off2_goes_skip_to_pass_and_nothing_else_changes(tmp_path):
    res = tmp_path / "results"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", BASE, PATCHED,
                           "--arch", "arm64", f"--results={res}", "--",
                           "tests/e2e/test_psci.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=3400)
    wall = time.monotonic() - t0
    where = f"(compare: {res / 'compare.md'}, run: {res / 'latest'}, {wall:.0f} s)"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = verdicts.read(runs.resolve(res))
    both = [verdicts.Record(rec.header, [v for v in rec.verdicts if v.kernel == k], rec.path)
            for k in (BASE, PATCHED)]
    assert all(side.verdicts for side in both), f"a kernel judged nothing {where}"
    cmp = compare.compare(*both)
    changed = {(r.group, r.test) for r in cmp.rows}
    # the SYSTEM_OFF2 cases, and the PSCI-version-register case that needs 1.3 for them
    off2 = {(r.group, r.test) for r in cmp.rows if r.group == compare.SKIP_PASS
            and "SYSTEM_OFF2 absent" in r.base.reason and "1.3" in r.base.reason}
    assert any("system_off2_" in t for _, t in off2), \
        f"no SYSTEM_OFF2 case went SKIP -> PASS {where}"
    assert changed == off2, f"other changes: {sorted(changed - off2)} {where}"
    assert (res / "compare.md").read_text() == proc.stdout
