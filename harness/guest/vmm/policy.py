"""What a reference VMM run is asked to do (Policy) and what it reports (Result): data
shared by the core, the arch backends and the host side that reads the JSON line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

ON_SUSPEND = ("honour", "hold", "deny")


class VmmError(Exception):
    """Bad input or a host that cannot run the VM: one line for the user."""


class CapAbsent(VmmError):
    """The host KVM lacks a capability the policy asks for (a SKIP for tests)."""


@dataclass(frozen=True)
class Policy:
    system_suspend_cap: bool = True
    on_suspend: str = "honour"          # honour: MP_STATE_SUSPENDED, KVM waits for an
                                        # interrupt (WAKEUP exit); hold: the VMM waits for
                                        # its RTC alarm; deny: x0 = DENIED
    psci_version: tuple[int, int] | None = None     # None: KVM's default
    vcpus: int = 2
    ram_mib: int = 256
    pmem_mib: int = 0                   # a pmem region backed by `pmem` (a file)

    def __post_init__(self):
        if self.on_suspend not in ON_SUSPEND:
            raise VmmError(f"on_suspend {self.on_suspend!r}: one of {', '.join(ON_SUSPEND)}")
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

    def to_json(self) -> str:
        return json.dumps(asdict(self))
