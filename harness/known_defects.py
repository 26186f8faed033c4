"""Kernel defects this suite has observed, as data: a name, the whole symptom, where it is
written up.  A test wraps the step that can hit one in `xfail_on(m, DEFECT, ...)`: a
guest crash whose console text matches the symptom becomes an XFAIL citing the defect
and the log; any other crash stays a FAIL.  tests/unit/test_known_defects.py holds each
symptom against the recorded oops (tests/unit/golden/oops/) and against near misses."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import pytest

from harness.errors import GuestPanic


@dataclass(frozen=True)
class KnownDefect:
    name: str
    symptom: re.Pattern[str]
    summary: str                       # what the XFAIL reason says
    arch: str | None = None            # only on this arch (None: any)
    doc: str = "docs/known-defects.md"

    def matches(self, text: str, arch: str | None = None) -> bool:
        if self.arch is not None and arch is not None and arch != self.arch:
            return False
        return bool(self.symptom.search(text.replace("\r", "")))


# Debian 5.10.223 amd64 (1 S3 cycle in 3 runs) and 6.1.176 amd64 (1 CI run): IPv6's DAD
# work transmits through virtio-net while the suspend has already frozen the device,
# and the transmit faults in the virtqueue code.  5.10 takes a general protection fault
# in virtqueue_enable_cb_delayed, 6.1 a NULL dereference in virtqueue_get_buf.  A race:
# tests that can meet it treat it as a non-strict xfail.
VIRTIO_NET_FROZEN_XMIT = KnownDefect(
    name="virtio-net transmit after freeze",
    symptom=re.compile(
        r"(?s)(general protection fault, probably for non-canonical address"
        r"|BUG: kernel NULL pointer dereference, address: [0-9a-f]+).*?"
        r"Workqueue: ipv6_addrconf addrconf_dad_work.*?"
        r"RIP: 0010:virtqueue_\w+\+0x[0-9a-f]+/0x[0-9a-f]+ \[virtio_ring\].*?"
        r"start_xmit\+0x[0-9a-f]+/0x[0-9a-f]+ \[virtio_net\]"),
    summary="IPv6 DAD transmits through virtio-net after the suspend froze it; the "
            "transmit faults in the virtqueue code",
    arch="x86_64")

# Debian 6.12 arm64 (52-bit VA with LPA2, which QEMU's -cpu max offers), gone in 7.2 and
# absent with lpa2=off.  The whole symptom, in the order the oops prints it: a paging
# request fault, with 52-bit VAs, and the faulting PC inside trans_pgd_create_copy (not
# merely the name somewhere in a call trace).
TRANS_PGD_RESTORE = KnownDefect(
    name="arm64 hibernation restore in trans_pgd_create_copy",
    symptom=re.compile(
        r"(?s)Unable to handle kernel paging request at virtual address [0-9a-f]+\n"
        r".*?swapper pgtable: 4k pages, 52-bit VAs"
        r".*?\bpc : trans_pgd_create_copy\+0x[0-9a-f]+/0x[0-9a-f]+"),
    summary="the arm64 restore oopses in trans_pgd_create_copy (paging request in the "
            "linear map copy, 52-bit VA/LPA2)",
    arch="arm64")


@contextlib.contextmanager
def xfail_on(m, *defects: KnownDefect) -> Iterator[None]:
    """Turn a guest crash that shows one of `defects` into an XFAIL naming it."""
    try:
        yield
    except GuestPanic as e:
        arch = getattr(getattr(m, "profile", None), "arch", None)
        for d in defects:
            if d.matches(str(e), arch):
                pytest.xfail(f"known kernel defect: {d.summary} ({d.doc}; {m.console_log})")
        raise


def xfail_if_seen(text: str, arch: str, where: str, *defects: KnownDefect) -> None:
    """The same, for a console the test reads itself (an L2 guest's): XFAIL naming the
    first of `defects` whose whole symptom is in `text`."""
    for d in defects:
        if d.matches(text, arch):
            pytest.xfail(f"known kernel defect: {d.summary} ({d.doc}; {where})")
