"""Snapshots of a just-booted machine, and the QEMU arguments that restore one.

A snapshot is QEMU's own migration stream written to a file (`migrate` to
`exec:cat > FILE` with the guest stopped; QEMU 7.2 has no `file:` URI) and read back by a
new QEMU started with `-incoming exec:cat FILE` and the same command line.  The guest
comes back paused where it was, right after its ready line: the harness resumes it.

What a restored machine has of its own: its QEMU, QMP and console sockets, its ssh port
(user networking picks a new one), its working directory, and so the files its chardevs
write.  What it shares with the snapshot: the guest's memory, hence the guest's ssh host
key and the key the guest authorised (Machine reuses both, and checks them on its first
ssh connection), and the read-only files of the command line (kernel, initramfs, ACPI
tables).  A configuration with a writable disk is never snapshotted: the disk would be
shared (`restorable`).
"""

from __future__ import annotations

import datetime
import itertools
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from harness import cache
from harness.errors import BootError, GuestpmError, first_line
from harness.vm import cmdline
from harness.vm.boot import Snapshot
from harness.vm.console import CommandFailed
from harness.vm.machine import Machine

# QEMU's default migration bandwidth (32 MiB/s) would make a 200 MiB snapshot take 6 s;
# the file is local, so do not limit it.
MAX_BANDWIDTH = 1 << 40


class SnapshotError(BootError):
    """QEMU could not write a snapshot (a device that blocks migration, a full disk)."""


def restorable(qemu_args: tuple[str, ...]) -> str | None:
    """Why a machine with these extra QEMU arguments must boot instead of being restored
    from a snapshot (None: it may be restored).  Pure."""
    for flag, value in itertools.pairwise(qemu_args):
        if flag in ("-drive", "-blockdev") and "readonly=on" not in value.split(","):
            return f"a writable disk ({flag} {value}) would be shared with the snapshot"
        if flag == "-incoming":
            return "it is itself an incoming migration"
    return None


def take(m: Machine, path: Path, timeout: float = 120) -> Snapshot:
    """Stop `m`, write its state to `path`, resume it.  SnapshotError if QEMU could not;
    `m` runs on either way."""
    if m.host_key is None or m.boot is None:
        raise SnapshotError(f"a snapshot of {m.workdir}, which is not ready")
    console = m.console_log.read_bytes()
    t = time.monotonic()
    m.qmp.execute("stop")
    try:
        m.qmp.execute("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH})
        m.qmp.execute("migrate", uri=f"exec:cat > {shlex.quote(str(path))}")

        def ended() -> dict | None:
            st = m.qmp.execute("query-migrate")
            return st if st.get("status") in ("completed", "failed", "cancelled") else None
        st = m.wait_until(ended, timeout, f"QEMU to write a snapshot to {path}", interval=0.05)
    finally:
        m.qmp.execute("cont")
    if st["status"] != "completed":
        path.unlink(missing_ok=True)
        raise SnapshotError(f"QEMU could not write a snapshot of {m.workdir}: {st['status']}"
                            f" ({st.get('error-desc', 'no reason given')})")
    return Snapshot(path, m.keys, m.host_key, m.boot, m.workdir, console,
                    time.monotonic() - t, path.stat().st_size)


# The restore probe (profiles whose `probe_restores` is set: arm64, whose VHE kernel
# runs on the EL2 generic timers).  Before the snapshot every CPU keeps its timer armed
# for the next few milliseconds (a sleep loop pinned to it), so the snapshot holds a
# deadline on every CPU that falls due right after the restore.  A QEMU whose stream
# drops that deadline leaves the CPU without timer interrupts for good (the kernel's
# next event already lies in the past, so later timers never reprogram it): the
# restored guest's sleep on that CPU never returns.
ARM_EVERY_CPU_TIMER = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
                       "setsid taskset -c ${c##*cpu} sh -c 'while :; do sleep 0.01; done' "
                       "</dev/null >/dev/null 2>&1 & done")
EVERY_CPU_SLEEPS_1S = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
                       "taskset -c ${c##*cpu} sleep 1 || exit 1; done")
