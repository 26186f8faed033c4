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
    assert cells == ["tests/e2e/test_l2_hibernate.py::test_l2_hibernation_exits_shutdown_"
                     "with_the_off2_flag[vhe-debian:7.2/arm64-guest=debian:6.12]"], cells
    assert "2 tests not collected: cross cells (host x guest kernel) of other host kernels" \
        in out
    assert "1 test not collected: cross cells in nVHE" in out
    # nVHE hibernation cells only where SYSTEM_OFF2 is (7.2), unless --all-l2-modes
    assert "test_l2_nothing_to_resume_boots_fresh[nvhe-debian:7.2/arm64]" in out
    assert "test_l2_nothing_to_resume_boots_fresh[nvhe-debian:6.1/arm64]" not in out
    # the other L2 tests keep the kernel under test as their guest, unnamed
    assert "test_l2_nothing_to_resume_boots_fresh[vhe-debian:6.1/arm64]" in out


def test_guest_kernel_options_make_a_cell_per_guest_on_every_host(tmp_path):
    out = _collect(tmp_path, "--kernel", "debian:6.1", "--guest-kernel", "debian:6.12",
                   "--guest-kernel", "debian:7.2")
    for guest in ("debian:6.12", "debian:7.2"):
        assert sum("off2_flag[vhe-debian:6.1/arm64" in ln and f"guest={guest}" in ln
                   for ln in out.splitlines()) == 1
    assert "guest=same" not in out and "cross cells" not in out
    every = _collect(tmp_path, "--kernel", "debian:6.1", "--all-l2-modes")
    assert "test_l2_nothing_to_resume_boots_fresh[nvhe-debian:6.1/arm64]" in every


def test_nvhe_cells_on_the_newest_stock_host_and_on_your_own_kernel(tmp_path):
    image = tmp_path / "Image"
    image.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
         "tests/e2e/test_l2_suspend.py", "--arch", "arm64", f"--results={tmp_path}/r",
         "--kernel", "debian:6.12", "--kernel", "debian:7.2", "--kernel", f"path:{image}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    denied = [ln.split("[", 1)[1] for ln in proc.stdout.splitlines()
              if "::test_l2_suspend_denied_fails_the_write_with_eperm[" in ln]
    assert denied == ["vhe-debian:6.12/arm64]", "vhe-debian:7.2/arm64]",
                      "nvhe-debian:7.2/arm64]", f"vhe-path:{image}/arm64]",
                      f"nvhe-path:{image}/arm64]"], denied
    assert "L2 nvhe cells of stock hosts other than debian:7.2 (opt-in: --all-l2-modes; " \
           "your own kernel gets them)" in proc.stdout
