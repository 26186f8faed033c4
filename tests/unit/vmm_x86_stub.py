"""A stub x86 backend for the reference VMM's core, and a fake vCPU whose KVM_RUN
returns scripted exits through the real kvm_run decoder: what an x86 backend needs
from the core, written without touching it (tests/unit/test_vmm_core.py).

    python3 tests/unit/vmm_x86_stub.py      # one JSON line: what ran, which modules
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.guest.kvm import uapi
from harness.guest.kvm.vm import decode_run
from harness.guest.vmm.bus import PIO
from harness.guest.vmm.core import Core
from harness.guest.vmm.policy import Policy

EXIT_HLT = next(code for code, name in uapi.KVM_EXIT_NAMES.items() if name == "HLT")
COM1 = 0x3F8
DATA_AT = 4096                  # where in the run page KVM puts an IO exit's data


class FakeVcpu:
    """KVM_RUN returns the next scripted exit, laid out in a run page as KVM writes it:
    ("out", port, size, data), ("in", port, size, count) or ("hlt",)."""

    def __init__(self, vcpu_id: int, script: list[tuple]):
        self.id, self.script = vcpu_id, list(script)
        self.page = bytearray(DATA_AT + 64)
        self.ins: list[bytes] = []          # what the core handed back for each IN

    def run_in_thread(self):
        if not self.script:
            time.sleep(0.01)                # as if kicked out of a vCPU that idles
            return None
        step = self.script.pop(0)
        uapi.RUN_EXIT_REASON.pack_into(self.page, 0, EXIT_HLT if step[0] == "hlt"
                                       else uapi.KVM_EXIT_IO)
        if step[0] == "out":
            _, port, size, data = step
            uapi.RUN_IO.pack_into(self.page, uapi.UNION_OFFSET, uapi.KVM_EXIT_IO_OUT, size,
                                  port, len(data) // size, DATA_AT)
            self.page[DATA_AT:DATA_AT + len(data)] = data
        elif step[0] == "in":
            _, port, size, count = step
            uapi.RUN_IO.pack_into(self.page, uapi.UNION_OFFSET, uapi.KVM_EXIT_IO_IN, size,
                                  port, count, DATA_AT)
        return decode_run(bytes(self.page))

    def io_data(self, ex) -> bytes:
        return bytes(self.page[ex.data_offset:ex.data_offset + ex.len * ex.count])

    def complete_io_in(self, ex, data: bytes) -> None:
        self.ins.append(data)

    def kick(self) -> None:
        pass


class FakeVm:
    def __init__(self, vcpus: list[FakeVcpu]):
        self.vcpus = vcpus


class Com1Stub:
    """A 16550's transmit register and its line status (always ready to send)."""
    THR, LSR, LSR_THRE_TEMT = 0, 5, 0x60

    def __init__(self, sink):
        self.sink = sink

    def read(self, offset: int) -> int:
        return self.LSR_THRE_TEMT if offset == self.LSR else 0

    def write(self, offset: int, value: int) -> None:
        if offset == self.THR:
            self.sink(bytes([value]))


class X86StubBackend:
    def __init__(self, script: list[tuple]):
        self.script = script

    def setup(self, core: Core) -> None:
        core.vm = FakeVm([FakeVcpu(0, self.script)])
        core.bus.add(PIO, COM1, 8, "com1", Com1Stub(core.console_out))

    def handle_exit(self, core: Core, v, ex) -> bool:
        if ex.reason == "HLT":
            core.finish("shutdown", "hlt")
            return True
        return False

    def stop(self, core: Core) -> None:
        pass

    def report(self) -> dict:
        return {}

    def where(self, v) -> dict:
        return {"rip": hex(0xFFFF_FFFF_8100_0000 + v.id)}


SCRIPT = [("out", COM1, 1, b"h"), ("out", COM1, 1, b"i\n"),     # a rep outsb of 2
          ("in", COM1 + 5, 1, 1), ("in", 0x80, 2, 1), ("hlt",)]


def demo() -> dict:
    core = Core(X86StubBackend(SCRIPT), Policy(vcpus=1))
    core.setup()
    result = core.run(timeout=10, silent_s=10)
    core.close()
    return {"outcome": result.outcome, "detail": result.detail,
            "console": bytes(core.console).decode(), "pio": core.bus.counts[PIO],
            "ins": [d.hex() for d in core.vm.vcpus[0].ins],
            "arm64_modules": sorted(m for m in sys.modules if "arm64" in m)}


if __name__ == "__main__":
    print(json.dumps(demo()))
