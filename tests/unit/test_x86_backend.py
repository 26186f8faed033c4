"""The reference VMM's x86_64 backend (harness/guest/vmm/x86_64/backend.py) driven by the
real core loop with a fake VM and a fake vCPU whose KVM_RUN returns scripted exits
(vmm_x86_stub.FakeVcpu): what is in guest memory before the first instruction, and
how each way a run ends reaches the core."""

import struct
import subprocess
import sys
import time

import pytest
import vmm_x86_stub
from test_x86_boot import bzimage

from harness.guest.kvm.vm import Exit
from harness.guest.vmm.policy import Policy, VmmError
from harness.guest.vmm.x86_64 import acpi, boot, pm
from harness.guest.vmm.x86_64 import backend as xb

DSDT = acpi.table(b"DSDT", 2, b"\x10\x05\\_SB_")
INITRD = b"07070100" * 64
S5 = struct.pack("<H", acpi.SLP_TYP_S5 << 10 | pm.SLP_EN)


class Halt:
    """A script step: the vCPU halts until `woken()` (a VMM kick meanwhile brings it
    out of KVM_RUN with nothing to do, as KVM's would)."""

    def __init__(self, woken):
        self.woken = woken


class HookVcpu(vmm_x86_stub.FakeVcpu):
    """A scripted vCPU whose script may also hold calls (the VMM acting between two
    exits), Halt steps and ready-made exits; HALTED while it halts or has nothing left."""

    @property
    def mp_state(self):
        return "RUNNABLE" if self.script and not isinstance(self.script[0], Halt) \
            else "HALTED"

    def run_in_thread(self):
        if self.script and isinstance(self.script[0], Halt):
            if not self.script[0].woken():
                time.sleep(0.01)
                return None
            self.script.pop(0)
        while self.script and callable(self.script[0]):
            self.script.pop(0)()
        if self.script and isinstance(self.script[0], Exit):
            return self.script.pop(0)
        return super().run_in_thread()


class FakeVm:
    def __init__(self, script):
        self.script, self.vcpus, self.irqs, self.mem = script, [], [], None

    def add_memory(self, slot, gpa, size):
        assert (slot, gpa) == (0, 0)
        self.mem = bytearray(size)
        return self.mem

    def create_vcpu(self, n):
        v = HookVcpu(n, self.script if n == 0 else [])
        self.vcpus.append(v)
        return v

    def irq_line(self, irq, level):
        self.irqs.append((irq, level))


