"""arm64 PSCI power-state uAPI cases: SYSTEM_SUSPEND (5.19) and SYSTEM_OFF2 (6.13).

A tiny VMM: each case makes a VM with one page of guest code that issues HVC with
x0..x3 set by the VMM and stores the result to an MMIO mailbox, then asserts what
KVM did (the exit, its data, the registers, MP_STATE) against the kernel's
Documentation/virt/kvm/api.rst and ARM DEN0022 (PSCI).

    python3 -m harness.guest.psci            KTAP on stdout (bare-metal arm64 with /dev/kvm)
    python3 -m harness.guest.psci --json     the results the host-side tests assert
    python3 -m harness.guest.psci -k off2    only cases whose name contains "off2"

Exit status: 0 no failure, 1 a failure, 4 everything skipped (kselftest codes)."""

from __future__ import annotations

import errno
import platform
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Self

from . import kselftest
from .kvm import arm64, uapi
from .kvm.arm64 import (
    AFFINITY_ON,
    PSCI_AFFINITY_INFO64,
    PSCI_CPU_ON64,
    PSCI_DENIED,
    PSCI_FEATURES,
    PSCI_INTERNAL_FAILURE,
    PSCI_INVALID_PARAMS,
    PSCI_NOT_SUPPORTED,
    PSCI_OFF2_TYPE_HIBERNATE_OFF,
    PSCI_SUCCESS,
    PSCI_SYSTEM_OFF,
    PSCI_SYSTEM_OFF2,
    PSCI_SYSTEM_OFF2_64,
    PSCI_SYSTEM_RESET,
    PSCI_SYSTEM_RESET2_64,
    PSCI_SYSTEM_SUSPEND,
    PSCI_SYSTEM_SUSPEND64,
    PSCI_VERSION,
    Asm,
    hvc,
    psci_version,
    ret_name,
    s64,
    str_x,
    version_str,
)
from .kvm.vm import Kvm, KvmBroken, KvmUnavailable, VcpuHang

CODE_GPA = 0x8000_0000      # one 64 KiB slot of guest memory holding the code
CODE_SIZE = 0x1_0000
MAILBOX = 0x1000_0000       # unmapped: guest stores here become KVM_EXIT_MMIO
RESULT, RESUMED, CPU_ON_ENTERED = MAILBOX, MAILBOX + 8, MAILBOX + 16
PSTATE_EL1H_DAIF = 0x3C5    # EL1h, D, A, I, F masked: PSCI's state at an entry point
ENTRY_CTX = 0xC0DE_5EED     # context ids handed to SYSTEM_SUSPEND / CPU_ON

# ---------------------------------------------------------------- environment

@dataclass
class Env:
    machine: str
    release: str
    kvm: str | None = None             # why KVM is unusable, or None
    suspend_cap: int | None = None     # KVM_CHECK_EXTENSION(KVM_CAP_ARM_SYSTEM_SUSPEND)
    psci_default: int | None = None    # KVM_REG_ARM_PSCI_VERSION of a fresh vCPU


def probe() -> Env:
    env = Env(machine=platform.machine(), release=platform.release())
    if env.machine != "aarch64":
        env.kvm = f"host is {env.machine}, not aarch64: PSCI is the arm64 firmware interface"
        return env
    try:
        kvm = Kvm()
    except KvmUnavailable as e:     # no KVM on this kernel or machine: every case SKIPs
        env.kvm = str(e)
        return env
    except KvmBroken:               # KVM should be there: every case FAILs, quoting it
        return env
    with kvm:
        env.suspend_cap = kvm.check_extension(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND)
        with PsciGuest(kvm) as g:
            env.psci_default = g.vcpu(0).get_reg(uapi.KVM_REG_ARM_PSCI_VERSION)
    return env


def needs_kvm(env: Env) -> str | None:
    return env.kvm


def needs_suspend_cap(env: Env) -> str | None:
    if env.suspend_cap == 0:
        return ("KVM_CHECK_EXTENSION(KVM_CAP_ARM_SYSTEM_SUSPEND=216) is 0: "
                "SYSTEM_SUSPEND exits absent")
    return None


def needs_psci(major: int, minor: int, feature: str):
    def check(env: Env) -> str | None:
        if env.psci_default is not None and env.psci_default < psci_version(major, minor):
            return (f"PSCI version {version_str(env.psci_default)} < {major}.{minor}: "
                    f"{feature} absent")
        return None
    return check


