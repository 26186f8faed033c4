"""The arm64 backend's PSCI policy on SYSTEM_EVENT exits, with a fake core and vCPUs
(no KVM): what the VMM writes back and logs for each policy."""

import ctypes
import fcntl
import threading
from types import SimpleNamespace

import pytest

from harness.guest.kvm import arm64, uapi
from harness.guest.kvm.vm import Vcpu
from harness.guest.vmm.arm64 import board, psci_policy
from harness.guest.vmm.core import ExitLog
from harness.guest.vmm.policy import FAULTS, Policy, VmmError

ENTRY, CONTEXT = board.RAM + 0x1000, 0xC0DE
VCPU_INIT = arm64.vcpu_init          # the real one, for the tests of the ioctl layer


class _Vcpu:
    def __init__(self, vcpu_id, regs=None):
        self.id, self.regs, self.mp = vcpu_id, dict(regs or {}), uapi.KVM_MP_STATE_RUNNABLE

    def get_reg(self, reg):
        return self.regs.get(reg, 0)

    def set_reg(self, reg, value):
        self.regs[reg] = value

    @property
    def mp_state(self):
        return uapi.MP_STATE_NAMES[self.mp]

    def set_mp_state(self, state):
        self.mp = state


class _Core:
    """The core's side the policy uses; `others`: the other vCPUs, whose MP_STATE the
    snapshot reads as the real core does."""
    def __init__(self, system_event_data=True, others=()):
        self.log = ExitLog(None, 0.0)
        self.kvm = SimpleNamespace(system_event_data=system_event_data)
        self.done = threading.Event()
        self.finished = None
        self.others = list(others)

    def snapshot(self, caller):
        return [{"vcpu": v.id, "mp_state": v.mp_state}
                for v in sorted([caller, *self.others], key=lambda v: v.id)]

    def finish(self, outcome, detail="", **extra):
        self.finished = (outcome, detail, extra)


def _event(typ, data=(0,)):
    """A decoded SYSTEM_EVENT exit (kvm.vm.decode_run's fields)."""
    return SimpleNamespace(type=typ, ndata=len(data), data=list(data), flags=data[0])


def _psci(core, on_suspend):
    """`on_suspend` as the VMM's --suspend takes it: POLICY[,POLICY...]."""
    return psci_policy.Psci(core, tuple(on_suspend.split(",")), range(board.RAM, board.RAM + (256 << 20)),
                            {0: (uapi.KVM_ARM_VCPU_PSCI_0_2,)}, rtc=None)


def _suspend_call(entry=ENTRY):
    return _Vcpu(0, {uapi.ARM64_PC: board.RAM, uapi.arm64_x(1): entry,
                     uapi.arm64_x(2): CONTEXT})


@pytest.fixture(autouse=True)
def _no_kvm_init(monkeypatch):
    monkeypatch.setattr(arm64, "vcpu_init", lambda v, *features: v.regs.clear())


def test_honour_suspends_in_kvm_and_the_wakeup_restarts_at_the_entry_point():
    core = _Core()
    p, v = _psci(core, "honour"), _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    assert v.mp_state == "SUSPENDED" and p.resume_at == {0: (ENTRY, CONTEXT)}
    p.system_event(v, _event("WAKEUP"))
    assert v.mp_state == "RUNNABLE"
    assert (v.regs[uapi.ARM64_PC], v.regs[uapi.arm64_x(0)]) == (ENTRY, CONTEXT)
    assert [r["event"] for r in core.log.records] == \
        ["system-event", "suspend-in-kvm", "system-event", "restart"]
    assert core.finished is None


@pytest.mark.parametrize("policy, entry, x0", [
    ("deny", ENTRY, arm64.PSCI_DENIED),
    ("honour", board.RAM - 4, arm64.PSCI_INVALID_ADDRESS),   # an entry point outside RAM
])
def test_a_refused_suspend_returns_the_psci_error_in_x0(policy, entry, x0):
    core = _Core()
    v = _suspend_call(entry)
    _psci(core, policy).system_event(v, _event("SUSPEND"))
    assert arm64.s64(v.regs[uapi.arm64_x(0)]) == x0
    assert v.mp_state == "RUNNABLE" and core.log.records[-1]["event"] == "suspend-refused"


