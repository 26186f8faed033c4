"""The VMM's side of PSCI: what it does with the SYSTEM_EVENT exits KVM hands it.

SHUTDOWN (and its SYSTEM_OFF2 flag, which no public VMM reads), RESET and CRASH end
the run.  SYSTEM_SUSPEND is "the sole responsibility of userspace" (api.rst) once
KVM_CAP_ARM_SYSTEM_SUSPEND is on: the policy honours it in KVM (MP_STATE_SUSPENDED,
KVM waits for an interrupt and exits WAKEUP), holds it in the VMM until the RTC alarm,
or denies it; a policy per call, so that one boot can be denied, held and honoured in
turn (each logged with its `call`, from 1).  Whatever the policy, a call made while another vCPU is not OFF is
DENIED (DEN0022D.b 5.19.2: the caller must have turned every other core off).  Each
event is logged with the caller's pc and x0..x3 and every vCPU's MP_STATE.

A self-test's fault (policy.FAULTS) breaks one of these promises on purpose."""

from __future__ import annotations

from ...kvm import arm64, uapi


def _u64(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


class Psci:
    def __init__(self, core, on_suspend: tuple[str, ...], ram: range,
                 features: dict[int, tuple[int, ...]], rtc, fault: str = ""):
        self.core, self.on_suspend, self.ram, self.features, self.rtc, self.fault = \
            core, on_suspend, ram, features, rtc, fault
        self.resume_at: dict[int, tuple[int, int]] = {}
        self.calls = 0                  # SYSTEM_SUSPEND calls so far

    def policy(self) -> str:
        """The policy of the next SYSTEM_SUSPEND call (each call takes one)."""
        self.calls += 1
        return self.on_suspend[min(self.calls, len(self.on_suspend)) - 1]

    @staticmethod
    def regs(v) -> dict:
        return {"pc": v.get_reg(uapi.ARM64_PC),
                **{f"x{n}": v.get_reg(uapi.arm64_x(n)) for n in range(4)}}

    def restart(self, v, entry: int, context: int, why: str) -> None:
        """The state a CPU_ON target gets (DEN0022D.b 5.19.1, 6.4.3): reset by
        KVM_ARM_VCPU_INIT, MMU off, EL1h, PC = entry point, x0 = context id.  The log
        has what KVM holds afterwards (KVM_GET_ONE_REG, KVM_GET_MP_STATE), not what the
        VMM meant to write: a judge compares that with the call's x1 and x2."""
        arm64.vcpu_init(v, *self.features[v.id])
        v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        if self.fault == "wrong-pc":
            entry += 4
        v.set_reg(uapi.ARM64_PC, entry)
        v.set_reg(uapi.arm64_x(0), context)
        self.core.log.add("restart", vcpu=v.id, why=why, pc=v.get_reg(uapi.ARM64_PC),
                          x0=v.get_reg(uapi.arm64_x(0)), mp_state=v.mp_state,
                          wrote={"pc": entry, "x0": context})

    def system_event(self, v, ex) -> None:
        core = self.core
        regs = self.regs(v)
        states = core.snapshot(v)
        if self.fault == "stopped-lie":
            states = [s if s["vcpu"] == v.id else {**s, "mp_state": "STOPPED"} for s in states]
        data = ex.data if core.kvm.system_event_data else [ex.flags]
        core.log.add("system-event", vcpu=v.id, type=ex.type, ndata=ex.ndata, data=data,
                     **{k: hex(val) for k, val in regs.items()}, vcpus=states)
        if ex.type == "SHUTDOWN":
            flag = bool(data and data[0] & uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2) \
                and self.fault != "ignore-off2"
            core.finish("shutdown", "hibernated (PSCI_OFF2)" if flag else "powered off",
                        off2=flag)
        elif ex.type in ("RESET", "CRASH"):
            core.finish(ex.type.lower(), f"vCPU {v.id}")
        elif ex.type == "SUSPEND":
            self.suspend(v, regs, states)
        elif ex.type == "WAKEUP":
            v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
            entry, context = self.resume_at.pop(v.id)
            self.restart(v, entry, context, "wakeup exit")
        else:
            core.finish("error", f"vCPU {v.id}: system event {ex.type}")

    def suspend(self, v, regs: dict, states: list[dict]) -> None:
        log = self.core.log
        policy, call = self.policy(), self.calls
        entry, context = regs["x1"], regs["x2"]
        on = {s["vcpu"]: s["mp_state"] for s in states
              if s["vcpu"] != v.id and s["mp_state"] != "STOPPED"}
        if entry not in self.ram:
            v.set_reg(uapi.arm64_x(0), _u64(arm64.PSCI_INVALID_ADDRESS))
            log.add("suspend-refused", vcpu=v.id, call=call, x0="INVALID_ADDRESS",
                    entry=hex(entry))
        elif on:
            v.set_reg(uapi.arm64_x(0), _u64(arm64.PSCI_DENIED))
            log.add("suspend-refused", vcpu=v.id, call=call, x0="DENIED", entry=hex(entry),
                    why=f"vCPUs not OFF: {on}")
        elif policy == "deny":
            v.set_reg(uapi.arm64_x(0), _u64(arm64.PSCI_DENIED))
            log.add("suspend-refused", vcpu=v.id, call=call, x0="DENIED", entry=hex(entry))
        elif self.fault == "wake-at-once" and policy == "honour":
            self.restart(v, entry, context, "at once")
        elif policy == "honour":
            self.resume_at[v.id] = (entry, context)
            v.set_mp_state(uapi.KVM_MP_STATE_SUSPENDED)
            log.add("suspend-in-kvm", vcpu=v.id, call=call, entry=hex(entry),
                    context=hex(context), mp_state=v.mp_state)
        else:
            log.add("suspend-held", vcpu=v.id, call=call, entry=hex(entry),
                    context=hex(context))
            if self.fault == "wake-at-once":
                log.add("vmm-wake", vcpu=v.id, by="nothing (fault wake-at-once)")
                self.restart(v, entry, context, "vmm wake")
                return
            if not self.rtc.ris:        # an alarm already pending wakes at once
                self.rtc.fired.clear()
            while not self.rtc.fired.wait(0.5):
                if self.core.done.is_set():
                    return
            log.add("vmm-wake", vcpu=v.id, by="pl031 alarm")
            self.restart(v, entry, context, "vmm wake")