@pytest.fixture
def kvm_calls(monkeypatch):
    """The x86 ioctls the backend makes, recorded instead of made."""
    calls = []
    for name in ("set_tss_addr", "create_irqchip", "long_mode", "set_regs"):
        monkeypatch.setattr(xb.x86, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    monkeypatch.setattr(xb.x86, "supported_cpuid", lambda kvm: b"cpuid")
    monkeypatch.setattr(xb.x86, "cpuid_for_vcpu", lambda c, apic, hide=0: f"{c.decode()}/{apic}")
    monkeypatch.setattr(xb.x86, "set_cpuid", lambda v, c: calls.append(("set_cpuid", v.id, c)))
    monkeypatch.setattr(xb.x86, "state", lambda v: {"vcpu": v.id, "rip": "0x0"})
    return calls


def run(script, dsdt=DSDT, vcpus=2, hooks=(), **kw):
    core = xb.make(bzimage(), INITRD, xb.APPEND, Policy(vcpus=vcpus, ram_mib=64), dsdt=dsdt,
                   **kw)
    fake = FakeVm(script)

    def open_vm():
        core.vm = fake
        return fake
    core.open_vm = open_vm
    core.setup()
    for hook in hooks:
        hook(core)
    result = core.run(timeout=10, silent_s=10)
    core.close()
    return core, fake, result


def test_acpi_boot_memory_vcpus_and_an_s5_power_off(kvm_calls):
    script = [("out", 0x3F8, 1, b"o"), ("out", 0x3F8, 1, b"k\n"),
              ("out", 0x602, 2, struct.pack("<H", pm.PWRBTN_STS)),       # PWRBTN_EN
              lambda: core_box[0].backend.pm.raise_power_button(),
              ("in", 0x600, 2, 1),
              ("out", 0x600, 2, struct.pack("<H", pm.PWRBTN_STS)),       # acknowledge
              ("out", 0x604, 2, S5)]
    core_box = []
    core, vm, r = run(script, hooks=[core_box.append])
    assert (r.outcome, r.detail) == ("shutdown", "ACPI S5: SLP_TYP 5 and SLP_EN in PM1a_CNT")
    assert bytes(core.console) == b"ok\n"
    assert vm.irqs == [(9, True), (9, False)]                # the SCI, raised and cleared
    assert vm.vcpus[0].ins == [struct.pack("<H", pm.PWRBTN_STS)]
    assert [e["event"] for e in r.exits if e["event"] not in ("start", "end")] == \
        ["setup", "console-first-byte", "raise", "sleep-request", "finish"]
    assert core.bus.counts["pio"] == {"com1": 2, "acpi-pm": 4}
    # what the kernel finds in memory
    mem = vm.mem
    img = boot.parse(bzimage())
    assert mem[0xE0000:0xE0008] == b"RSD PTR "
    zp = bytes(mem[boot.ZERO_PAGE:boot.ZERO_PAGE + 4096])
    assert struct.unpack_from("<Q", zp, boot.ACPI_RSDP_ADDR)[0] == 0xE0000
    assert zp[boot.HEADER_MAGIC:boot.HEADER_MAGIC + 4] == b"HdrS"
    initrd_at, size = struct.unpack_from("<II", zp, boot.RAMDISK_IMAGE)
    assert (bytes(mem[initrd_at:initrd_at + size]), size) == (INITRD, len(INITRD))
    cmdline = bytes(mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + 300]).split(b"\0")[0].decode()
    assert cmdline == xb.APPEND and "acpi=off" not in cmdline
    assert bytes(mem[boot.KERNEL_ADDR:boot.KERNEL_ADDR + len(img.kernel)]) == img.kernel
    assert mem[boot.GDT_ADDR:boot.GDT_ADDR + 32] == boot.gdt()
    for addr, page in boot.page_tables().items():
        assert mem[addr:addr + 4096] == page
    madt = next(b for b in acpi.build(2, DSDT).blobs.values() if b[:4] == b"APIC")
    assert madt in mem[0xE0000:0x100000]
    # the vCPUs: each its APIC ID in CPUID, only the BSP put in long mode at the entry
    names = [c[0] for c in kvm_calls]
    assert names[:2] == ["set_tss_addr", "create_irqchip"]
    assert [c[1:] for c in kvm_calls if c[0] == "set_cpuid"] == [(0, "cpuid/0"), (1, "cpuid/1")]
    assert [c[1][0].id for c in kvm_calls if c[0] in ("long_mode", "set_regs")] == [0, 0]
    regs = next(c[2] for c in kvm_calls if c[0] == "set_regs")
    assert regs == {"rip": img.entry64, "rsi": boot.ZERO_PAGE, "rflags": 2}


def test_the_power_button_on_a_timer_raises_the_sci_the_guest_enabled(kvm_calls):
    fake = []

    def until_the_sci():             # the vCPU idles until the VMM's timer has fired
        deadline = time.monotonic() + 5
        while not fake[0].irqs and time.monotonic() < deadline:
            time.sleep(0.01)
    script = [("out", 0x602, 2, struct.pack("<H", pm.PWRBTN_STS)), until_the_sci,
              ("in", 0x600, 4, 1), ("out", 0x604, 2, S5)]
    _core, vm, r = run(script, hooks=[lambda c: fake.append(c.vm)], power_button_s=0.2)
    assert r.outcome == "shutdown" and vm.irqs == [(9, True)]
    assert vm.vcpus[0].ins == [struct.pack("<I", pm.PWRBTN_STS << 16 | pm.PWRBTN_STS)]
    raised = next(e for e in r.exits if e["event"] == "raise")
    assert raised["what"] == "power-button" and raised["sci"] and raised["t"] >= 0.2


def lps0(fn):
    return ("out", acpi.LPS0_PORT, 1, bytes([fn]))


def test_s2idle_the_lps0_calls_the_idle_check_then_the_wake_gpe(kvm_calls):
    """The guest's LPS0 entry calls, each an exit logged with its vCPU; the wake
    (wake_s after call 5) reads every vCPU's MP_STATE first, then sets GPE 0, whose
    SCI the guest enabled for wake; then the exit calls, HYPE0001's MMIO store, S5."""
    fake = []
    gpe_en = acpi.GPE0_BLK + acpi.GPE0_BLK_LEN // 2
    until_the_sci = Halt(lambda: bool(fake[0].irqs))
    vpmc = Exit(code=6, reason="MMIO", phys_addr=acpi.VPMC_ADDR, is_write=True, len=4,
                value=3)
    script = [("out", gpe_en, 1, b"\x01"), lps0(3), lps0(7), vpmc, lps0(5), until_the_sci,
              lps0(6), lps0(8), lps0(4), ("out", 0x604, 2, S5)]
    core, vm, r = run(script, hooks=[lambda c: fake.append(c.vm)], s2idle_wake_s=0.2)
    assert r.outcome == "shutdown" and vm.irqs == [(9, True)]
    ev = [e for e in r.exits if e["event"] in ("lps0", "vpmc", "idle-check", "raise")]
    assert [(e["event"], e.get("fn")) for e in ev] == [
        ("lps0", 3), ("lps0", 7), ("vpmc", None), ("lps0", 5), ("idle-check", None),
        ("raise", None), ("lps0", 6), ("lps0", 8), ("lps0", 4)]
    assert [e["phase"] for e in ev if e["event"] == "lps0"] == ["entry"] * 3 + ["exit"] * 3
    assert all(e["vcpu"] == 0 for e in ev if e["event"] in ("lps0", "vpmc"))
    assert (ev[2]["offset"], ev[2]["value"], ev[2]["size"]) == (0, 3, 4)
    # the idle check kicked both vCPUs out of KVM_RUN and found both halted: vCPU 0
    # waiting for the SCI, vCPU 1 with nothing to run
    assert ev[4]["states"] == [{"vcpu": 0, "mp_state": "HALTED"},
                               {"vcpu": 1, "mp_state": "HALTED"}]
    assert ev[5]["what"] == "gpe0" and ev[5]["sci"] and ev[5]["t"] - ev[3]["t"] >= 0.2
    assert core.bus.counts["pio"]["lps0"] == 6 and core.bus.counts["mmio"] == {"vpmc": 1}


