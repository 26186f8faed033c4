"""The VMM's side of the L2 guest's suspend-to-idle, as the L2 DSDT
(guest-rootfs/acpi/l2_x86_dsdt.asl) hands it over: each call of the LPS0 device's _DSM
writes its function number to a port (acpi.LPS0_PORT), and HYPE0001's _DSM function 1
stores into an MMIO region (acpi.VPMC_ADDR).  Each is one KVM exit; each is logged with
its vCPU and the VMM's time:

    {"event": "lps0", "vcpu": 0, "fn": 5, "phase": "entry"}
    {"event": "vpmc", "vcpu": 1, "offset": 0, "value": 3, "size": 4}

With `wake_s`, the VMM wakes the guest that long after the last of the three LPS0 entry
calls (3, 5 and 7, in the kernel's order):
first every vCPU's MP_STATE, each kicked out of KVM_RUN ("idle-check": all HALTED when
the guest idles), then the wake GPE's status (GPE 0, \\_SB.PWRB's _PRW), which raises
the SCI once the guest has enabled it (the L2 `button` driver enables it at run time
too, so the guest then clears it).  The self-test faults (policy.FAULTS) lose a call,
misread the notify or wake the guest early as well."""

from __future__ import annotations

import threading
from collections.abc import Callable

# drivers/acpi/x86/s2idle.c's calls as 6.12 and 7.2 make them (6.1: 3 5 7, then 8 6 4)
ENTRY, EXIT = (3, 7, 5), (6, 8, 4)


def phase(fn: int) -> str:
    return "entry" if fn in ENTRY else "exit" if fn in EXIT else "other"


class S2idle:
    def __init__(self, log: Callable[..., object], snapshot: Callable[[], list[dict]],
                 raise_wake: Callable[[], None], wake_s: float | None = None,
                 fault: str = ""):
        self.log, self.snapshot, self.raise_wake, self.wake_s = \
            log, snapshot, raise_wake, wake_s
        self.fault = fault              # self-tests only (policy.FAULTS)
        self.entered: set[int] = set()  # the entry calls seen (logged or not)
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()

    def lps0(self, vcpu: int, offset: int, value: int, size: int) -> None:
        if not (self.fault == "lose-lps0-call" and value == ENTRY[1]):
            self.log("lps0", vcpu=vcpu, fn=value, phase=phase(value))
        if self.fault == "early-wake" and value == ENTRY[0]:
            threading.Thread(target=self.wake, daemon=True).start()    # and again later
        if value in ENTRY:
            self.entered.add(value)
        if self.entered >= set(ENTRY) and self.wake_s is not None:
            with self.lock:
                if self.timer is None:
                    self.timer = threading.Timer(self.wake_s, self.wake)
                    self.timer.daemon = True
                    self.timer.start()

    def vpmc(self, vcpu: int, offset: int, value: int, size: int) -> None:
        if self.fault == "misread-notify":
            value += 1
        self.log("vpmc", vcpu=vcpu, offset=offset, value=value, size=size)

    def wake(self) -> None:
        """Where each vCPU is, then the wake GPE."""
        self.log("idle-check", states=self.snapshot())
        self.raise_wake()

    def stop(self) -> None:
        with self.lock:
            if self.timer:
                self.timer.cancel()
