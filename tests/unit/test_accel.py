"""--accel: which accelerator a target gets, and why `auto` keeps TCG (harness/plugin/accel.py)."""

import pytest

from harness import profiles
from harness.plugin import accel

X86, ARM = profiles.get("x86_64"), profiles.get("arm64")


def test_what_the_host_lacks_is_named_before_any_boot():
    assert accel.cannot(ARM, "x86_64", True, (7, 2), {"vmx"}, None) == \
        "the host is x86_64, the target arm64"
    assert accel.cannot(X86, "x86_64", False, (7, 2), {"vmx"}, None) == "/dev/kvm cannot be opened"
    assert "neither vmx nor svm" in accel.cannot(X86, "x86_64", True, (7, 2), {"fpu"}, None)
    assert accel.cannot(X86, "x86_64", True, (7, 2), {"svm"}, None) is None
    assert accel.cannot(ARM, "arm64", True, (7, 2), set(), "nested").startswith("QEMU 7.2 < 10.1")
    assert "kvm-arm.mode is nvhe" in accel.cannot(ARM, "arm64", True, (10, 1), set(), "nvhe")
    assert accel.cannot(ARM, "arm64", True, (10, 1), set(), "nested") is None


def test_tcg_is_the_default_and_kvm_applies_to_the_hosts_arch_only(monkeypatch, tmp_path):
    assert profiles.DEFAULT_ACCEL == "tcg"
    monkeypatch.setattr(accel, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(profiles, "host_cpu_vendor", lambda cpuinfo=None: "GenuineIntel")
    never = lambda p: pytest.fail("no probe")
    assert accel.choose("tcg", X86, tmp_path / "s", never) == (X86, None)
    p, why = accel.choose("kvm", X86, tmp_path / "s", never)
    assert (p.accelerator, p.kvm_module, why) == ("kvm", "kvm_intel", None)
    p, why = accel.choose("kvm", ARM, tmp_path / "s", never)
    assert p is ARM and why == "--accel kvm: TCG for arm64 (the host is x86_64)"


def test_auto_keeps_tcg_saying_why_and_probes_once_per_target(monkeypatch, tmp_path):
    monkeypatch.setattr(accel, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(accel, "host_facts", lambda p: (True, (7, 2), {"vmx"}, None))
    monkeypatch.setattr(profiles, "host_cpu_vendor", lambda cpuinfo=None: "GenuineIntel")
    probes = []

    def probe(kvm):
        probes.append(kvm)
        return "QEMU under KVM: KVM internal error. Suberror: 1"
    state = tmp_path / "targets" / "debian-7.2-x86_64.accel"
    for _ in range(2):                       # the second worker reads the first's verdict
        p, why = accel.choose("auto", X86, state, probe)
        assert p is X86 and why == "--accel auto: TCG for x86_64: QEMU under KVM: KVM " \
                                   "internal error. Suberror: 1"
    assert len(probes) == 1 and probes[0].accelerator == "kvm"
    ok = tmp_path / "ok.accel"
    p, why = accel.choose("auto", X86, ok, lambda kvm: None)
    assert p.accelerator == "kvm" and why is None
    p, why = accel.choose("auto", ARM, tmp_path / "arm.accel", probe)
    assert p is ARM and why == "--accel auto: TCG for arm64: the host is x86_64, the target arm64"
    assert len(probes) == 1


def test_tcg_only_defects_and_allowances_do_not_excuse_a_kvm_run():
    from harness.plugin.known_defects import KNOWN, L1_KVM_LOAD_DEBUG_BUG, L1_VCPU_HANG
    from harness.vm import splats
    text = ("watchdog: CPU0: Watchdog detected hard LOCKUP on cpu 1\n"
            "After 10 seconds, these CPUS still haven't responded to the NMI: 1\n")
    assert L1_VCPU_HANG.matches(text, "arm64", "tcg") and L1_VCPU_HANG.matches(text, "arm64")
    assert not L1_VCPU_HANG.matches(text, "arm64", "kvm")
    assert [d.name for d in KNOWN if d.accel == "tcg"] == [L1_VCPU_HANG.name,
                                                           L1_KVM_LOAD_DEBUG_BUG.name]
    (nvhe,) = [a for a in splats.ALLOWED if a.accel == "tcg"]
    s = splats.Splat("warning", "WARNING: CPU: 1 PID: 9 at arch/arm64/kvm/mmu.c:1 "
                     "mark_page_dirty_in_slot+0x1/0x2", "", "console", "console.log", 1)
    args = (s, "6.12.117+deb13-arm64", "arm64", "kvm-arm.mode=nvhe")
    assert nvhe.matches(*args, accel="tcg") and not nvhe.matches(*args, accel="kvm")
