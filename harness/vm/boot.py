"""How a machine's guest came up, and what it leaves to come up again: BootInfo (a boot
or a restore), the lines /init prints that tell it (guest-rootfs/init `say`), and the
Snapshot of a just-booted machine that a restore starts from (harness/vm/snapshot.py
takes one; Machine.restore_from loads it)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from harness.vm.ssh import KeyPair


@dataclass
class BootInfo:
    wall_s: float            # QEMU start -> shell ready, measured by the harness
    guest_uptime_s: float    # the guest's /proc/uptime when it printed the ready line
    release: str
    insmod_failed: list[str] = field(default_factory=list)   # profile modules /init could
                                                              # not load (guest-rootfs/init)
    restored: bool = False   # from a snapshot: wall_s is the restore's, the rest the boot's


# /init's lines are kernel records, so no other record lands inside one; the console
# mends a line that one tore all the same (console.LineMender).  Anchored at the line
# end: a line is read whole, never a prefix of it.
READY = re.compile(r"guestpm: ready uptime=([\d.]+) release=(\S+)\r?\n")
RESTORED_OR_FRESH = re.compile(r"(PM: hibernation: hibernation exit)\r?\n|guestpm: ready uptime=")
INSMOD_FAILED = re.compile(r"guestpm: insmod (\S+) failed")
HOSTKEY = re.compile(r"guestpm: hostkey (ssh-\S+ \S+)[^\n]*\n")
# A restored guest's timers must run on every CPU (they do not on arm64 under QEMU 7.2's
# TCG: Profile.probe_restores)
EVERY_CPU_SLEEPS = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
                    "taskset -c ${c##*cpu} sleep 0.1 || exit 1; done")


@dataclass(frozen=True)
class Snapshot:
    """QEMU's migration stream of a machine taken right after its ready line, and what a
    machine restored from it shares with that one: the guest's memory, hence its ssh
    host key and the key it authorised."""
    path: Path
    keys: KeyPair            # the key the guest's /init authorised (from its command line)
    host_key: str            # the guest's dropbear host key, as its ready line printed it
    boot: BootInfo           # the boot of the machine it was taken from
    origin: Path             # that machine's directory (its console log tells the boot)
    console: bytes           # that machine's console up to the snapshot
    write_s: float           # how long QEMU took to write it
    size: int                # bytes

    def incoming_args(self) -> tuple[str, ...]:
        """QEMU arguments that load this snapshot instead of booting."""
        return ("-incoming", f"exec:cat {shlex.quote(str(self.path))}")

    def console_history(self) -> bytes:
        """What a restored machine's console log starts with: the boot it came from, and
        a line that says where the restore took over."""
        return (self.console.rstrip(b"\r\n") +
                f"\n--- guestpm: restored here from a snapshot of {self.origin} "
                f"({self.path.name}), taken after its ready line ---\n".encode())