def test_the_wake_waits_for_all_three_entry_calls_in_6_1s_order_too(kvm_calls):
    """6.1 calls 3, 5, 7 (not 3, 7, 5): the wake is armed by the last of the three."""
    fake = []
    script = [("out", acpi.GPE0_BLK + 2, 1, b"\x01"), lps0(3), lps0(5), lps0(7),
              Halt(lambda: bool(fake[0].irqs)), lps0(8), lps0(6), lps0(4),
              ("out", 0x604, 2, S5)]
    _, _, r = run(script, vcpus=1, hooks=[lambda c: fake.append(c.vm)], s2idle_wake_s=0.1)
    got = [e.get("fn", e["event"]) for e in r.exits if e["event"] in ("lps0", "idle-check")]
    assert r.outcome == "shutdown" and got == [3, 5, 7, "idle-check", 8, 6, 4]


@pytest.mark.parametrize("fault, seen", [
    ("", [3, 7, "vpmc 3", 5, "idle-check", 6, 8, 4]),
    ("lose-lps0-call", [3, "vpmc 3", 5, "idle-check", 6, 8, 4]),
    ("misread-notify", [3, 7, "vpmc 4", 5, "idle-check", 6, 8, 4]),
    ("early-wake", [3, "idle-check", 7, "vpmc 3", 5, "idle-check", 6, 8, 4]),
])
def test_the_s2idle_self_test_faults_break_what_they_name(kvm_calls, fault, seen):
    fake = []
    gpe_sts = acpi.GPE0_BLK
    vpmc = Exit(code=6, reason="MMIO", phys_addr=acpi.VPMC_ADDR, is_write=True, len=4,
                value=3)
    early = fault == "early-wake"
    # the guest halts until the SCI; after an early wake its ACPI clears GPE 0 and goes on
    woken_early = [Halt(lambda: len(fake[0].irqs) >= 1),
                   ("out", gpe_sts, 1, b"\x01")] if early else []
    script = [("out", gpe_sts + 2, 1, b"\x01"), lps0(3), *woken_early, lps0(7), vpmc,
              lps0(5), Halt(lambda: len(fake[0].irqs) >= (3 if early else 1)),
              lps0(6), lps0(8), lps0(4), ("out", 0x604, 2, S5)]
    core = xb.make(bzimage(), INITRD, xb.APPEND, Policy(vcpus=1, ram_mib=64, fault=fault),
                   dsdt=DSDT, s2idle_wake_s=0.1)
    fvm = FakeVm(script)
    core.open_vm = lambda: (setattr(core, "vm", fvm), fvm)[1]
    core.setup()
    fake.append(fvm)
    r = core.run(timeout=10, silent_s=10)
    core.close()
    got = [e["fn"] if e["event"] == "lps0" else f"vpmc {e['value']}"
           if e["event"] == "vpmc" else e["event"]
           for e in r.exits if e["event"] in ("lps0", "vpmc", "idle-check")]
    assert r.outcome == "shutdown" and got == seen, (r.detail, got)


def test_a_pit_tick_hides_the_tsc_deadline_timer_and_turns_the_lapic_timer_off(kvm_calls,
                                                                              monkeypatch):
    hidden = []
    monkeypatch.setattr(xb.x86, "cpuid_for_vcpu",
                        lambda c, apic, hide=0: hidden.append(hide) or f"cpuid/{apic}")
    _, vm, r = run([("out", 0x604, 2, S5)], tick="pit")
    cmdline = bytes(vm.mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + 400]).split(b"\0")[0]
    assert cmdline.endswith(b" nolapic_timer") and hidden == [1 << 24] * 2
    assert next(e for e in r.exits if e["event"] == "setup")["tick"] == "pit"
    hidden.clear()
    _, vm, _ = run([("out", 0x604, 2, S5)])
    assert b"nolapic_timer" not in bytes(vm.mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + 400])
    assert hidden == [0, 0]