# The PSCI version KVM gives a new VM (KVM_REG_ARM_PSCI_VERSION's default), by the
# release that brought it: 1.0 until 5.18 raised it to 1.1, 1.3 from 6.13 (SYSTEM_OFF2).
# A floor, not the exact value: a developer's kernel may carry a later version.
PSCI_FLOORS = (((6, 13), (1, 3)), ((5, 18), (1, 1)), ((0, 0), (1, 0)))


def release_version(release: str | None) -> tuple[int, int] | None:
    """(major, minor) of a release string: "6.1.0-50-arm64" -> (6, 1)."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m[1]), int(m[2])) if m else None


def floor_of(version: tuple[int, int]) -> tuple[int, int]:
    """(major, minor) of the lowest PSCI version KVM of kernel `version` gives a new VM."""
    return next(floor for since, floor in PSCI_FLOORS if version >= since)


def psci_floor(release: str | None) -> int | None:
    """The lowest PSCI version (as KVM_REG_ARM_PSCI_VERSION encodes it) that KVM on a
    kernel of `release` gives a new VM; None when the release cannot be read.  The L1
    host's release applies: it is that kernel's KVM which answers."""
    v = release_version(release)
    return None if v is None else psci_version(*floor_of(v))


def at_least(version: int, floor: int) -> str:
    """What a floor check shows: ">= FLOOR" when met, else the version seen."""
    return f">= {version_str(floor)}" if version >= floor else version_str(version)


# ---------------------------------------------------------------- the tiny VMM

def ret(value: int) -> dict:
    """What the guest saw in x0 when the call returned to it (no exit to the VMM)."""
    return {"returned": s64(value), "name": ret_name(value)}


def system_event(type_: str, data: list[int] | None = None) -> dict:
    data = data or []
    return {"exit": "SYSTEM_EVENT", "type": type_, "ndata": len(data), "data": data}


class PsciGuest:
    """A VM whose vCPUs run:  call: hvc #0; str x0,[RESULT]; b call
    resume:       mov x9, MAILBOX; str x0,[RESUMED]; b call        (SYSTEM_SUSPEND entry)
    cpu_on_entry: mov x9, MAILBOX; str x0,[CPU_ON_ENTERED]; b call (CPU_ON entry)
    spin:         b spin                                          (the harness self-test)"""

    def __init__(self, kvm: Kvm | None = None, vcpus: int = 1, online: tuple[int, ...] = (0,),
                 suspend_cap: bool = False, version: int | None = None,
                 run_timeout: float = 10.0):
        self.run_timeout = run_timeout
        self._own_kvm = kvm is None
        self.kvm = kvm or Kvm()
        try:
            self.vm = self.kvm.create_vm()
        except BaseException:
            self._close_kvm()
            raise
        try:
            if suspend_cap:
                self.vm.enable_cap(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND)
            asm = Asm(CODE_GPA)
            asm.label("call")
            asm.emit(hvc(0), str_x(0, 9, RESULT - MAILBOX)).b("call")
            asm.label("resume")
            asm.mov(9, MAILBOX).emit(str_x(0, 9, RESUMED - MAILBOX)).b("call")
            asm.label("cpu_on_entry")
            asm.mov(9, MAILBOX).emit(str_x(0, 9, CPU_ON_ENTERED - MAILBOX)).b("call")
            asm.label("spin")
            asm.b("spin")
            code = asm.assemble()
            self.entry = {name: asm.addr(name)
                          for name in ("call", "resume", "cpu_on_entry", "spin")}
            mem = self.vm.add_memory(0, CODE_GPA, CODE_SIZE)
            mem[:len(code)] = code
            for i in range(vcpus):
                v = self.vm.create_vcpu(i)
                feats = [uapi.KVM_ARM_VCPU_PSCI_0_2]
                if i not in online:
                    feats.append(uapi.KVM_ARM_VCPU_POWER_OFF)
                arm64.vcpu_init(v, *feats)
                v.state_hook = partial(arm64.vcpu_state, v)
            self.vcpu(0).set_reg(uapi.ARM64_PC, self.entry["call"])
            self.vcpu(0).set_reg(uapi.arm64_x(9), MAILBOX)
            if version is not None:
                self.vcpu(0).set_reg(uapi.KVM_REG_ARM_PSCI_VERSION, version)
        except BaseException:
            self.close()
            raise

    def vcpu(self, n: int):
        return self.vm.vcpus[n]

    def reg(self, n: int, vcpu: int = 0) -> int:
        return self.vcpu(vcpu).get_reg(uapi.arm64_x(n))

    def outcome(self, ex) -> dict:
        """The guest returned (stored x0 to RESULT), or KVM exited to the VMM."""
        if ex.reason == "MMIO" and ex.is_write and ex.phys_addr == RESULT:
            return ret(ex.value)
        if ex.reason == "SYSTEM_EVENT":
            if not self.kvm.system_event_data:     # before 5.18: type and flags only
                return {"exit": "SYSTEM_EVENT", "type": ex.type, "flags": ex.flags}
            return {"exit": "SYSTEM_EVENT", "type": ex.type, "ndata": ex.ndata, "data": ex.data}
        return {"exit": ex.reason, **{k: v for k, v in ex.summary().items() if k != "reason"}}

    def event(self, type_: str, data: list[int] | None = None) -> dict:
        """The system event a kernel promises, in the kvm_run layout it writes: ndata and
        data (KVM_CAP_SYSTEM_EVENT_DATA, 5.18+), or the old `flags` in data[0]'s place."""
        if self.kvm.system_event_data:
            return system_event(type_, data)
        return {"exit": "SYSTEM_EVENT", "type": type_, "flags": (data or [0])[0]}

    def call(self, fid: int, a1: int = 0, a2: int = 0, a3: int = 0, vcpu: int = 0) -> dict:
        v = self.vcpu(vcpu)
        for n, val in enumerate((fid, a1, a2, a3)):
            v.set_reg(uapi.arm64_x(n), val)
        return self.outcome(v.run(self.run_timeout))

    def run(self, vcpu: int = 0, timeout: float | None = None):
        return self.vcpu(vcpu).run(timeout or self.run_timeout)

    def _close_kvm(self) -> None:
        if self._own_kvm:
            self.kvm.close()

    def close(self) -> None:
        self.vm.close()
        self._close_kvm()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- cases

