"""The harness's own failure paths, against a real kernel (first target only).

These check that a broken guest becomes a quick, specific failure and that no
QEMU outlives whoever started it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.errors import GuestPanic, WaitTimeout
from harness.wait import within

pytestmark = [pytest.mark.e2e, pytest.mark.harness_selftest]


def test_boot_panic_fails_fast_quoting_the_panic(machine_factory):
    m = machine_factory(append=("rdinit=/does-not-exist", "root=/dev/nonexistent"))
    m.launch()
    t = time.monotonic()
    with pytest.raises(GuestPanic) as e:
        m.wait_ready(timeout=240)
    assert "Kernel panic - not syncing" in str(e.value)
    assert str(m.console_log) in str(e.value)
    # panic=-1 reboots, -no-reboot turns that into QEMU exiting: we must not wait for a timeout
    assert time.monotonic() - t < 120


def test_ssh_that_never_comes_up_names_the_wait_and_console(machine_factory):
    m = machine_factory.booted()
    m.run("killall dropbear").check()
    m.ssh_connect_timeout = 5
    with pytest.raises(WaitTimeout) as e:
        m.ssh.run("true")
    msg = str(e.value)
    assert "ssh to root@127.0.0.1" in msg and "did not come up within 5s" in msg
    assert "console tail" in msg and "guestpm: ready" in msg


CHILD = textwrap.dedent("""
    import faulthandler, signal, sys, time
    from pathlib import Path
    faulthandler.register(signal.SIGUSR1)       # the test asks for our stacks if we hang
    from harness.image import rootfs
    from harness.kernel import kernels
    from harness import profiles
    from harness.signals import install_signal_handlers
    from harness.vm.machine import Machine
    install_signal_handlers()
    p = profiles.get(sys.argv[1]); k = kernels.resolve(sys.argv[2], p)
    # as `guestpm boot` holds its machine: an interrupt kills QEMU at once instead of
    # asking it to quit (a graceful close under load can outlast the test's bound)
    with Machine(p, k, rootfs.initramfs(k, p), Path(sys.argv[3])).launch() as m:
        print(m.proc.pid, flush=True)
        m.wait_ready()
        print("ready", flush=True)
        time.sleep(600)
""")


def _gone(pid: int, timeout: float = 15) -> bool:
    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(") ")[1][0] == "Z"
        except FileNotFoundError:
            return True
    return bool(within(gone, timeout, interval=0.2))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_no_qemu_survives_its_harness(target, kernel, initrd, tmp_path, sig):
    """Ctrl-C, a CI timeout's SIGTERM and an uncatchable SIGKILL of the harness process."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, target.arch, target.kernel,
                              str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    qemu_pid = None
    try:
        qemu_pid = int(child.stdout.readline())
        assert child.stdout.readline().strip() == "ready"
        with open(f"/proc/{qemu_pid}/cmdline", "rb") as fh:
            assert b"qemu-system" in fh.read()
        child.send_signal(sig)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            with open(f"/proc/{child.pid}/status") as fh:
                masks = [ln.strip() for ln in fh if ln.startswith(("SigIgn", "SigCgt"))]
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            child.kill()
            pytest.fail(f"the harness did not exit within 30 s of {sig.name} ({masks}); "
                        f"its threads:\n{child.communicate()[1][-4000:]}")
        assert _gone(qemu_pid), f"QEMU pid {qemu_pid} still alive after {sig.name} to its harness"
    finally:
        if child.poll() is None:
            child.kill()
        if qemu_pid and not _gone(qemu_pid, 0):
            os.kill(qemu_pid, signal.SIGKILL)     # our own grandchild, by pid


def test_panic_during_an_ssh_command_fails_within_seconds(machine_factory):
    m = machine_factory.booted()
    t = time.monotonic()
    with pytest.raises(GuestPanic, match="Kernel panic - not syncing: sysrq triggered crash"):
        m.ssh.run("sleep 1; echo c > /proc/sysrq-trigger; sleep 100", timeout=120)
    assert time.monotonic() - t < 30


def test_qemu_dying_during_boot_is_reported_as_such(machine_factory):
    from harness.errors import BootError
    m = machine_factory()
    m.launch()
    m.proc.kill()                               # our own QEMU, by pid
    t = time.monotonic()
    with pytest.raises(BootError, match=r"QEMU exited \(status -9\)"):
        m.wait_ready(timeout=120)
    assert time.monotonic() - t < 10


def test_a_silent_console_fails_within_its_bound(machine_factory, profile):
    """A kernel that never prints (here: its console sent to tty1, as a kernel for the
    wrong machine or a truncated one would look) fails after the profile's silence
    bound, naming it, not after the whole boot timeout."""
    import dataclasses

    from harness.errors import SilentMachine
    m = machine_factory(profile=dataclasses.replace(profile, console="tty1", silent_after_s=10))
    seen = []
    m.on_silent = seen.append        # silent on purpose: the target itself is not dead
    m.launch()
    t = time.monotonic()
    with pytest.raises(SilentMachine, match=r"the console stayed silent for 10s after QEMU "
                                            r"started"):
        m.wait_ready(timeout=240)
    assert time.monotonic() - t < 40
    assert len(seen) == 1 and isinstance(seen[0], SilentMachine)