def test_without_a_dsdt_acpi_is_off_and_the_halt_line_ends_the_run(kvm_calls):
    halt = [("out", 0x3F8, 1, bytes([c])) for c in b"reboot: System halted\n"]
    core, vm, r = run(halt, dsdt=None, vcpus=1)
    assert (r.outcome, r.detail) == ("shutdown", "the kernel halted: no ACPI (acpi=off) "
                                                 "to power off with")
    cmdline = bytes(vm.mem[boot.CMDLINE_ADDR:boot.CMDLINE_ADDR + 400]).split(b"\0")[0]
    assert cmdline.endswith(b" acpi=off") and vm.mem[0xE0000:0xE0008] == bytes(8)
    assert "acpi-pm" not in core.bus.counts["pio"]


def test_with_acpi_a_halt_instead_of_s5_is_an_error(kvm_calls):
    halt = [("out", 0x3F8, 1, bytes([c])) for c in b"reboot: System halted\n"]
    _, _, r = run(halt)
    assert r.outcome == "error" and "instead of powering off through ACPI S5" in r.detail


def test_keyboard_controller_reset_and_triple_fault(kvm_calls):
    _, vm, r = run([("in", 0x64, 1, 1), ("out", 0x64, 1, b"\xfe")])
    assert (r.outcome, vm.vcpus[0].ins) == ("reset", [b"\x00"])     # input buffer empty
    assert "0xfe to port 0x64" in r.detail
    _, _, r = run([Exit(code=8, reason="SHUTDOWN")])
    assert (r.outcome, r.detail) == ("reset", "vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)")
    assert any(e["event"] == "exit" and e["state"]["vcpu"] == 0 for e in r.exits)


def test_an_unknown_exit_ends_the_run_in_error(kvm_calls):
    _, _, r = run([("hlt",)])
    assert r.outcome == "error" and "unexpected exit HLT" in r.detail


@pytest.mark.parametrize("kw, why", [
    ({"kernel": b"\x7fELF" + bytes(0x400)}, "not a bzImage"),
    ({"dsdt": b"SSDT" + DSDT[4:]}, "not a DSDT"),
    ({"policy": Policy(ram_mib=4096)}, "3072 at most"),
    ({"policy": Policy(ram_mib=64, pmem_mib=16)}, "pmem"),
    ({"policy": Policy(ram_mib=64, psci_version=(1, 0))}, "PSCI version is arm64's"),
    ({"initrd": bytes(40 << 20)}, "does not fit"),
    ({"dsdt": None, "power_button_s": 1.0}, "power-button press needs ACPI"),
    ({"dsdt": None, "s2idle_wake_s": 1.0}, "s2idle wake needs ACPI"),
    ({"tick": "hpet"}, "tick 'hpet': one of lapic, pit"),
])
def test_bad_input_is_refused_before_any_kvm_call(kw, why):
    args = {"kernel": bzimage(), "initrd": INITRD, "bootargs": xb.APPEND,
            "policy": Policy(ram_mib=64), "dsdt": DSDT, **kw}
    with pytest.raises(VmmError, match=why):
        xb.make(**args)


def test_the_cli_refuses_in_one_line(tmp_path):
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + bytes(0x400))
    bz, initrd = tmp_path / "bzImage", tmp_path / "initrd"
    bz.write_bytes(bzimage())
    initrd.write_bytes(INITRD)
    for argv, why in (
            (["--arch", "x86_64", "--kernel", str(elf)], "not a bzImage"),
            (["--arch", "x86_64", "--kernel", str(bz), "--initrd", str(initrd),
              "--dsdt", str(elf)], "not a DSDT"),
            (["--arch", "arm64", "--kernel", str(bz)], None)):
        p = subprocess.run([sys.executable, "-m", "harness.guest.vmm", *argv],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert why is None or why in p.stderr


def test_an_ap_woken_before_its_sipi_is_no_exit_and_runs_again(monkeypatch):
    """KVM_RUN on an x86 AP still waiting for its SIPI returns EAGAIN once an event
    (its INIT) wakes it: not an error that ends the VM."""
    from harness.guest.kvm import vm as kvm_vm

    def eagain(fd, op, arg=0):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(kvm_vm.fcntl, "ioctl", eagain)
    v = object.__new__(kvm_vm.Vcpu)
    v.fd, v.id = -1, 1
    assert v.run_in_thread() is None