PROBE_MEMORY_MB = 512
# Restores from the one snapshot that must all keep their timers before the profile's
# machines are restored: on QEMU 7.2 a single round trip passed once (docs/figures.md)
# although its restores lose the EL2 timers' deadlines in about half of the tries
# (docs/known-defects.md), so one is not evidence enough
PROBE_ROUNDS = 5


def restore_probe_file(profile) -> Path:
    """Where the probe's decision for `profile`'s QEMU binary (version + hash) is kept."""
    return (cache.cache_dir() / "qemu-probes" /
            f"restore-{profile.arch}-{cmdline.qemu_identity(profile)}.json")


def probe_restores(profile, make: Callable[[str], Machine], workdir: Path,
                   record: Callable[[Machine, str], None] = lambda m, kind: None) -> str | None:
    """Whether this QEMU restores `profile`'s machines faithfully: None, or why not.
    Measured once per QEMU binary (a small machine booted, its timers armed on every
    CPU, snapshotted, restored, a sleep on every CPU) and kept in the cache.
    `make(tag)` makes a machine of the profile; `record(m, kind)` logs its boot/restore."""
    f = restore_probe_file(profile)
    with cache.locked(f):
        if f.exists():
            return json.loads(f.read_text())["refused"]
        refused, release = _round_trip(make, workdir, record)
        f.write_text(json.dumps({
            "qemu": cmdline.qemu_binary(profile), "version": cmdline.qemu_version(profile),
            "identity": cmdline.qemu_identity(profile), "kernel": release,
            "measured": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"), "refused": refused}, indent=1))
        return refused


def kept_refusal(profile) -> str | None:
    """The decision kept for `profile`'s QEMU binary, None when there is none or it
    restores (another worker's failed restore may have refused it since: refuse)."""
    f = restore_probe_file(profile)
    try:
        return json.loads(f.read_text())["refused"]
    except (OSError, ValueError, KeyError):
        return None


def refuse(profile, why: str) -> None:
    """A restore of a `profile` machine failed although the probe passed: keep `why` as
    this QEMU binary's decision, so that no later machine of the profile, in this run or
    a later one, is restored (the probe's rounds can all pass on a QEMU whose restores
    lose the timers about half the time: seen on 7.2, docs/known-defects.md)."""
    f = restore_probe_file(profile)
    f.parent.mkdir(parents=True, exist_ok=True)
    with cache.locked(f):
        try:
            kept = json.loads(f.read_text())
        except (OSError, ValueError):
            kept = {"qemu": cmdline.qemu_binary(profile),
                    "version": cmdline.qemu_version(profile),
                    "identity": cmdline.qemu_identity(profile)}
        kept.update(refused=why, measured=datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"))
        cache.write_atomic(f, json.dumps(kept, indent=1).encode())


def _round_trip(make, workdir: Path, record) -> tuple[str | None, str]:
    a = make("restore-probe")
    try:
        a.launch()
        a.wait_ready()
        record(a, "boot")
        a.ssh.run(ARM_EVERY_CPU_TIMER).check()
        snap = take(a, workdir / "restore-probe.vmstate")
    finally:
        a.close(graceful=False)
    try:
        for n in range(PROBE_ROUNDS):
            b = make(f"restore-probe-restored-{n}").restore_from(snap)
            version = cmdline.qemu_version(b.profile)
            try:
                b.launch()
                b.wait_ready()          # sleeps 0.1 s on every CPU: BootError if one hangs
                record(b, "restore")
                b.run(EVERY_CPU_SLEEPS_1S, timeout=30).check()
            except (GuestpmError, CommandFailed) as e:
                first = first_line(e)
                return (f"QEMU {version} lost the generic timers' deadlines in a snapshot "
                        f"round trip (restore {n + 1} of {PROBE_ROUNDS}) of a "
                        f"{b.profile.name} machine whose CPUs all had their timer armed "
                        f"(guestpm's restore probe, {b.workdir}): {first}"), a.boot.release
            finally:
                b.close(graceful=False)
    finally:
        snap.path.unlink(missing_ok=True)
    return None, a.boot.release
