"""vfio-pci power uAPI in the kernel under test booted as a host.

The machine gets an emulated IOMMU (intel-iommu on q35, SMMUv3 on virt) and an
e1000e on the root bus that no driver of the guest claims; harness.guest.vfio
binds it to vfio-pci, opens it through the container/group interface and runs
the cases. Why an IOMMU and not noiommu mode: Debian's kernels are built without
CONFIG_VFIO_NOIOMMU, and a real group is what a VMM gets in production.

Expected on the Debian kernels (6.1, 6.12, 7.2; x86_64 and arm64): the low-power
cases (VFIO_DEVICE_FEATURE LOW_POWER_ENTRY/_WITH_WAKEUP/_EXIT, merged 6.1) PASS;
the ACPI-notify case (unmerged series) SKIPs with the kernel's own answer to the
index-5 query."""

from __future__ import annotations

import dataclasses

import pytest

from harness import history, kernels
from harness.guest import ktest, vfio
from harness.machine import Machine
from harness.pytest_plugin import attach_machine, note
from harness.verdicts import assert_case

pytestmark = [pytest.mark.e2e]
# the vfio machine needs an emulated IOMMU: profiles without one (i440fx) do not collect it
IOMMU = pytest.mark.profile_has("iommu_args")

SLOT = 9
BDF = f"0000:00:{SLOT:02x}.0"
# e1000e: a PCIe function with a PCI power-management capability (D3hot) for which the
# guest's initramfs has no driver, so nothing but vfio-pci will claim it
DEVICE = "e1000e"
MODULES = ("vfio_pci", "vfio_iommu_type1")
MERGED = {"low_power": (6, 1), "acpi_notify": None}     # acpi_notify: not merged anywhere


def vfio_profile(profile):
    return dataclasses.replace(profile, modules=profile.modules + MODULES)


def device_args(profile) -> tuple[str, ...]:
    return ("-device", f"{DEVICE},bus={profile.pcie_root_bus},addr={SLOT:#x},id=gpm_vfio0")


@dataclasses.dataclass
class VfioHost:
    machine: Machine
    _run: dict | None = None
    noted: bool = False

    @property
    def run(self) -> dict:
        """All cases in one agent call per machine (4-6 s under TCG)."""
        if self._run is None:
            self._run = self.machine.agent("vfio", bdf=BDF)
        return self._run

    def result(self, name: str) -> dict:
        return next(r for r in self.run["results"] if r["name"] == name)

    @property
    def setup_error(self) -> str | None:
        """This machine was made for vfio (an IOMMU, vfio-pci loaded, the e1000e): a
        device that is not bound in its own group is a set-up failure, not a missing
        feature, whatever the guest code (written for any host) made of it."""
        failed = self.machine.boot.insmod_failed
        if failed:
            return f"/init could not load {', '.join(failed)} ({self.machine.console_log})"
        env = self.run["env"]
        if env["driver"] != "vfio-pci" or env["iommu_group"] is None:
            reasons = sorted({r["reason"] for r in self.run["results"]
                              if r["status"] == "skip"})
            return (f"{BDF} is bound to {env['driver']!r}, IOMMU group "
                    f"{env['iommu_group']}: {'; '.join(reasons) or 'no reason given'}")
        return None


@pytest.fixture
def vfio_host_machine(machine, machine_pool, profile) -> VfioHost:
    return machine_pool.reuse("vfio", lambda: VfioHost(machine_pool.get(
        profile.iommu_append, tag="vfio", profile=vfio_profile(profile),
        qemu_args=profile.iommu_args + device_args(profile))))


@pytest.fixture
def host(request, vfio_host_machine, kernel) -> VfioHost:
    """The vfio machine: only profiles that can have an IOMMU collect its tests."""
    attach_machine(request, vfio_host_machine.machine)
    if not vfio_host_machine.noted:   # a developer's kernel: information, not verdicts
        vfio_host_machine.noted = True
        for d in history.information(kernel, MERGED, vfio_host_machine.run["results"]):
            note(request, d)
    return vfio_host_machine


