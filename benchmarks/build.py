#!/usr/bin/env python3
"""Build figures for `guestpm build` (prints them; compare ratios within one run).

  benchmarks/build.py --tree ~/.cache/guestpm/src/linux-source-7.2 [--arch arm64]
        [--cold] [--ccache] [--loops 3]

  --cold     a cold build without ccache, in a fresh build directory
  --ccache   a cold build with an empty ccache, `make clean`, then the warm rebuild
  always     one-file incremental rebuild (touch arch/arm64/kvm/psci.c), and the
             developer loop: edit psci.c -> rebuild -> boot -> one PSCI verdict

The tree's default build (the fragments of kernel-configs/) is reused for the
incremental figures; cold ones use a scratch GUESTPM_CACHE so nothing is disturbed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.kernel import build, kconfig

PSCI = {"arm64": "arch/arm64/kvm/psci.c", "x86_64": "arch/x86/kvm/x86.c"}
ONE_TEST = ["tests/e2e/test_psci.py", "-k", "system_suspend_features_with_the_cap and not nvhe"]


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def do_build(tree: Path, arch: str, **kw) -> build.Build:
    return build.build(tree, arch, list(kconfig.DEFAULT_ROLES), say=lambda s: None, **kw)


def run_one_test(b: build.Build, results: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", *ONE_TEST, f"--kernel=build:{b.dir}",
           "--arch=arm64", f"--results={results}", "-p", "no:cacheprovider", "-q"]
    t, p = timed(lambda: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True))
    return t, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", required=True, type=Path)
    ap.add_argument("--arch", default="arm64", choices=sorted(build.KBUILD))
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--ccache", action="store_true")
    ap.add_argument("--loops", type=int, default=3)
    a = ap.parse_args()
    tree = a.tree.resolve()
    print(f"tree {tree} ({build.tree_version(tree)}), arch {a.arch}, {os.cpu_count()} cores")

    if a.cold:
        with tempfile.TemporaryDirectory(prefix="guestpm-bench-") as scratch:
            os.environ["GUESTPM_CACHE"] = scratch
            t, b = timed(lambda: do_build(tree, a.arch, use_ccache=False))
            print(f"cold build, no ccache:            {t:7.1f} s  ({b.meta['steps']} steps)")
            os.environ.pop("GUESTPM_CACHE")

    if a.ccache:
        with tempfile.TemporaryDirectory(prefix="guestpm-bench-") as scratch:
            os.environ.update(GUESTPM_CACHE=scratch, CCACHE_DIR=f"{scratch}/ccache")
            t, b = timed(lambda: do_build(tree, a.arch))
            assert b.meta["ccache"], "ccache is not installed"
            print(f"cold build, empty ccache:         {t:7.1f} s")
            tc = build.toolchain(a.arch)
            subprocess.run(["make", f"O={b.dir / 'obj'}", *tc.make_vars(), "clean"], cwd=tree,
                           env=tc.env(), check=True, capture_output=True)
            t, _ = timed(lambda: do_build(tree, a.arch))
            print(f"rebuild after make clean, warm ccache: {t:7.1f} s")
            for k in ("GUESTPM_CACHE", "CCACHE_DIR"):
                os.environ.pop(k)

    # the incremental figures reuse the tree's default build (without ccache: an edit
    # recompiles the edited file whether or not ccache is there)
    t, b = timed(lambda: do_build(tree, a.arch, use_ccache=False))
    t, b = timed(lambda: do_build(tree, a.arch, use_ccache=False))
    print(f"no-change rebuild (config check + make): {t:5.1f} s")
    src = tree / PSCI[a.arch]
    os.utime(src)
    t, b = timed(lambda: do_build(tree, a.arch, use_ccache=False))
    print(f"one-file incremental ({PSCI[a.arch]} touched): {t:5.1f} s")

    if a.arch == "arm64":
        original = src.read_text()
        try:
            with tempfile.TemporaryDirectory(prefix="guestpm-bench-res-") as res:
                for i in range(a.loops):
                    src.write_text(original + f"/* guestpm benchmark edit {i} */\n")
                    t0 = time.monotonic()
                    tb, b = timed(lambda: do_build(tree, a.arch, use_ccache=False))
                    tt, rc = run_one_test(b, Path(res) / str(i))
                    print(f"loop {i}: edit -> rebuild {tb:5.1f} s -> boot + verdict {tt:5.1f} s "
                          f"= {time.monotonic() - t0:5.1f} s (pytest exit {rc})")
        finally:
            src.write_text(original)
            do_build(tree, a.arch, use_ccache=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
