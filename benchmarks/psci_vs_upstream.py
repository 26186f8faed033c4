"""guestpm's PSCI cases vs upstream's tools/testing/selftests/kvm/arm64/psci_test, side by side.

Boots one debian:7.2 arm64 KVM host (VHE). Upstream's psci_test is built from Debian's
linux-source-7.2 (cross, static: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross) and
copied in. Both run alternately, --reps times each, and the script prints:
  - assertion sites in the source (upstream: TEST_ASSERT*/GUEST_ASSERT*/TEST_FAIL;
    guestpm: t.expect/t.require) and, for guestpm, the checks executed;
  - wall time per run measured on the host around the ssh command (the same ssh
    overhead for both; guestpm's includes starting python3 under TCG);
  - the ratios against the goal: >= 2x the assertions in <= 2x the time.

    .venv/bin/python benchmarks/psci_vs_upstream.py [--reps N]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import cache, profiles
from harness.errors import SetupError
from harness.image import rootfs
from harness.kernel import aptrepo, kernels
from harness.vm.machine import Machine

REPO = Path(__file__).resolve().parent.parent
SOURCE_PKG = "linux-source-7.2"
UPSTREAM_TEST = "tools/testing/selftests/kvm/arm64/psci_test"
CROSS = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
         "/usr/aarch64-linux-gnu/lib/libc.a": "libc6-dev-arm64-cross"}


def say(msg: str) -> None:
    print(f"[psci-bench] {msg}", file=sys.stderr, flush=True)


def kernel_tree() -> Path:
    """Debian's linux-source-7.2, fetched with guestpm's private apt state, extracted once."""
    dest = cache.cache_dir() / "src" / SOURCE_PKG
    if (dest / "Makefile").exists():
        return dest
    with cache.locked(dest.parent / f"{SOURCE_PKG}.lock"):
        if (dest / "Makefile").exists():
            return dest
        repo = aptrepo.AptRepo(cache.cache_dir() / "apt" / "sid", "sid", aptrepo.system_mirror())
        repo.update()
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            say(f"downloading {SOURCE_PKG} (about 160 MB)")
            deb = repo.download([SOURCE_PKG], "amd64", Path(tmp))[0]
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
            tarball = next(Path(f"{tmp}/x/usr/src").glob(f"{SOURCE_PKG}.tar.*"))
            say(f"extracting {tarball.name}")
            subprocess.run(["tar", "-xaf", str(tarball), "-C", tmp], check=True)
            Path(tmp, SOURCE_PKG).rename(dest)
    return dest


def build_upstream(tree: Path) -> Path:
    missing = [pkg for path, pkg in CROSS.items()
               if not (Path(path).exists() if path.startswith("/") else shutil.which(path))]
    if missing:
        raise SetupError(f"building upstream psci_test needs: apt-get install {' '.join(missing)}")
    binary = tree / UPSTREAM_TEST
    if binary.exists():
        return binary
    cross = ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    say("make headers (arm64)")
    subprocess.run(["make", "-s", "-C", str(tree), *cross, "headers"], check=True)
    say(f"building {UPSTREAM_TEST} (static)")
    subprocess.run(["make", "-s", "-C", str(tree / "tools/testing/selftests/kvm"), *cross,
                    "LDFLAGS=-static", "-j2", str(binary)], check=True)
    return binary


def assertion_sites(tree: Path) -> tuple[int, int]:
    upstream = (tree / f"{UPSTREAM_TEST}.c").read_text()
    ours = (REPO / "harness/guest/psci.py").read_text()
    return (len(re.findall(r"\b(?:TEST_ASSERT\w*|GUEST_ASSERT\w*|TEST_FAIL)\(", upstream)),
            len(re.findall(r"\bt\.(?:expect|require)\(", ours)))


def timed(m: Machine, command: str) -> tuple[float, object]:
    t0 = time.monotonic()
    r = m.ssh.run(command, timeout=600)
    return time.monotonic() - t0, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    tree = kernel_tree()
    binary = build_upstream(tree)
    up_sites, our_sites = assertion_sites(tree)
    profile = profiles.get("arm64")
    kernel = kernels.resolve("debian:7.2", profile)
    initrd = rootfs.initramfs(kernel, profile)
    with tempfile.TemporaryDirectory() as work:
        m = Machine(profile, kernel, initrd, Path(work)).launch()
        try:
            m.wait_ready()
            m.ssh.put(binary.read_bytes(), "/tmp/psci_test", 0o755)
            up_t, our_t, checks, statuses = [], [], 0, {}
            for i in range(args.reps):
                t, r = timed(m, "/tmp/psci_test")
                if r.status != 0:
                    raise SystemExit(f"upstream psci_test exited {r.status}:\n{r.output}{r.stderr}")
                up_t.append(t)
                t, r = timed(m, "cd /opt/guestpm && python3 -m harness.guest.psci --json")
                res = json.loads(r.output.strip().splitlines()[-1])["results"]
                our_t.append(t)
                checks = sum(len(x["checks"]) for x in res)
                statuses = {s: sum(x["status"] == s for x in res) for s in ("pass", "fail", "skip")}
                say(f"rep {i + 1}: upstream {up_t[-1]:.2f} s, guestpm {our_t[-1]:.2f} s")
        finally:
            m.close()
    mu, mo = statistics.median(up_t), statistics.median(our_t)
    print(f"kernel {kernel.release} arm64 (VHE), median of {args.reps}, wall s around ssh")
    print(f"{'':<22} {'upstream psci_test':>18} {'guestpm psci':>14} {'ratio':>7}")
    print(f"{'assertion sites':<22} {up_sites:>18} {our_sites:>14} {our_sites / up_sites:>6.1f}x")
    print(f"{'checks executed':<22} {'-':>18} {checks:>14}")
    print(f"{'cases':<22} {3:>18} {sum(statuses.values()):>14}   {statuses}")
    print(f"{'time s':<22} {mu:>18.2f} {mo:>14.2f} {mo / mu:>6.1f}x")
    ok = our_sites >= 2 * up_sites and mo <= 2 * mu
    print(f"goal (>= 2x assertions in <= 2x time): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
