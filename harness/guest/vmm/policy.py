"""What a reference VMM run is asked to do (Policy) and what it reports (Result): data
shared by the core, the arch backends and the host side that reads the JSON line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

ON_SUSPEND = ("honour", "hold", "deny")

# Self-tests only (the VMM's --fault; no default run passes one): each breaks one promise
# of the VMM's side of the contract, as a VMM bug or a KVM defect would, so that a
# self-test shows the L2 judge of that promise FAILs.  The logs stay true to what the
# VMM did; only the fault's own report (stopped-lie) is false.
FAULTS = {
    "wake-at-once": "restart a vCPU that called SYSTEM_SUSPEND at once, without waiting "
                    "for an interrupt (honour) or the RTC alarm (hold)",
    "wrong-pc": "restart a suspended vCPU one instruction past its entry point",
    "ignore-off2": "read a SHUTDOWN exit flagged PSCI_OFF2 as a plain power-off",
    "stopped-lie": "report every other vCPU STOPPED at a system event, whatever KVM says",
    # x86 s2idle (x86_64/s2idle.py)
    "lose-lps0-call": "drop the guest's LPS0 entry call 7 as a lost exit would: not logged",
    "misread-notify": "log the HYPE0001 notify's value one higher, as a misdecoded MMIO "
                      "exit would",
    "early-wake": "wake the guest at its first LPS0 entry call, before it can idle",
}


class VmmError(Exception):
    """Bad input or a host that cannot run the VM: one line for the user."""


class CapAbsent(VmmError):
    """The host KVM lacks a capability the policy asks for (a SKIP for tests)."""


@dataclass(frozen=True)
class Policy:
    system_suspend_cap: bool = True
    # per SYSTEM_SUSPEND call, in order; the last holds for every later call.  honour:
    # MP_STATE_SUSPENDED, KVM waits for an interrupt (WAKEUP exit); hold: the VMM waits
    # for its RTC alarm; deny: x0 = DENIED
    on_suspend: tuple[str, ...] = ("honour",)
    psci_version: tuple[int, int] | None = None     # None: KVM's default
    vcpus: int = 2
    ram_mib: int = 256
    pmem_mib: int = 0                   # a pmem region backed by `pmem` (a file)
    fault: str = ""                     # one of FAULTS: self-tests only
    vcpu_left_on: bool = False          # self-tests only: the last vCPU starts on, in a
                                        # WFI loop outside the guest's RAM (a core that
                                        # is not OFF, which the guest does not use)

    def __post_init__(self):
        wrong = [p for p in self.on_suspend if p not in ON_SUSPEND]
        if wrong or not self.on_suspend:
            raise VmmError(f"on_suspend {','.join(self.on_suspend)!r}: one or more of "
                           f"{', '.join(ON_SUSPEND)}, comma-separated")
        if self.fault and self.fault not in FAULTS:
            raise VmmError(f"fault {self.fault!r}: one of {', '.join(FAULTS)}")
        if self.vcpu_left_on and self.vcpus < 2:
            raise VmmError("a vCPU left on needs a second vCPU")
        if not 1 <= self.vcpus <= 8:
            raise VmmError(f"{self.vcpus} vCPUs: 1..8")


@dataclass
class Result:
    outcome: str                        # shutdown, reset, crash, timeout, silent, error
    detail: str = ""
    off2: bool | None = None            # SHUTDOWN: the PSCI_OFF2 flag in data[0]
    elapsed_s: float = 0.0
    mmio_exits: dict = field(default_factory=dict)
    pio_exits: dict = field(default_factory=dict)   # x86: port I/O, per device
    mmio_s: float = 0.0
    exits: list = field(default_factory=list)
    console_tail: str = ""
    psci_version: str = ""
    system_suspend_cap: bool | None = None
    relaunch: dict | None = None        # the next VM on the same pmem, when there was one
    relaunch_copy: dict | None = None   # a VM on a copy of the pmem as the first VM left it
    fault: str = ""                     # the self-test's fault (Policy.fault), if any

    def to_json(self) -> str:
        return json.dumps(asdict(self))