BASE = (needs_kvm,)
SUSPEND = (needs_kvm, needs_suspend_cap)
OFF2 = (needs_kvm, needs_psci(1, 3, "SYSTEM_OFF2"))
SUITE = kselftest.Registry(requires=BASE)
CASES, case = SUITE.cases, SUITE.case


# --- baselines: what every PSCI 1.x KVM does -------------------------------

@case("baseline")
def psci_version_reports_the_version_register(t):
    """PSCI_VERSION returns KVM_REG_ARM_PSCI_VERSION, the default and a written 1.0; the
    default is at least the floor of the host's release (1.0, 1.1 from 5.18, 1.3 from
    6.13), whatever the probes made of it."""
    floor = psci_floor(t.env.release)
    with PsciGuest() as g:
        reg = g.vcpu(0).get_reg(uapi.KVM_REG_ARM_PSCI_VERSION)
        t.observed["default"] = version_str(reg)
        t.expect("default version register is PSCI 1.x", reg >> 16, 1)
        if floor is not None:
            t.expect(f"default version register at least the floor of {t.env.release}",
                     at_least(reg, floor), at_least(floor, floor))
        else:
            t.observed["floor"] = f"none: no version in release {t.env.release!r}"
        t.expect("PSCI_VERSION with the default", g.call(PSCI_VERSION), ret(reg))
    with PsciGuest(version=psci_version(1, 0)) as g:
        t.expect("PSCI_VERSION after writing 1.0", g.call(PSCI_VERSION), ret(psci_version(1, 0)))


@case("baseline")
def system_off_exits_shutdown_without_the_off2_flag(t):
    """SYSTEM_OFF: SHUTDOWN exit, ndata 1, data[0] = 0 (no PSCI_OFF2); every vCPU STOPPED;
    a VMM that runs the vCPU again makes the guest see INTERNAL_FAILURE."""
    with PsciGuest(vcpus=2, online=(0, 1)) as g:
        t.expect("SYSTEM_OFF", g.call(PSCI_SYSTEM_OFF), g.event("SHUTDOWN", [0]))
        t.expect("MP_STATE of both vCPUs", [g.vcpu(0).mp_state, g.vcpu(1).mp_state],
                 ["STOPPED", "STOPPED"])
        g.vcpu(0).set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        t.expect("guest after the VMM re-runs it", g.outcome(g.run()), ret(PSCI_INTERNAL_FAILURE))


