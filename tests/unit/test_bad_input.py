"""Bad input gets one clear line, never a hang."""

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import SetupError
from harness.kernel import aptrepo, kernels
from harness.vm.machine import Machine


def test_missing_qemu_names_the_package(tmp_path):
    p = dataclasses.replace(profiles.get("arm64"), qemu_binary="qemu-system-nonexistent")
    with pytest.raises(SetupError, match="qemu-system-nonexistent not found: apt-get install "
                                         "qemu-system-arm"):
        Machine(p, None, tmp_path / "initrd", tmp_path)


def test_empty_cache_and_unreachable_registry(tmp_path, monkeypatch):
    """A closed local port stands in for the registry: apt must fail fast and we must say
    which kernel was not cached and which mirror (and its origin) failed."""
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(aptrepo, "system_mirror", lambda etc=None: aptrepo.Mirror(
        "http://127.0.0.1:9/debian", aptrepo.DEFAULT_KEYRING, "/etc/apt/test.sources"))
    t = time.monotonic()
    with pytest.raises(SetupError) as e:
        kernels.resolve("debian:6.1", profiles.get("x86_64"))
    assert time.monotonic() - t < 60
    msg = str(e.value)
    assert "debian:6.1 for amd64 is not cached and could not be fetched" in msg
    assert "http://127.0.0.1:9/debian" in msg and "/etc/apt/test.sources" in msg
    assert "\n" not in msg


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "boot", "--kernel", "debian:woody",
                           "--arch", "x86_64"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "guestpm: error: unknown kernel 'debian:woody': take a version (debian:5.10, "
        "debian:6.1, ...) or a Debian suite (debian:bullseye, debian:bookworm-backports, ...); "
        "the defaults are debian:6.1, debian:6.12, debian:7.2"]


def test_missing_firmware_names_the_package(tmp_path):
    # a QEMU that exists (any executable does), so that the firmware check is the one that
    # speaks, also on a machine where set-up has not installed QEMU yet
    p = dataclasses.replace(profiles.get("arm64-uefi"), firmware=str(tmp_path / "QEMU_EFI.fd"),
                            qemu_binary=sys.executable)
    with pytest.raises(SetupError, match=r"QEMU_EFI.fd, which is missing: apt-get install "
                                         r"qemu-efi-aarch64"):
        Machine(p, None, tmp_path / "initrd", tmp_path / "m")


ROOT = Path(__file__).resolve().parents[2]


def _one_line_exit_2(argv: list[str], env: dict | None = None) -> str:
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env, stdin=subprocess.DEVNULL)
    assert time.monotonic() - t < 5 + 10, "bad input must be refused within seconds"
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("how", ["guestpm", "pytest"])
@pytest.mark.parametrize("image,message", [
    ("/etc/passwd", "/etc/passwd: not a Linux kernel image"),
    ("/nonexistent/Image", "kernel image /nonexistent/Image does not exist"),
    ("TRUNCATED", "is truncated: its arm64-Image header promises"),
    ("BZIMAGE", "is a bzImage but --arch arm64 boots an arm64-Image: wrong architecture"),
])
def test_bad_kernels_are_refused_up_front(tmp_path, how, image, message):
    """`guestpm run` and plain pytest: one line, exit 2, nothing booted."""
    from test_kernels import bzimage, pe_arm64_image
    if image == "TRUNCATED":
        image = tmp_path / "Image"
        image.write_bytes(pe_arm64_image(0x40000)[:0x3000])
    elif image == "BZIMAGE":
        image = tmp_path / "bzImage"
        image.write_bytes(bzimage())
    spec = f"--kernel=path:{image}"
    argv = [sys.executable, "-m", "harness.cli", "run", spec, "--arch=arm64",
            f"--results={tmp_path / 'r'}"] if how == "guestpm" else \
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/e2e", spec,
         "--arch=arm64", f"--results={tmp_path / 'r'}"]
    line = _one_line_exit_2(argv)
    assert line.startswith(("guestpm: error: ", "Exit: guestpm: error: ")) and message in line, line
    assert not (tmp_path / "r" / "machines").exists()


def test_missing_qemu_is_refused_up_front(tmp_path):
    """No qemu-system-aarch64 on PATH: one line naming the package, before any fetch."""
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "GUESTPM_CACHE": str(tmp_path / "c")}
    line = _one_line_exit_2([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "tests/e2e", "--arch=arm64", f"--results={tmp_path / 'r'}"], env)
    assert "qemu-system-aarch64 not found: apt-get install qemu-system-arm" in line, line


# a closed local port stands in for the mirror, and the cache is the test's own: the
# look-up of a debian:X.Y is real (apt-get against that mirror), the network is not used
_NO_MIRROR = ("import sys; from harness.kernel import aptrepo; "
              "aptrepo.system_mirror = lambda etc=None: aptrepo.Mirror("
              "'http://127.0.0.1:9/debian', aptrepo.DEFAULT_KEYRING, '/etc/apt/test.sources'); ")


@pytest.mark.parametrize("how", ["guestpm", "pytest"])
def test_a_debian_version_no_suite_carries_is_refused_up_front(tmp_path, how):
    """`guestpm run --kernel debian:9.9`: one line, exit 2, within a minute, before
    anything starts, and the previous run's results stay where they are."""
    import os
    res = tmp_path / "r"
    (res / "machines" / "earlier-run").mkdir(parents=True)
    (res / "junit.xml").write_text("<testsuites/>")
    args = ["--kernel=debian:9.9", "--arch=arm64", f"--results={res}"]
    run = (f"from harness import cli; sys.exit(cli.main(['run', *{args!r}]))"
           if how == "guestpm" else
           f"import pytest; sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', "
           f"'tests/e2e', *{args!r}]))")
    env = dict(os.environ, GUESTPM_CACHE=str(tmp_path / "cache"))
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _NO_MIRROR + run], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    assert time.monotonic() - t < 60
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert "no Debian suite on this mirror has a 9.9 kernel for arm64" in lines[0], lines
    assert (res / "machines" / "earlier-run").is_dir() and \
        (res / "junit.xml").read_text() == "<testsuites/>"
