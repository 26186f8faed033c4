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

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BootError

if TYPE_CHECKING:
    from harness.vm.machine import BootInfo, Machine
    from harness.vm.ssh import KeyPair

# QEMU's default migration bandwidth (32 MiB/s) would make a 200 MiB snapshot take 6 s;
# the file is local, so do not limit it.
MAX_BANDWIDTH = 1 << 40


class SnapshotError(BootError):
    """QEMU could not write a snapshot (a device that blocks migration, a full disk)."""


@dataclass(frozen=True)
class Snapshot:
    path: Path
    keys: "KeyPair"          # the key the guest's /init authorised (from its command line)
    host_key: str            # the guest's dropbear host key, as its ready line printed it
    boot: "BootInfo"         # the boot of the machine it was taken from
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


def restorable(qemu_args: tuple[str, ...]) -> str | None:
    """Why a machine with these extra QEMU arguments must boot instead of being restored
    from a snapshot (None: it may be restored).  Pure."""
    for flag, value in zip(qemu_args, qemu_args[1:]):
        if flag in ("-drive", "-blockdev") and "readonly=on" not in value.split(","):
            return f"a writable disk ({flag} {value}) would be shared with the snapshot"
        if flag == "-incoming":
            return "it is itself an incoming migration"
    return None


def take(m: "Machine", path: Path, timeout: float = 120) -> Snapshot:
    """Stop `m`, write its state to `path`, resume it.  SnapshotError if QEMU could not;
    `m` runs on either way."""
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
    assert m.host_key is not None and m.boot is not None, "snapshot of a machine not ready"
    return Snapshot(path, m.keys, m.host_key, m.boot, m.workdir, console,
                    time.monotonic() - t, path.stat().st_size)