@IOMMU
@pytest.mark.parametrize("case", [c.name for c in vfio.CASES])
def test_vfio(host, case):
    if host.setup_error:
        pytest.fail(f"set-up failed: see test_the_device_is_bound_to_vfio_pci_in_its_own_"
                    f"iommu_group ({host.setup_error})", pytrace=False)
    assert_case(host.result(case))


@IOMMU
def test_the_device_is_bound_to_vfio_pci_in_its_own_iommu_group(host):
    """The set-up every vfio case stands on: the other cases FAIL pointing here when it
    fails (on this machine a missing group or driver is the set-up's fault)."""
    assert host.setup_error is None, host.setup_error
    env = host.run["env"]
    r = host.machine.ssh.run(f"ls /sys/kernel/iommu_groups/{env['iommu_group']}/devices")
    assert r.output.split() == [BDF], r.output


@IOMMU
@pytest.mark.stock_kernel_only
def test_verdicts_follow_upstream_history(host, kernel):
    """low_power runs exactly on stock kernels from 6.1 on; the unmerged ACPI-notify case
    SKIPs on every stock kernel (a PASS there means the series was applied).  (On path:
    and build: kernels: information, see history.py.)"""
    version = kernels.release_version(kernel.release)
    assert version, f"no version in release {kernel.release!r} of a stock kernel"
    reasons = sorted({r["reason"] for r in host.run["results"] if r["status"] == "skip"})
    assert not history.differences(MERGED, version, host.run["results"]), \
        f"kernel {kernel.release}; skip reasons {reasons}; {host.run['env']}"


@IOMMU
def test_bare_metal_entry_point_agrees(host):
    """`python3 -m harness.guest.vfio BDF` prints KTAP with the same verdicts."""
    r = host.machine.ssh.run(f"cd /opt/guestpm && python3 -m harness.guest.vfio {BDF}",
                             timeout=120)
    statuses = {x["name"]: x["status"] for x in host.run["results"]}
    assert r.output.startswith("KTAP version 1\n"), r.output[:200]
    assert ktest.parse_ktap(r.output) == statuses, r.output
    assert r.status == ktest.exit_status(host.run["results"]), r.output + r.stderr


@pytest.mark.harness_selftest
def test_a_device_without_an_iommu_group_skips_naming_why(machine_factory, profile):
    """Bad input: the same device on a machine without an IOMMU cannot be bound to
    vfio-pci; every case SKIPs saying so, none FAILs."""
    m = machine_factory(profile=vfio_profile(profile), qemu_args=device_args(profile))
    m.launch()
    m.wait_ready()
    res = m.agent("vfio", bdf=BDF)["results"]
    assert {r["status"] for r in res} == {"skip"}, res
    reasons = {r["reason"] for r in res}
    assert len(reasons) == 1 and f"{BDF} has no IOMMU group" in reasons.pop(), res


@pytest.mark.harness_selftest
@IOMMU
def test_a_missing_vfio_pci_driver_skips_naming_it(machine_factory, profile, kernel,
                                                   kernel_config):
    """Bad input: vfio-pci not loaded (the base profile's modules): SKIP naming the driver."""
    if kernel_config.get("CONFIG_VFIO_PCI") != "m":
        pytest.skip(f"{kernel.spec}: vfio-pci is not a module, it cannot be left out")
    m = machine_factory(profile=profile, append=profile.iommu_append,
                        qemu_args=profile.iommu_args + device_args(profile))
    m.launch()
    m.wait_ready()
    res = m.agent("vfio", bdf=BDF)["results"]
    assert {r["status"] for r in res} == {"skip"}, res
    assert {r["reason"] for r in res} == {
        "driver missing: vfio-pci is neither built in nor loaded (CONFIG_VFIO_PCI)"}, res