@case("baseline")
def system_reset_exits_reset(t):
    """SYSTEM_RESET: RESET exit, ndata 1, data[0] = 0."""
    with PsciGuest() as g:
        t.expect("SYSTEM_RESET", g.call(PSCI_SYSTEM_RESET), g.event("RESET", [0]))
        t.expect("MP_STATE", g.vcpu(0).mp_state, "STOPPED")


@case("baseline", requires=(needs_kvm, needs_psci(1, 1, "SYSTEM_RESET2")))
def system_reset2_flags_the_exit(t):
    """SYSTEM_RESET2 (PSCI 1.1): warm reset gives RESET with data[0] = PSCI_RESET2;
    reserved type 1 is INVALID_PARAMETERS without an exit."""
    with PsciGuest() as g:
        t.expect("SYSTEM_RESET2 type 1 (reserved)", g.call(PSCI_SYSTEM_RESET2_64, 1),
                 ret(PSCI_INVALID_PARAMS))
        t.expect("SYSTEM_RESET2 type 0 (SYSTEM_WARM_RESET)", g.call(PSCI_SYSTEM_RESET2_64, 0),
                 g.event("RESET", [uapi.KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2]))


@case("baseline")
def cpu_on_sets_the_target_entry_and_context(t):
    """CPU_ON (upstream psci_test's race regression): once CPU_ON returned SUCCESS, the
    target's PC and x0 read by the VMM are the entry point and context id; AFFINITY_INFO
    says ON; the target runs from the entry point with x0 = context id."""
    with PsciGuest(vcpus=2, online=(0,)) as g:
        t.require("target starts powered off", g.vcpu(1).mp_state, "STOPPED")
        mpidr = g.vcpu(1).get_reg(uapi.ARM64_MPIDR_EL1) & uapi.MPIDR_HWID_BITMASK
        entry = g.entry["cpu_on_entry"]
        t.expect("CPU_ON", g.call(PSCI_CPU_ON64, mpidr, entry, ENTRY_CTX), ret(PSCI_SUCCESS))
        t.expect("target PC, x0 read right after",
                 [hex(g.vcpu(1).get_reg(uapi.ARM64_PC)), hex(g.reg(0, vcpu=1))],
                 [hex(entry), hex(ENTRY_CTX)])
        t.expect("target MP_STATE", g.vcpu(1).mp_state, "RUNNABLE")
        t.expect("AFFINITY_INFO(target, 0)", g.call(PSCI_AFFINITY_INFO64, mpidr, 0),
                 ret(AFFINITY_ON))
        ex = g.run(vcpu=1)
        t.expect("target's first store", ex.summary(),
                 {"reason": "MMIO", "phys_addr": CPU_ON_ENTERED, "is_write": True, "len": 8,
                  "value": ENTRY_CTX})


# --- SYSTEM_SUSPEND (5.19): KVM_CAP_ARM_SYSTEM_SUSPEND ---------------------

@case("system_suspend", requires=SUSPEND)
def system_suspend_features_without_the_cap(t):
    """PSCI_FEATURES(SYSTEM_SUSPEND, 32 and 64-bit) is NOT_SUPPORTED until the VMM enables
    KVM_CAP_ARM_SYSTEM_SUSPEND."""
    with PsciGuest() as g:
        for fid in (PSCI_SYSTEM_SUSPEND, PSCI_SYSTEM_SUSPEND64):
            t.expect(f"PSCI_FEATURES({fid:#x}), cap off", g.call(PSCI_FEATURES, fid),
                     ret(PSCI_NOT_SUPPORTED))


@case("system_suspend", requires=SUSPEND)
def system_suspend_features_with_the_cap(t):
    """PSCI_FEATURES(SYSTEM_SUSPEND, 32 and 64-bit) is 0 once the cap is enabled."""
    with PsciGuest(suspend_cap=True) as g:
        for fid in (PSCI_SYSTEM_SUSPEND, PSCI_SYSTEM_SUSPEND64):
            t.expect(f"PSCI_FEATURES({fid:#x}), cap on", g.call(PSCI_FEATURES, fid),
                     ret(PSCI_SUCCESS))


