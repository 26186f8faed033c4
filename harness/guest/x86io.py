"""x86 KVM exits of a tiny guest: port I/O, MMIO and HLT reach the VMM as api.rst says.

The first step of an x86 VMM in guestpm (an L2 guest's s2idle notification and its
vfio ACPI Notify are port and MMIO accesses its firmware makes): a VM with one small
memory slot and a few real-mode instructions per case, and the exits KVM hands to
userspace, asserted field by field (KVM_EXIT_IO: direction, size, port, count, data;
KVM_EXIT_MMIO: address, length, direction, data), including the way back: the value
an IN or an MMIO read returns is the one the VMM put in kvm_run.

    python3 -m harness.guest.x86io            KTAP on stdout (bare-metal x86_64 with /dev/kvm)
    python3 -m harness.guest.x86io --json     the results the host-side tests assert

Exit status: 0 no failure, 1 a failure, 4 everything skipped (kselftest codes)."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Self

from . import kselftest
from .kvm import x86
from .kvm.vm import Exit, Kvm, KvmBroken, KvmUnavailable

CODE_GPA = 0x1000          # the code's page, inside the one memory slot
RAM_SIZE = 0x4000          # slot 0: guest physical 0..16 KiB
RAM_SCRATCH = 0x3000       # a RAM address: a store there stays in the guest
MMIO = 0xE000              # no slot covers it: every access exits as KVM_EXIT_MMIO
PORT = 0x510               # no in-kernel device without an irqchip: every access exits
EXIT_COST_OUTS = 200       # OUTs timed for the cost of one exit


@dataclass
class Env:
    machine: str
    release: str
    kvm: str | None = None          # why KVM is unusable, or None


def probe() -> Env:
    env = Env(machine=platform.machine(), release=platform.release())
    if env.machine != "x86_64":
        env.kvm = f"host is {env.machine}, not x86_64: port I/O is an x86 exit"
        return env
    try:
        Kvm().close()
    except KvmUnavailable as e:     # no KVM on this kernel or machine: every case SKIPs
        env.kvm = str(e)
    except KvmBroken:               # KVM should be there: every case FAILs, quoting it
        pass
    return env


def needs_kvm(env: Env) -> str | None:
    return env.kvm


SUITE = kselftest.Registry(requires=(needs_kvm,))
CASES, case = SUITE.cases, SUITE.case


class TinyGuest:
    """One vCPU in real mode running `code` at CODE_GPA in a 16 KiB slot at 0."""

    def __init__(self, code: bytes, run_timeout: float = 10.0):
        self.run_timeout = run_timeout
        self.last: Exit | None = None   # the last exit, for completing an IN
        self.kvm = Kvm()
        try:
            self.vm = self.kvm.create_vm()
            x86.set_tss_addr(self.vm)
            self.mem = self.vm.add_memory(0, 0, RAM_SIZE)
            self.mem[CODE_GPA:CODE_GPA + len(code)] = code
            self.vcpu = self.vm.create_vcpu(0)
            self.vcpu.state_hook = lambda: x86.state(self.vcpu)
            x86.real_mode_at(self.vcpu, CODE_GPA)
        except BaseException:
            self.close()
            raise

    def run(self) -> dict:
        """KVM_RUN once; the exit as the tests compare it."""
        ex = self.last = self.vcpu.run(self.run_timeout)
        if ex.reason == "IO":
            out: dict = {"exit": "IO", "direction": "out" if ex.is_write else "in", "size": ex.len,
                   "port": ex.port, "count": ex.count}
            if ex.is_write:
                out["data"] = x86.out_values(self.vcpu, ex)
            return out
        if ex.reason == "MMIO":
            return {"exit": "MMIO", "phys_addr": ex.phys_addr, "len": ex.len,
                    "is_write": ex.is_write, **({"value": ex.value} if ex.is_write else {})}
        return {"exit": ex.reason, **{k: v for k, v in ex.summary().items() if k != "reason"}}

    def close(self) -> None:
        vm = getattr(self, "vm", None)
        if vm is not None:
            vm.close()
        self.kvm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def io_out(size: int, *data: int) -> dict:
    return {"exit": "IO", "direction": "out", "size": size, "port": PORT,
            "count": len(data), "data": list(data)}


def io_in(size: int) -> dict:
    return {"exit": "IO", "direction": "in", "size": size, "port": PORT, "count": 1}


HLT = {"exit": "HLT"}


# ---------------------------------------------------------------- port I/O

@case("pio")
def out_exits_with_port_size_and_data(t):
    """OUT of a byte, a word and a dword: three KVM_EXIT_IO, direction out, each with
    the port, its size, count 1 and the value in kvm_run; then HLT exits."""
    code = (x86.Code16().mov_dx(PORT)
            .mov_a(1, 0x5A).out_dx(1)
            .mov_a(2, 0x1234).out_dx(2)
            .mov_a(4, 0x89AB_CDEF).out_dx(4)
            .hlt().assemble())
    with TinyGuest(code) as g:
        for n, want in enumerate((io_out(1, 0x5A), io_out(2, 0x1234),
                                  io_out(4, 0x89AB_CDEF), HLT), 1):
            t.require(f"exit {n}", g.run(), want)


@case("pio")
def in_returns_what_the_vmm_put_in_kvm_run(t):
    """IN of a byte and of a word exits (direction in, no data yet); the value the VMM
    writes at kvm_run's data_offset is what the guest's register holds after the next
    KVM_RUN, which the guest then echoes with OUT."""
    code = (x86.Code16().mov_dx(PORT)
            .in_dx(1).out_dx(1)
            .in_dx(2).out_dx(2)
            .hlt().assemble())
    with TinyGuest(code) as g:
        for size, value in ((1, 0xA5), (2, 0xBEEF)):
            t.require(f"IN of {size} byte(s)", g.run(), io_in(size))
            x86.complete_in(g.vcpu, g.last, value)
            t.require(f"the guest's echo of the {size}-byte IN", g.run(), io_out(size, value))
        t.expect("then", g.run(), HLT)


@case("pio")
def exit_cost_of_a_port_write(t):
    """A loop of OUTs: one exit each, none lost or merged; the mean round trip through
    the VMM (KVM_RUN return to KVM_RUN return) is recorded, not judged."""
    code = (x86.Code16().mov_dx(PORT).mov_cx(EXIT_COST_OUTS).mov_a(1, 0x42)
            .label("again").out_dx(1).loop("again")
            .hlt().assemble())
    with TinyGuest(code) as g:
        t0 = time.monotonic()
        exits = [g.run() for _ in range(EXIT_COST_OUTS)]
        elapsed = time.monotonic() - t0
        t.expect(f"{EXIT_COST_OUTS} OUTs, one exit each", exits,
                 [io_out(1, 0x42)] * EXIT_COST_OUTS)
        t.expect("then", g.run(), HLT)
    t.observed["exit_us"] = round(elapsed / EXIT_COST_OUTS * 1e6, 1)


# ---------------------------------------------------------------- MMIO

@case("mmio")
def store_outside_memory_exits_as_mmio_write(t):
    """A byte and a word stored where no memory slot is: KVM_EXIT_MMIO with the address,
    the length and the data, is_write; a store into the slot does not exit and lands in
    its memory."""
    code = (x86.Code16()
            .store(1, MMIO, 0x77)
            .store(2, MMIO + 2, 0x1234)
            .store(1, RAM_SCRATCH, 0x11)
            .hlt().assemble())
    with TinyGuest(code) as g:
        t.require("byte store", g.run(),
                  {"exit": "MMIO", "phys_addr": MMIO, "len": 1, "is_write": True, "value": 0x77})
        t.require("word store", g.run(), {"exit": "MMIO", "phys_addr": MMIO + 2, "len": 2,
                                          "is_write": True, "value": 0x1234})
        t.expect("the store into the slot does not exit", g.run(), HLT)
        t.expect("the slot's memory holds it", g.mem[RAM_SCRATCH], 0x11)


@case("mmio")
def load_outside_memory_returns_what_the_vmm_put_in_kvm_run(t):
    """A byte and a word loaded from where no memory slot is: KVM_EXIT_MMIO, not a
    write; the value the VMM writes to kvm_run.mmio.data is what the guest loaded (it
    echoes it to the port)."""
    code = (x86.Code16().mov_dx(PORT)
            .load_a(1, MMIO + 4).out_dx(1)
            .load_a(2, MMIO + 6).out_dx(2)
            .hlt().assemble())
    with TinyGuest(code) as g:
        for size, addr, value in ((1, MMIO + 4, 0x3C), (2, MMIO + 6, 0xC0DE)):
            t.require(f"{size}-byte load", g.run(),
                      {"exit": "MMIO", "phys_addr": addr, "len": size, "is_write": False})
            g.vcpu.complete_mmio_read(value, size)
            t.require(f"the guest's echo of the {size}-byte load", g.run(), io_out(size, value))
        t.expect("then", g.run(), HLT)


# ---------------------------------------------------------------- entry points

def run(select: str = "") -> dict:
    env = probe()
    results = [kselftest.run_case(c, env) for c in CASES if select in c.name]
    return {"env": asdict(env), "results": results}


def main(argv: list[str]) -> int:
    return kselftest.main(
        argv, "python3 -m harness.guest.x86io", CASES, lambda a: run(a.select),
        lambda out, a: (f"guestpm x86 KVM exits on {out['env']['release']} "
                        f"({out['env']['machine']})"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
