"""Hibernation (suspend to disk) on x86_64 and arm64, from both sides.

Each test gets a qcow2 overlay on a cached, empty swap image (harness/image/disks.py) as the
guest's vda.  Inside: `echo disk > /sys/power/state` over ssh.  Outside: QMP
SUSPEND_DISK (x86: ACPI S4) and SHUTDOWN {guest: true, reason: guest-shutdown}, then
QEMU's exit; QEMU's arm64 firmware is PSCI 1.1, so the arm64 guest powers off with
SYSTEM_OFF and there is no SUSPEND_DISK.  Then the *same* command line starts again
(`Machine.relaunch`: same arguments, same keys): the booting kernel must find the image
and restore it, and the restored guest must still hold what only lived in its memory."""

from __future__ import annotations

import re

import pytest

from harness.image import disks
from harness.plugin.known_defects import (
    TRANS_PGD_RESTORE,
    VIRTIO_NET_FROZEN_XMIT,
    VIRTIO_NET_RESTORE_SLAB,
    xfail_on,
)
from harness.vm.power import HIBERNATE_APPEND, NeverHibernated, hibernate

pytestmark = [pytest.mark.e2e]

def _boot(machine_factory, tmp_path, resume: bool = True, subject: bool = False):
    """A machine with an empty swap disk of its own; `subject`: the boot is what the
    test looks at, so the test starts it itself (never a restore)."""
    image = disks.overlay(disks.swap_base(), tmp_path / "swap.qcow2")
    kw = dict(qemu_args=disks.virtio_disk_args(image),
              append=HIBERNATE_APPEND if resume else ("no_console_suspend",))
    if subject:
        m = machine_factory(**kw).launch()
        m.wait_ready()
        return m
    return machine_factory.booted(**kw)


def test_hibernate_round_trip_keeps_memory_and_processes(machine_factory, tmp_path, profile):
    m = _boot(machine_factory, tmp_path)
    before = m.ssh.run(
        "swapon /dev/vda && echo guestpm-$RANDOM-$RANDOM > /run/only-in-memory && "
        "(sleep 100000 & echo $! > /run/sleeper) && "
        "cat /run/only-in-memory /run/sleeper /proc/sys/kernel/random/boot_id").check()
    value, pid, boot_id = before.output.split()
    host_key = m.host_key

    with xfail_on(m, VIRTIO_NET_FROZEN_XMIT, VIRTIO_NET_RESTORE_SLAB):
        h = hibernate(m)
    got = [n for n in h.names() if n in ("SUSPEND_DISK", "SHUTDOWN")]
    assert got == list(profile.hibernate_events), \
        f"QMP events from `echo disk` to QEMU's exit: {h.names()} ({m.qmp_log})"
    shutdown = next(e for e in h.events if e["event"] == "SHUTDOWN")["data"]
    assert shutdown == {"guest": True, "reason": "guest-shutdown"}, shutdown
    assert h.exit_status == 0, f"QEMU exited {h.exit_status} ({m.stderr_log})"

    m.relaunch()
    with xfail_on(m, TRANS_PGD_RESTORE):
        restored = m.wait_restored()
    assert restored, f"the same command line booted afresh instead of restoring ({m.console_log})"
    booting = m.console_log.read_text(errors="replace")
    assert "PM: hibernation: resume from hibernation" in booting, \
        f"the booting kernel never said it resumes ({m.console_log})"
    # a new connection (new QEMU, new port forward) that meets the dropbear from before
    after = m.ssh.run("cat /run/only-in-memory /proc/sys/kernel/random/boot_id && "
                      f"kill -0 {pid} && echo running").check()
    assert after.output.split() == [value, boot_id, "running"], \
        f"before hibernation: {value} {boot_id} pid {pid}; after: {after.output.split()}"
    server_key = m.ssh.client.get_transport().get_remote_server_key().get_base64()
    assert server_key == host_key.split()[1], "ssh reached a guest with another host key"
    log = m.ssh.run("dmesg").check().output
    assert "PM: hibernation: hibernation entry" in log and \
        "PM: hibernation: hibernation exit" in log
    if profile.s4_wake_line:          # ACPI S4 (x86), not PSCI
        assert re.search(profile.s4_wake_line, log), \
            f"no {profile.s4_wake_line!r} in the restored guest's log"


def _image_not_found_prints(m) -> bool | None:
    """Whether this kernel prints swap.c's pr_debug "PM: Image not found": with dynamic
    debug, its control file says (5.10: on with PM_DEBUG; 6.1+: on with DYNAMIC_DEBUG,
    kernel/power/Makefile); without it, nothing tells (None)."""
    r = m.ssh.run("grep 'Image not found' /sys/kernel/debug/dynamic_debug/control")
    if r.status != 0 or not r.output.strip():
        return None
    # "kernel/power/swap.c:1562 [swap]swsusp_check =p "Image not found (code %d)\012""
    flags = next((t for t in r.output.split() if t.startswith("=")), "=")
    return "p" in flags


def test_fresh_boot_with_empty_swap_does_not_resume(machine_factory, tmp_path):
    """Evidence every kernel gives: the write of vda to /sys/power/resume runs the
    kernel's image check (software_resume) and succeeds; the device stays set; no
    resume line.  Where the kernel prints its pr_debug "Image not found", that too."""
    m = _boot(machine_factory, tmp_path, subject=True)   # resume=vda; vda is a fresh swap
    console = m.console_log.read_text(errors="replace")
    assert "guestpm: no hibernation image on vda: booting afresh" in console, \
        f"/init's write of vda to /sys/power/resume did not succeed ({m.console_log})"
    dev = m.ssh.run("cat /sys/block/vda/dev /sys/power/resume").check().output.split()
    assert dev[0] == dev[1], f"/sys/power/resume is {dev[1]}, vda is {dev[0]}"
    log = m.ssh.run("dmesg").check().output
    assert "resume from hibernation" not in log, "a fresh boot claimed to resume"
    if _image_not_found_prints(m):
        assert "PM: Image not found" in log, \
            "dynamic debug has swap.c's 'Image not found' on, yet the kernel never said it"


def test_hibernate_without_a_swap_device_fails_cleanly(machine_factory, tmp_path):
    """No swap is on and no resume device is set: the write must fail with an error
    and the guest must run on, with no power-off seen by QEMU."""
    m = _boot(machine_factory, tmp_path, resume=False)
    with pytest.raises(NeverHibernated) as refused:
        hibernate(m, timeout=120)
    assert "status 1" in str(refused.value), refused.value
    events = [e["event"] for e in m.qmp.events if e["event"] in ("SUSPEND_DISK", "SHUTDOWN")]
    assert not events, f"QEMU saw {events} though the guest refused"
    log = m.ssh.run("dmesg").check().output          # the guest is up and answers
    assert "Cannot find swap device" in log, "dmesg does not say why hibernation failed"
