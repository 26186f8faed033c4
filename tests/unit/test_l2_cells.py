"""Host x guest cells of the L2 tests, as collected (no boot: --collect-only)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _collect(tmp_path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
         "tests/e2e/test_l2_hibernate.py", "--arch", "arm64", f"--results={tmp_path}", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_default_cross_cell_is_collected_only_on_its_host(tmp_path):
    out = _collect(tmp_path, "--kernel", "debian:7.2", "--kernel", "debian:6.1")
    cells = [ln for ln in out.splitlines() if "guest=debian:6.12" in ln]
    assert len(cells) == 2 and all("debian:7.2/arm64" in c for c in cells), cells
    assert "2 tests not collected: cross cells (host x guest kernel) of other host kernels" \
        in out
    # the other L2 tests keep the kernel under test as their guest, unnamed
    assert "test_l2_nothing_to_resume_boots_fresh[vhe-debian:6.1/arm64]" in out


def test_guest_kernel_options_make_a_cell_per_guest_on_every_host(tmp_path):
    out = _collect(tmp_path, "--kernel", "debian:6.1", "--guest-kernel", "debian:6.12",
                   "--guest-kernel", "debian:7.2")
    for test in ("hibernation_exits_shutdown_with_the_off2_flag", "nothing_to_resume"):
        for guest in ("debian:6.12", "debian:7.2"):
            assert sum(test in ln and f"guest={guest}" in ln for ln in out.splitlines()) == 2
    assert "guest=same" not in out and "cross cells" not in out