@case("system_suspend", requires=SUSPEND)
def system_suspend_without_the_cap_returns_not_supported(t):
    """Without the cap the call does not reach the VMM: the guest sees NOT_SUPPORTED."""
    with PsciGuest() as g:
        for fid in (PSCI_SYSTEM_SUSPEND, PSCI_SYSTEM_SUSPEND64):
            t.expect(f"SYSTEM_SUSPEND {fid:#x}, cap off",
                     g.call(fid, g.entry["resume"], ENTRY_CTX), ret(PSCI_NOT_SUPPORTED))


@case("system_suspend", requires=SUSPEND)
def system_suspend_exits_with_the_call_in_the_registers(t):
    """With the cap: SYSTEM_EVENT SUSPEND, ndata 0; KVM leaves x0..x2 as the guest set them
    (api.rst: 'the call parameters are left in-place') and the vCPU RUNNABLE."""
    with PsciGuest(suspend_cap=True) as g:
        t.expect("SYSTEM_SUSPEND64", g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                 g.event("SUSPEND"))
        t.expect("x0, x1, x2 at the exit", [hex(g.reg(n)) for n in range(3)],
                 [hex(PSCI_SYSTEM_SUSPEND64), hex(g.entry["resume"]), hex(ENTRY_CTX)])
        t.expect("MP_STATE at the exit", g.vcpu(0).mp_state, "RUNNABLE")


@case("system_suspend", requires=SUSPEND)
def system_suspend32_narrows_its_arguments(t):
    """The SMC32 id: KVM zeroes the upper halves of x1..x3 before the exit, so the VMM
    reads the 32-bit entry point and context id."""
    junk = 0xA5A5_0000_0000_0000
    with PsciGuest(suspend_cap=True) as g:
        t.expect("SYSTEM_SUSPEND (SMC32), upper bits set",
                 g.call(PSCI_SYSTEM_SUSPEND, junk | g.entry["resume"], junk | ENTRY_CTX, junk | 7),
                 g.event("SUSPEND"))
        t.expect("x0..x3 at the exit", [hex(g.reg(n)) for n in range(4)],
                 [hex(PSCI_SYSTEM_SUSPEND), hex(g.entry["resume"]), hex(ENTRY_CTX), hex(7)])


@case("system_suspend", requires=SUSPEND)
def system_suspend_denied_by_the_vmm(t):
    """A VMM that denies writes DENIED to x0 and runs on: the guest's call returns it."""
    with PsciGuest(suspend_cap=True) as g:
        t.require("SYSTEM_SUSPEND64", g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                  g.event("SUSPEND"))
        g.vcpu(0).set_reg(uapi.arm64_x(0), PSCI_DENIED)
        t.expect("guest's return value", g.outcome(g.run()), ret(PSCI_DENIED))


def _inject_later(g: PsciGuest, delay: float, stamp: dict) -> threading.Thread:
    def raise_irq():
        time.sleep(delay)
        stamp["irq_at"] = time.monotonic()
        arm64.cpu_irq(g.vm, 0, True)
    th = threading.Thread(target=raise_irq, daemon=True)
    th.start()
    return th


@case("system_suspend", requires=SUSPEND)
def system_suspend_honoured_until_an_interrupt_wakes_it(t):
    """The VMM honours: MP_STATE_SUSPENDED; KVM_RUN blocks (emulated WFI) until an
    interrupt is raised, then exits SYSTEM_EVENT WAKEUP. The state is sticky: running
    again with the interrupt pending exits WAKEUP at once (api.rst). The VMM marks the
    vCPU RUNNABLE and resumes it as PSCI 5.19.1 says: PC = entry point, x0 = context id,
    EL1h with DAIF masked."""
    delay = 0.5
    with PsciGuest(suspend_cap=True) as g:
        t.require("SYSTEM_SUSPEND64", g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                  g.event("SUSPEND"))
        entry, ctx = g.reg(1), g.reg(2)
        g.vcpu(0).set_mp_state(uapi.KVM_MP_STATE_SUSPENDED)
        # only that KVM accepted the write; what KVM does with the state follows
        t.expect("MP_STATE reads back SUSPENDED (KVM took the VMM's write)",
                 g.vcpu(0).mp_state, "SUSPENDED")
        stamp: dict = {}
        th = _inject_later(g, delay, stamp)
        ex = g.run()
        done_at = time.monotonic()
        th.join()
        t.observed["blocked_s"] = round(ex.elapsed_s, 3)
        t.expect("exit after the interrupt", g.outcome(ex), g.event("WAKEUP"))
        t.expect("KVM_RUN returned only after the interrupt was raised",
                 "irq_at" in stamp and done_at >= stamp["irq_at"], True)
        t.expect("MP_STATE after WAKEUP (sticky)", g.vcpu(0).mp_state, "SUSPENDED")
        t.expect("KVM_RUN again, still SUSPENDED, interrupt pending", g.outcome(g.run()),
                 g.event("WAKEUP"))
        arm64.cpu_irq(g.vm, 0, False)
        v = g.vcpu(0)
        v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        v.set_reg(uapi.ARM64_PC, entry)
        v.set_reg(uapi.arm64_x(0), ctx)
        v.set_reg(uapi.ARM64_PSTATE, PSTATE_EL1H_DAIF)
        ex = g.run()
        t.expect("first store at the entry point", ex.summary(),
                 {"reason": "MMIO", "phys_addr": RESUMED, "is_write": True, "len": 8,
                  "value": ENTRY_CTX})