def test_each_suspend_call_takes_the_next_policy_and_the_last_one_stays():
    core = _Core()
    p, v = _psci(core, "deny,honour"), _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    assert arm64.s64(v.regs[uapi.arm64_x(0)]) == arm64.PSCI_DENIED
    p.system_event(v, _event("SUSPEND"))
    assert v.mp_state == "SUSPENDED"
    p.system_event(v, _event("WAKEUP"))
    v.regs.update(_suspend_call().regs)                 # the guest calls again
    p.system_event(v, _event("SUSPEND"))                # a third call: honour again
    assert v.mp_state == "SUSPENDED"
    calls = [(r["event"], r["call"]) for r in core.log.records if "call" in r]
    assert calls == [("suspend-refused", 1), ("suspend-in-kvm", 2), ("suspend-in-kvm", 3)]


@pytest.mark.parametrize("on_suspend", [(), ("honour", "sleep")])
def test_a_policy_list_names_known_policies(on_suspend):
    with pytest.raises(VmmError, match="honour, hold, deny"):
        Policy(on_suspend=on_suspend)


@pytest.mark.parametrize("data, event_data, off2", [
    ((uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2,), True, True),
    ((0,), True, False),
    ((uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2,), False, True),    # pre-5.18 `flags`
])
def test_shutdown_ends_the_run_reading_the_off2_flag(data, event_data, off2):
    core = _Core(system_event_data=event_data)
    _psci(core, "honour").system_event(_Vcpu(0), _event("SHUTDOWN", data))
    assert core.finished == ("shutdown", "hibernated (PSCI_OFF2)" if off2 else "powered off",
                             {"off2": off2})


def _stopped(vcpu_id):
    v = _Vcpu(vcpu_id)
    v.set_mp_state(uapi.KVM_MP_STATE_STOPPED)
    return v


@pytest.mark.parametrize("policy", ["honour", "hold"])
def test_suspend_while_another_vcpu_is_on_is_denied_whatever_the_policy(policy):
    # DEN0022D.b 5.19.2: SYSTEM_SUSPEND returns DENIED unless every other core is OFF
    core = _Core(others=[_stopped(1), _Vcpu(2)])            # vCPU 2 RUNNABLE: on
    p, v = _psci(core, policy), _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    assert arm64.s64(v.regs[uapi.arm64_x(0)]) == arm64.PSCI_DENIED
    assert v.mp_state == "RUNNABLE" and p.resume_at == {}
    refused = core.log.records[-1]
    assert refused["event"] == "suspend-refused" and refused["x0"] == "DENIED"
    assert "{2: 'RUNNABLE'}" in refused["why"]
    assert core.finished is None and not core.log.records[-1].get("restart")


def test_suspend_with_every_other_vcpu_off_is_honoured():
    core = _Core(others=[_stopped(1), _stopped(2)])
    p, v = _psci(core, "honour"), _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    assert v.mp_state == "SUSPENDED" and p.resume_at == {0: (ENTRY, CONTEXT)}
    assert uapi.arm64_x(0) not in v.regs or v.regs[uapi.arm64_x(0)] == 0
    assert core.log.records[-1]["event"] == "suspend-in-kvm"


# ------------------------------------------------------------------ the ioctl layer

class _FakeKvm:
    """/dev/kvm's side of the ioctls a restart makes, for one vCPU: KVM_ARM_VCPU_INIT
    resets it, ONE_REG and MP_STATE read and write its state.  `loses_pc`: a KVM that
    accepts the PC write and keeps the reset value (the defect a read-back must show)."""
    def __init__(self, loses_pc=False):
        self.loses_pc, self.regs, self.mp = loses_pc, {}, uapi.KVM_MP_STATE_RUNNABLE

    def ioctl(self, fd, request, arg=0, *rest):
        if request == uapi.KVM_ARM_PREFERRED_TARGET:
            uapi.VCPU_INIT.pack_into(arg, 0, 5, *[0] * 7)
        elif request == uapi.KVM_ARM_VCPU_INIT:
            self.regs, self.mp = {uapi.ARM64_PC: 0}, uapi.KVM_MP_STATE_RUNNABLE
        elif request in (uapi.KVM_GET_ONE_REG, uapi.KVM_SET_ONE_REG):
            reg, addr = uapi.ONE_REG.unpack(arg)
            cell = ctypes.c_uint64.from_address(addr)
            if request == uapi.KVM_GET_ONE_REG:
                cell.value = self.regs.get(reg, 0)
            elif not (self.loses_pc and reg == uapi.ARM64_PC):
                self.regs[reg] = cell.value
        elif request == uapi.KVM_SET_MP_STATE:
            (self.mp,) = uapi.MP_STATE.unpack(arg)
        elif request == uapi.KVM_GET_MP_STATE:
            uapi.MP_STATE.pack_into(arg, 0, self.mp)
        else:
            raise AssertionError(f"unexpected ioctl {request:#x}")
        return 0


