"""Guest power transitions driven from inside (ssh) and observed from outside (QMP).

A transition is decided from evidence on both sides: the guest's write to
/sys/power/state and its return status, QEMU's SUSPEND / WAKEUP events with host
timestamps, and the guest's kernel log afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .errors import WaitTimeout
from .machine import Machine


class NeverSuspended(AssertionError):
    """The write to /sys/power/state returned before QEMU saw the guest suspend."""


class NeverWoke(AssertionError):
    """QEMU saw the guest suspend, but no WAKEUP followed within the bound."""


@dataclass
class Cycle:
    suspend_s: float      # write started -> QMP SUSPEND
    wake_s: float         # wake action (or SUSPEND, for a timed wake) -> QMP WAKEUP
    return_s: float       # WAKEUP -> the guest's write returned
    status: int           # of `echo mem > /sys/power/state`


def suspend_to_ram(m: Machine, wake: Callable[[], None] | None, timeout: float = 60,
                   what: str = "S3") -> Cycle:
    """`echo mem > /sys/power/state` over ssh; after QMP SUSPEND call `wake` (None: the
    guest wakes itself, e.g. an RTC alarm); then QMP WAKEUP and the write's return."""
    t0 = time.time()
    cmd = m.ssh.start("echo mem > /sys/power/state")

    def returned_early() -> None:
        m._watchdog()
        if cmd.done():
            r = cmd.wait(1)
            raise NeverSuspended(
                f"{what}: the guest never suspended: `echo mem > /sys/power/state` returned "
                f"status {r.status} ({r.stderr.strip() or 'no error printed'}) before any "
                f"QMP SUSPEND ({m.artifacts()})")

    m.qmp.wait_event("SUSPEND", after=t0, timeout=timeout, watchdog=returned_early)
    t1 = time.time()
    if wake:
        wake()
    t2 = time.time()
    try:
        m.qmp.wait_event("WAKEUP", after=t1, timeout=timeout, watchdog=m._watchdog)
    except WaitTimeout as e:
        raise NeverWoke(f"{what}: suspended but never woke: {e}; console tail "
                        f"({m.console_log}):\n{m.console.tail()}") from None
    t3 = time.time()
    r = cmd.wait(timeout)
    return Cycle(suspend_s=t1 - t0, wake_s=t3 - t2, return_s=time.time() - t3, status=r.status)