@case("system_suspend", requires=SUSPEND)
def system_suspend_suspended_vcpu_waits_without_a_wakeup(t):
    """With no interrupt, a SUSPENDED vCPU stays in KVM_RUN (it is only interrupted here
    by the harness's 1 s bound) and is still SUSPENDED afterwards; what it waited for
    was an interrupt: raising one then ends the wait with the WAKEUP exit (a vCPU stuck
    in KVM_RUN for any other reason would not)."""
    with PsciGuest(suspend_cap=True) as g:
        t.require("SYSTEM_SUSPEND64", g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                  g.event("SUSPEND"))
        g.vcpu(0).set_mp_state(uapi.KVM_MP_STATE_SUSPENDED)
        got: dict | str
        try:
            ex = g.run(timeout=1.0)
            got = g.outcome(ex)
        except VcpuHang:
            got = "still in KVM_RUN after 1 s"
        t.expect("KVM_RUN without a wake-up event", got, "still in KVM_RUN after 1 s")
        t.expect("MP_STATE", g.vcpu(0).mp_state, "SUSPENDED")
        arm64.cpu_irq(g.vm, 0, True)
        t.expect("KVM_RUN once an interrupt is raised", g.outcome(g.run(timeout=5.0)),
                 g.event("WAKEUP"))
        arm64.cpu_irq(g.vm, 0, False)


@case("system_suspend", requires=SUSPEND)
def system_suspend_with_another_vcpu_online(t):
    """PSCI 5.19.2 says SYSTEM_SUSPEND with another core on is DENIED. KVM's documented
    behaviour differs and is what this asserts: KVM exits SUSPEND anyway ('the sole
    responsibility of userspace', api.rst) and the VMM must deny: our VMM reads the other
    vCPU's MP_STATE, finds it RUNNABLE, writes DENIED, and the guest sees DENIED."""
    with PsciGuest(suspend_cap=True, vcpus=2, online=(0, 1)) as g:
        t.expect("SYSTEM_SUSPEND64 with vCPU 1 online",
                 g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                 g.event("SUSPEND"))
        t.expect("vCPU 1 MP_STATE as the VMM sees it", g.vcpu(1).mp_state, "RUNNABLE")
        # the VMM started vCPU 1 itself, so it denies (PSCI 5.19.2), whatever it reads
        g.vcpu(0).set_reg(uapi.arm64_x(0), PSCI_DENIED)
        t.expect("guest's return value", g.outcome(g.run()), ret(PSCI_DENIED))
    with PsciGuest(suspend_cap=True, vcpus=2, online=(0,)) as g:
        t.expect("SYSTEM_SUSPEND64 with vCPU 1 off",
                 g.call(PSCI_SYSTEM_SUSPEND64, g.entry["resume"], ENTRY_CTX),
                 g.event("SUSPEND"))
        t.expect("vCPU 1 MP_STATE as the VMM sees it", g.vcpu(1).mp_state, "STOPPED")


# --- SYSTEM_OFF2 (6.13): PSCI 1.3 -------------------------------------------