def _kvm_vcpu(kvm, monkeypatch, regs):
    """A kvm.vm.Vcpu (no mmap: a restart never touches kvm_run) over the fake KVM."""
    monkeypatch.setattr(arm64, "vcpu_init", VCPU_INIT)
    monkeypatch.setattr(fcntl, "ioctl", kvm.ioctl)
    v = Vcpu.__new__(Vcpu)
    v.vm, v.id, v.fd, v._reg = SimpleNamespace(fd=100), 0, 101, ctypes.c_uint64(0)
    for reg, value in regs.items():
        v.set_reg(reg, value)
    return v


@pytest.mark.parametrize("loses_pc", [False, True])
def test_a_restart_reports_pc_and_x0_read_back_from_kvm(monkeypatch, loses_pc):
    kvm = _FakeKvm(loses_pc=loses_pc)
    v = _kvm_vcpu(kvm, monkeypatch, {uapi.ARM64_PC: board.RAM, uapi.arm64_x(1): ENTRY,
                                     uapi.arm64_x(2): CONTEXT})
    core = _Core()
    p = _psci(core, "honour")
    p.system_event(v, _event("SUSPEND"))
    assert kvm.mp == uapi.KVM_MP_STATE_SUSPENDED
    p.system_event(v, _event("WAKEUP"))
    restart = core.log.records[-1]
    assert restart["event"] == "restart" and restart["wrote"] == {"pc": ENTRY, "x0": CONTEXT}
    # what KVM holds, as KVM_GET_ONE_REG returns it: the entry point, or the reset value
    # of a KVM that lost the write
    assert (restart["pc"], restart["x0"], restart["mp_state"]) == \
        (0 if loses_pc else ENTRY, CONTEXT, "RUNNABLE")


# ------------------------------------------------------------------ the self-tests' faults

def _faulty(fault, on_suspend="honour", others=()):
    core = _Core(others=others)
    rtc = SimpleNamespace(ris=False, fired=threading.Event())
    return core, psci_policy.Psci(core, (on_suspend,), range(board.RAM, board.RAM + (256 << 20)),
                                  {0: (uapi.KVM_ARM_VCPU_PSCI_0_2,)}, rtc, fault=fault)


@pytest.mark.parametrize("on_suspend", ["honour", "hold"])
def test_wake_at_once_restarts_without_waiting(on_suspend):
    core, p = _faulty("wake-at-once", on_suspend)
    v = _suspend_call()
    p.system_event(v, _event("SUSPEND"))            # hold would block on the alarm
    assert v.mp_state == "RUNNABLE" and p.resume_at == {}
    assert [r["event"] for r in core.log.records][-1] == "restart"


def test_wrong_pc_restarts_one_instruction_past_the_entry_point():
    core, p = _faulty("wrong-pc")
    v = _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    p.system_event(v, _event("WAKEUP"))
    assert core.log.records[-1]["pc"] == ENTRY + 4 == v.regs[uapi.ARM64_PC]


def test_ignore_off2_reads_a_flagged_shutdown_as_a_power_off_and_logs_the_flag():
    core, p = _faulty("ignore-off2")
    p.system_event(_Vcpu(0), _event("SHUTDOWN", (uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2,)))
    assert core.finished == ("shutdown", "powered off", {"off2": False})
    assert core.log.records[0]["data"] == [uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2]


def test_stopped_lie_reports_a_vcpu_that_is_on_as_stopped_and_honours():
    core, p = _faulty("stopped-lie", others=[_Vcpu(1)])     # vCPU 1 RUNNABLE: on
    v = _suspend_call()
    p.system_event(v, _event("SUSPEND"))
    assert core.log.records[0]["vcpus"] == [{"vcpu": 0, "mp_state": "RUNNABLE"},
                                            {"vcpu": 1, "mp_state": "STOPPED"}]
    assert v.mp_state == "SUSPENDED"


def test_a_fault_is_named_or_refused():
    assert Policy(fault="wrong-pc").fault in FAULTS
    with pytest.raises(VmmError, match="one of wake-at-once"):
        Policy(fault="typo")
    with pytest.raises(VmmError, match="second vCPU"):
        Policy(vcpus=1, vcpu_left_on=True)
