"""Opt-in (--slow): build Debian's linux-source-7.2 for arm64 from kernel-configs/
(allnoconfig + the default roles) and run the whole PSCI file on it.

Expected as on debian:7.2: every SYSTEM_SUSPEND and SYSTEM_OFF2 case PASS in VHE and
nVHE (7.2 has PSCI 1.3), nothing fails.  This is what a developer's first
`guestpm build` + `guestpm run --kernel build:...` does, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.kernel import bisect, build, debian_sources, kconfig
from harness.progress import progress
from harness.results import runs, verdicts

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.harness_selftest,
              pytest.mark.needs_build_tools("arm64"), pytest.mark.xdist_group("kernel-build"),
              pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parents[2]


def test_fragment_build_of_7_2_passes_the_psci_suite(tmp_path):
    src = debian_sources.source("7.2", progress)
    b = build.build(src, "arm64", list(kconfig.DEFAULT_ROLES), nice=10, say=progress,
                    progress_every=60)
    assert b.meta["release"].startswith("7.2."), b.meta
    res = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e/test_psci.py", f"--kernel=build:{b.dir}",
         "--arch=arm64", f"--results={res}", "-p", "no:cacheprovider", "-q", "-rfEs"],
        cwd=ROOT, capture_output=True, text=True)
    assert (res / "latest" / verdicts.FILE).is_file(), proc.stdout[-3000:] + proc.stderr[-2000:]
    out = bisect.outcome_of(verdicts.read(runs.resolve(res)))
    where = f"(results: {res}; build: {b.dir})"
    assert not out.failed and not out.setup_errors, f"{out.failed or out.setup_errors} {where}"
    absent = out.skipped
    assert not absent, f"7.2 has every PSCI feature, yet: {absent} {where}"
    assert any("system_off2" in p for p in out.passed) and \
        any("system_suspend" in p for p in out.passed), f"{out.passed} {where}"
    assert proc.returncode == 0, proc.stdout[-3000:]
