"""The relaunch: after a SHUTDOWN, boot a new VM on the same persistent memory, as a
machine that hibernated is powered on again; and, when asked, one more VM on a copy of
that memory as the first VM left it (the same image, met by another machine: a
restore that must be refused).  Arch-neutral: the backend makes the VM."""

from __future__ import annotations

import os

from .policy import Result

WHEN = ("never", "off2", "always")


def wanted(result: Result, when: str) -> bool:
    """off2: only a SHUTDOWN flagged PSCI_OFF2 (hibernated); always: any SHUTDOWN (a
    test that needs the round trip records that the VMM was not told)."""
    return result.outcome == "shutdown" and (when == "always"
                                             or (when == "off2" and bool(result.off2)))


def attach(first: Result, second: Result) -> None:
    first.relaunch = {**second.__dict__,
                      "because": "off2" if first.off2 else "forced (the VMM was not told)"}



def attach_copy(first: Result, third: Result) -> None:
    first.relaunch_copy = {**third.__dict__, "because": "a copy of the first VM's pmem"}


def copy_sparse(src: str, dst: str) -> int:
    """Copy `src` to `dst` keeping its holes (a pmem file is mostly never written: the
    image is tens of MB of hundreds); the bytes copied."""
    copied = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        fo.truncate(size)
        at = 0
        while at < size:
            try:
                at = os.lseek(fi.fileno(), at, os.SEEK_DATA)
                end = os.lseek(fi.fileno(), at, os.SEEK_HOLE)
            except OSError:             # ENXIO: no data after `at`
                break
            fi.seek(at)
            fo.seek(at)
            while at < end:
                chunk = fi.read(min(1 << 20, end - at))
                if not chunk:
                    break
                fo.write(chunk)
                at += len(chunk)
                copied += len(chunk)
    return copied
