"""The kernel's log through /dev/kmsg, read without blocking and bounded (stdlib: no
dmesg binary in the guest).  The one reader of the guest side: the agent's dmesg
scenario, the KVM probe's "why no /dev/kvm" and the vfio cases use it.

    kmsg.log()                                 # every record the buffer holds now
    with kmsg.opened(from_end=True) as fd:     # only what is logged from here on
        ...
        said = kmsg.read_records(fd)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

PATH = "/dev/kmsg"
MAX_READS = 100_000     # well above the records of a large log_buf_len; a reader that
                        # can never end a loop is worse than one that stops short
RECORD = 8192           # one read returns one record; a longer one is EINVAL


def message(record: bytes) -> str:
    """The text of one record: "<prefix>;<text>\\n[continuation lines]" (pure)."""
    return record.decode(errors="replace").split(";", 1)[-1].split("\n", 1)[0]


def read_records(fd: int, max_reads: int = MAX_READS) -> list[str]:
    """The messages of the records readable now on `fd` (opened O_NONBLOCK).

    EPIPE means the record this fd stood at was overwritten: the next read gives the
    oldest one left, so go on.  Any other error ends the read with what was read."""
    lines: list[str] = []
    for _ in range(max_reads):
        try:
            rec = os.read(fd, RECORD)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.EPIPE:
                continue
            break
        if not rec:
            break
        lines.append(message(rec))
    return lines


@contextmanager
def opened(from_end: bool = False, path: str = PATH) -> Iterator[int]:
    """/dev/kmsg open for read_records(): from the oldest record, or (from_end) from now on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if from_end:
            os.lseek(fd, 0, os.SEEK_END)
        yield fd
    finally:
        os.close(fd)


def log(path: str = PATH) -> list[str]:
    """Every record the buffer holds now; none when there is no readable /dev/kmsg."""
    try:
        with opened(path=path) as fd:
            return read_records(fd)
    except OSError:                 # no /dev/kmsg (read_records itself never raises)
        return []