@case("system_off2", requires=OFF2)
def psci_version_register_default_and_writes(t):
    """KVM_REG_ARM_PSCI_VERSION defaults to the newest version KVM implements, at least
    the floor of the host's release (1.3 from 6.13): every version from 0.2 to the
    default, and at least to the floor, is accepted (and read back), the next minor
    above the default is EINVAL, and 0.1 is EINVAL for a vCPU with the PSCI_0_2
    feature."""
    default = t.env.psci_default
    floor = psci_floor(t.env.release) or default
    t.observed["default"] = version_str(default)
    t.expect(f"default version register at least the floor of {t.env.release}",
             at_least(default, floor), at_least(floor, floor))
    top = max(default, floor)
    tried = [psci_version(0, 2)] + [psci_version(1, m) for m in range((top & 0xFFFF) + 2)]
    tried.append(psci_version(0, 1))
    got, want = {}, {}
    for v in tried:
        with PsciGuest() as g:
            want[version_str(v)] = "ok" if psci_version(0, 2) <= v <= top else "EINVAL"
            try:
                g.vcpu(0).set_reg(uapi.KVM_REG_ARM_PSCI_VERSION, v)
                back = g.vcpu(0).get_reg(uapi.KVM_REG_ARM_PSCI_VERSION)
                got[version_str(v)] = "ok" if back == v else f"read back {version_str(back)}"
            except OSError as e:
                got[version_str(v)] = errno.errorcode.get(e.errno or 0, str(e.errno))
    t.expect("SET_ONE_REG(PSCI_VERSION) per version", got, want)


@case("system_off2", requires=OFF2)
def system_off2_features_report_hibernate_off(t):
    """PSCI_FEATURES(SYSTEM_OFF2, 32 and 64-bit) returns the supported-types bitmask:
    HIBERNATE_OFF (bit 0)."""
    with PsciGuest() as g:
        for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
            t.expect(f"PSCI_FEATURES({fid:#x})", g.call(PSCI_FEATURES, fid),
                     ret(PSCI_OFF2_TYPE_HIBERNATE_OFF))


def _off2_exit(t, fid: int, typ: int, cookie: int = 0, label: str = "") -> None:
    with PsciGuest(vcpus=2, online=(0, 1)) as g:
        t.expect(f"SYSTEM_OFF2 {fid:#x} type {typ:#x} cookie {cookie:#x}{label}",
                 g.call(fid, typ, cookie),
                 g.event("SHUTDOWN", [uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2]))
        t.expect(f"MP_STATE of both vCPUs after {fid:#x}",
                 [g.vcpu(0).mp_state, g.vcpu(1).mp_state], ["STOPPED", "STOPPED"])


@case("system_off2", requires=OFF2)
def system_off2_hibernate_off_exits_shutdown_with_the_off2_flag(t):
    """SYSTEM_OFF2(HIBERNATE_OFF, 0): SHUTDOWN exit with KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2
    in data[0] (ndata 1), every vCPU STOPPED; both calling conventions."""
    for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
        _off2_exit(t, fid, PSCI_OFF2_TYPE_HIBERNATE_OFF)


@case("system_off2", requires=OFF2)
def system_off2_type_zero_is_hibernate_off(t):
    """Type 0 is accepted as an alias of HIBERNATE_OFF (PSCI 1.3 F.b; kernel comment)."""
    for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
        _off2_exit(t, fid, 0)


@case("system_off2", requires=OFF2)
def system_off2_invalid_type_is_rejected(t):
    """Types other than 0/HIBERNATE_OFF (2, and the vendor range 0x80000000) return
    INVALID_PARAMETERS to the guest without an exit."""
    with PsciGuest() as g:
        for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
            for typ in (2, 0x8000_0000):
                t.expect(f"SYSTEM_OFF2 {fid:#x} type {typ:#x}", g.call(fid, typ, 0),
                         ret(PSCI_INVALID_PARAMS))


@case("system_off2", requires=OFF2)
def system_off2_nonzero_cookie_is_rejected(t):
    """A non-zero cookie returns INVALID_PARAMETERS without an exit."""
    with PsciGuest() as g:
        for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
            for typ in (0, PSCI_OFF2_TYPE_HIBERNATE_OFF):
                t.expect(f"SYSTEM_OFF2 {fid:#x} type {typ} cookie 1", g.call(fid, typ, 1),
                         ret(PSCI_INVALID_PARAMS))


