"""arm64 PSCI power-state uAPI: SYSTEM_SUSPEND (5.19) and SYSTEM_OFF2 (6.13).

The kernel under test boots as an arm64 KVM host (QEMU virt with EL2), once in VHE
and once in nVHE (kvm-arm.mode=nvhe). Inside it, harness.guest.psci drives /dev/kvm
with a few guest instructions (no guest kernel), as tools/testing/selftests/kvm/arm64/
psci_test.c does. Each case's checks come back as data and are asserted here, so a
FAIL shows the check, the expected and the actual value.

Expected on the Debian kernels: SYSTEM_SUSPEND cases PASS on 6.1, 6.12 and 7.2;
SYSTEM_OFF2 cases SKIP on 6.1 and 6.12 ("PSCI version 1.1 < 1.3") and PASS on 7.2.
On any kernel, a SKIP of a family its release promises (SYSTEM_SUSPEND from 5.19,
SYSTEM_OFF2 from 6.13) is a FAIL unless its config has no KVM (harness.plugin.history)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import pytest

from harness.guest import psci
from harness.guest.kvm.arm64 import version_str
from harness.kernel import kernels
from harness.plugin import history
from harness.plugin.judging import note
from harness.plugin.suite import SuiteHost
from harness.vm.l2 import MODES

pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64")]

MODE_EVIDENCE = {"vhe": r"kvm \[\d+\]: VHE mode initialized successfully",
                 "nvhe": r"kvm \[\d+\]: Hyp (nVHE )?mode initialized successfully"}

# When upstream merged each family: kernels from then on must run it, older must SKIP it.
MERGED = history.merged_of("system_suspend", "system_off2")


@dataclass(kw_only=True)
class KvmHost(SuiteHost):
    """The kernel under test as a KVM host in one mode; its PSCI cases in one agent
    call (about 5 s under TCG)."""
    AGENT = "psci"
    MERGED = MERGED
    mode: str
    floor_noted: bool = False

    def shown(self) -> dict[str, bool]:
        """KVM is built when /dev/kvm opened; the probe's own reason says when the
        kernel has none at all."""
        why = self.run["env"].get("kvm")
        if why is None:
            return {"CONFIG_KVM": True}
        return {"CONFIG_KVM": False} if "this kernel has no KVM" in why else {}

    def note_floor(self, request, kernel) -> None:
        """A PSCI version above the release's floor is information on a developer's
        kernel (a backport), once per machine; below it the baseline case FAILs."""
        env, self.floor_noted = self.run["env"], True
        floor = psci.psci_floor(env["release"])
        default = env.get("psci_default")
        if kernel.debian is None and floor is not None and default and \
                psci.psci_version(*map(int, default.split("."))) > floor:
            note(request, f"{self.mode}: PSCI {default} on {env['release']}, above its "
                          f"release's floor {version_str(floor)}: backported?")


@pytest.fixture(params=list(MODES))
def kvm_host(request, machine, machine_pool, kernel) -> KvmHost:
    # `machine` is the pool's no-extra-parameters member; naming it keeps the per-test
    # console slices of the shared machine (see the plugin's _artifacts fixture).
    if MODES[request.param] and not kernels.image_mentions(kernel.image, b"kvm-arm.mode"):
        # 5.10 has no such parameter: it would boot in VHE again, and pass as nVHE
        pytest.skip(f"{kernel.release} has no kvm-arm.mode= parameter: nVHE mode cannot "
                    "be requested on a VHE-capable CPU")
    mode = request.param
    return machine_pool.reuse(("psci", mode), lambda: KvmHost(
        machine_pool.get(MODES[mode], tag=mode), mode=mode))


@pytest.fixture
def host(request, kvm_host, kernel) -> KvmHost:
    h = kvm_host.serve(request, kernel, prefix=f"{kvm_host.mode}: ")
    if not h.floor_noted:
        h.note_floor(request, kernel)
    return h


def test_kvm_runs_in_the_requested_mode(host):
    lines = host.machine.agent("dmesg", grep="kvm [")["lines"]
    assert any(re.search(MODE_EVIDENCE[host.mode], ln) for ln in lines), \
        f"{host.mode}: no line matches {MODE_EVIDENCE[host.mode]!r} in {lines}"


@pytest.mark.parametrize("case", [c.name for c in psci.CASES])
def test_psci(host, case):
    host.check_case(case)


def test_verdicts_follow_upstream_history(host, kernel):
    """On every kernel a family runs from the release of its merge on (a SKIP there
    would hide a regression behind a probe), unless the kernel's config has no KVM; on
    stock kernels it also SKIPs on older releases (a PASS there is a backport, which
    on path: and build: kernels is information, see history.py)."""
    host.check_history(kernel)


def test_bare_metal_entry_point_agrees(host):
    """`python3 -m harness.guest.psci` (what runs on a bare-metal arm64 host) prints KTAP
    with the same verdicts as the run the other tests assert, and kselftest's exit code."""
    host.check_bare_metal()


def test_a_spinning_vcpu_is_a_bounded_fail_with_its_state(machine):
    """Harness self-test on the real KVM: a guest in `b .` comes back after the 1 s
    KVM_RUN bound as a FAIL whose report carries the vCPU's PC and MP_STATE."""
    r = machine.agent("psci", selftest=True)["results"][0]
    assert r["status"] == "fail", r
    assert "did not return within 1 s" in r["reason"], r
    assert r["vcpu_state"]["mp_state"] == "RUNNABLE", r
    assert r["vcpu_state"]["pc"] == r["observed"]["spin"], r
    assert r["duration_s"] < 30, r


def test_without_el2_the_family_skips_naming_kvm(machine_factory, profile):
    """The same kernel booted without virtualization=on: no EL2, so KVM does not
    initialise and every case SKIPs with the reason, none FAILs."""
    m = machine_factory.booted(profile=dataclasses.replace(
        profile, machine=profile.machine.replace("virtualization=on,", "")))
    res = m.agent("psci")["results"]
    assert {r["status"] for r in res} == {"skip"}, res
    assert {r["reason"] for r in res} == {
        "no /dev/kvm: the CPUs started at EL1, not EL2 (no virtualization extensions "
        "offered), so KVM cannot initialise"}


@pytest.mark.arch("x86_64", "x86_64-pc")
def test_on_a_non_arm64_host_the_family_skips(machine):
    res = machine.agent("psci")["results"]
    assert {r["status"] for r in res} == {"skip"}, res
    assert {r["reason"] for r in res} == {
        "host is x86_64, not aarch64: PSCI is the arm64 firmware interface"}
