"""What one MMIO exit costs through this KVM and this VMM's Python: a guest page of
N loads from the PL011's flag register, then PSCI SYSTEM_OFF; wall time per exit.

    python3 -m harness.guest.vmm.arm64.bench [N]      # one JSON line

Under TCG at L0 the figure includes the L1 host's KVM world switch, emulated; on
bare metal it is the KVM exit plus the Python dispatch."""

from __future__ import annotations

import json
import sys
import time

from ...kvm import arm64, uapi
from ...kvm.vm import Kvm
from . import board
from .devices import Pl011


def mmio_roundtrip(n: int = 2000) -> dict:
    uart = Pl011(lambda b: None, lambda level: None)
    with Kvm() as kvm, kvm.create_vm() as vm:
        mem = vm.add_memory(0, board.RAM, 1 << 20)
        code = arm64.Asm(board.RAM)
        code.mov(0, board.UART.base)
        code.emit(*[arm64.ldr_x(1, 0, Pl011.FR) for _ in range(n)])
        code.mov(0, arm64.PSCI_SYSTEM_OFF)
        code.emit(arm64.hvc())
        blob = code.assemble()
        mem[:len(blob)] = blob
        v = vm.create_vcpu(0)
        arm64.vcpu_init(v, uapi.KVM_ARM_VCPU_PSCI_0_2)
        v.set_reg(uapi.ARM64_PC, board.RAM)
        exits, python_s = 0, 0.0
        t0 = time.monotonic()
        while True:
            ex = v.run_in_thread()
            if ex is None:
                continue
            if ex.reason != "MMIO":
                break
            t = time.monotonic()
            v.complete_mmio_read(uart.read(ex.phys_addr - board.UART.base), ex.len)
            python_s += time.monotonic() - t
            exits += 1
        wall = time.monotonic() - t0
    return {"exits": exits, "last_exit": ex.reason, "wall_s": round(wall, 4),
            "us_per_exit": round(1e6 * wall / max(exits, 1), 1),
            "python_us_per_exit": round(1e6 * python_s / max(exits, 1), 1)}


if __name__ == "__main__":
    print(json.dumps(mmio_roundtrip(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