@case("system_off2", requires=OFF2)
def system_off2_rerun_after_the_exit_sees_internal_failure(t):
    """A VMM that makes the vCPU RUNNABLE again after the OFF2 exit: the guest's call
    returns INTERNAL_FAILURE (preloaded by KVM), as upstream psci_test relies on."""
    with PsciGuest() as g:
        t.require("SYSTEM_OFF2_64(HIBERNATE_OFF)",
                  g.call(PSCI_SYSTEM_OFF2_64, PSCI_OFF2_TYPE_HIBERNATE_OFF),
                  g.event("SHUTDOWN", [uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2]))
        g.vcpu(0).set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        t.expect("guest's return value", g.outcome(g.run()), ret(PSCI_INTERNAL_FAILURE))
        t.expect("a second SYSTEM_OFF2 exits again",
                 g.call(PSCI_SYSTEM_OFF2_64, 0),
                 g.event("SHUTDOWN", [uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2]))


@case("system_off2", requires=OFF2)
def system_off2_hidden_below_psci_1_3(t):
    """With the version register lowered to 1.2 the function disappears: PSCI_VERSION says
    1.2, PSCI_FEATURES is NOT_SUPPORTED, and the call returns NOT_SUPPORTED (no exit)."""
    with PsciGuest(version=psci_version(1, 2)) as g:
        t.expect("PSCI_VERSION", g.call(PSCI_VERSION), ret(psci_version(1, 2)))
        for fid in (PSCI_SYSTEM_OFF2, PSCI_SYSTEM_OFF2_64):
            t.expect(f"PSCI_FEATURES({fid:#x}) at 1.2", g.call(PSCI_FEATURES, fid),
                     ret(PSCI_NOT_SUPPORTED))
            t.expect(f"SYSTEM_OFF2 {fid:#x} at 1.2", g.call(fid, PSCI_OFF2_TYPE_HIBERNATE_OFF),
                     ret(PSCI_NOT_SUPPORTED))


@case("system_off2", requires=OFF2)
def system_off2_32bit_call_narrows_its_arguments(t):
    """SMC32 SYSTEM_OFF2 ignores the upper halves of x1/x2 (KVM narrows them), so a cookie
    of 1<<32 is 0 and the call exits; the SMC64 id with the same cookie is rejected. The
    type is read as 32 bits in both conventions (it is uint32 in DEN0022F.b)."""
    _off2_exit(t, PSCI_SYSTEM_OFF2, PSCI_OFF2_TYPE_HIBERNATE_OFF, 1 << 32, " (narrowed to 0)")
    with PsciGuest() as g:
        t.expect("SYSTEM_OFF2_64 type 1 cookie 1<<32",
                 g.call(PSCI_SYSTEM_OFF2_64, PSCI_OFF2_TYPE_HIBERNATE_OFF, 1 << 32),
                 ret(PSCI_INVALID_PARAMS))
    _off2_exit(t, PSCI_SYSTEM_OFF2, 0xFFFF_FFFF_0000_0001, 0, " (type narrowed to 1)")
    _off2_exit(t, PSCI_SYSTEM_OFF2_64, 0xFFFF_FFFF_0000_0001, 0, " (type read as u32)")


# ---------------------------------------------------------------- harness self-test

def spinning_guest_is_bounded(t):
    """Not a PSCI case: a guest stuck in `b .` must come back as a FAIL carrying the
    vCPU state once the KVM_RUN bound expires, never as a hang of the suite."""
    with PsciGuest(run_timeout=1.0) as g:
        g.vcpu(0).set_reg(uapi.ARM64_PC, g.entry["spin"])
        t.observed["spin"] = hex(g.entry["spin"])
        g.run()
        t.expect("KVM_RUN of a spinning guest returned", True, False)


SELFTESTS = [kselftest.Case("spinning_guest_is_bounded", "harness", spinning_guest_is_bounded,
                            (spinning_guest_is_bounded.__doc__ or "").strip(), BASE)]


# ---------------------------------------------------------------- running

def run(select: str = "", selftest: bool = False) -> dict:
    env = probe()
    results = [kselftest.run_case(c, env) for c in (SELFTESTS if selftest else CASES)
               if select in c.name]
    return {"env": {**asdict(env), "psci_default": version_str(env.psci_default)
                    if env.psci_default is not None else None},
            "results": results}


def main(argv: list[str]) -> int:
    return kselftest.main(
        argv, "python3 -m harness.guest.psci", CASES, lambda a: run(a.select),
        lambda out, a: (f"guestpm PSCI uAPI on {out['env']['release']} "
                        f"({out['env']['machine']}), PSCI default {out['env']['psci_default']}, "
                        f"KVM_CAP_ARM_SYSTEM_SUSPEND={out['env']['suspend_cap']}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
