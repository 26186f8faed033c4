"""The relaunch: after a SHUTDOWN, boot a new VM on the same persistent memory, as a
machine that hibernated is powered on again.  Arch-neutral: the backend makes the VM."""

from __future__ import annotations

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

