"""Self-test of the machines restored from snapshots (harness.vm.snapshot): a restored
machine is a fresh machine of its own.  x86_64 only: whether arm64 restores keep the
timers depends on the QEMU, and a probe of the QEMU in use decides it before any arm64
restore (harness.vm.snapshot.probe_restores; docs/known-defects.md)."""

from __future__ import annotations

import time

import pytest

from harness.vm import snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.harness_selftest]


def _restored_pair(machine_factory, tmp_path):
    a = machine_factory()
    a.launch()
    a.wait_ready()
    snap = snapshot.take(a, tmp_path / "a.vmstate")
    assert a.ssh.run("true").status == 0, "the snapshotted machine must run on"
    b = machine_factory().restore_from(snap)
    b.launch()
    return a, b, snap


def _check_fresh_and_own(a, b, snap) -> None:
    info = b.wait_ready()
    assert info.restored and info.release == a.boot.release
    assert b.workdir != a.workdir and b.ssh_port != a.ssh_port
    assert b.host_key == a.host_key == snap.host_key     # checked by b's ssh connection
    # each runs on by itself: what one guest does, the other does not see
    b.ssh.run("echo b > /tmp/guestpm-mark").check()
    other = a.ssh.run("cat /tmp/guestpm-mark 2>/dev/null || echo none").output.strip()
    assert other == "none", f"the snapshotted guest sees the restored one's file: {other!r}"
    # the clock a boot would have read from the RTC, not the snapshot's
    guest_now = float(b.ssh.run("date +%s").check().output)
    assert abs(guest_now - time.time()) < 10, f"guest clock {guest_now}, host {time.time()}"
    # timers run on every CPU (wait_ready checked 0.1 s): a longer sleep takes its time
    t = time.monotonic()
    b.ssh.run("sleep 1").check()
    assert 1 <= time.monotonic() - t < 10
    log = b.console_log.read_text(errors="replace")
    assert "guestpm: ready" in log and "restored here from a snapshot of" in log, \
        f"{b.console_log} does not start with the boot the restore came from"
    b.run("echo guestpm-console-after-restore").check()     # the console works too


@pytest.mark.arch("x86_64")
def test_a_restored_machine_is_fresh_and_its_own(machine_factory, tmp_path):
    _check_fresh_and_own(*_restored_pair(machine_factory, tmp_path))
