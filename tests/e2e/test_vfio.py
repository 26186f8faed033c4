"""vfio-pci power uAPI in the kernel under test booted as a host.

The machine gets an emulated IOMMU (intel-iommu on q35, SMMUv3 on virt) and an
e1000e on the root bus that no driver of the guest claims; harness.guest.vfio
binds it to vfio-pci, opens it through the container/group interface and runs
the cases. Why an IOMMU and not noiommu mode: Debian's kernels are built without
CONFIG_VFIO_NOIOMMU, and a real group is what a VMM gets in production.

Expected on the Debian kernels (6.1, 6.12, 7.2; x86_64 and arm64): the low-power
cases (VFIO_DEVICE_FEATURE LOW_POWER_ENTRY/_WITH_WAKEUP/_EXIT, merged 6.1) PASS;
the ACPI-notify cases (unmerged series) SKIP with the kernel's own answer to the
index-5 query.

STAND-IN, not the kernel's verdict: on profiles whose PCI devices have ACPI companions
(x86_64 q35), the same machine then loads guestpm's stand-in for the unmerged
ACPI-notify series (tests/fixtures/vfio_acpi_standin, a vfio-pci variant driver), binds
the device to it and runs the acpi_notify cases again; they are reported under
"stand-in".  The machine has guestpm's SSDT (_PS0/_PS3 and GPMN on the device's
companion) and a second e1000e, hot-added behind a root port once the guest runs, so
that no firmware table can describe it: it has no companion on any QEMU (QEMU 8 and
later describe the devices behind a root port that were there at boot)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import GuestpmError, first_line
from harness.guest import vfio
from harness.image import fixture_modules
from harness.image.aml import ASL_DIR, compile_asl
from harness.kernel import kernels
from harness.plugin import history
from harness.plugin.suite import SuiteHost, assert_case
from harness.progress import progress

pytestmark = [pytest.mark.e2e]
# the vfio machine needs an emulated IOMMU: profiles without one (i440fx) do not collect it
IOMMU = pytest.mark.profile_has("iommu_args")

SLOT = 9
BDF = f"0000:00:{SLOT:02x}.0"
# e1000e: a PCIe function with a PCI power-management capability (D3hot) for which the
# guest's initramfs has no driver, so nothing but vfio-pci will claim it
DEVICE = "e1000e"
MODULES = ("vfio_pci", "vfio_iommu_type1")
MERGED = history.merged_of("low_power", "acpi_notify")    # acpi_notify: not merged anywhere
# the ACPI-notify stand-in: a device in a root-bus slot has a companion; one hot-added
# behind a root port after boot (whose slots the profile's acpi_unlisted_bridge_args keep
# out of the ACPI tables) has none
COMPANIONS = pytest.mark.profile_has("acpi_pci_slot")
STANDIN_MARK = pytest.mark.standin("vfio ACPI-notify forwarding (v5 uAPI)")
STANDIN = Path(__file__).resolve().parent.parent / "fixtures" / "vfio_acpi_standin"
ROOT_PORT_SLOT = 0xA
E1000E_ID = ("8086", "10d3")             # vendor, device: how the guest lists the e1000e
ACPI_NOTIFY_CASES = [c.name for c in vfio.CASES if c.family == "acpi_notify"]


def vfio_profile(profile):
    return dataclasses.replace(profile, modules=profile.modules + MODULES)


def device_args(profile) -> tuple[str, ...]:
    return ("-device", f"{DEVICE},bus={profile.pcie_root_bus},addr={SLOT:#x},id=gpm_vfio0")


def companion_args(profile) -> tuple[str, ...]:
    """The SSDT that extends the slot device's companion, and the empty root port that
    a device without one is hot-added to (hot_add_without_companion)."""
    if not profile.acpi_pci_slot:
        return ()
    aml = compile_asl(ASL_DIR / "vfio_notify.asl")
    return ("-acpitable", f"file={aml}", *profile.acpi_unlisted_bridge_args,
            "-device", f"pcie-root-port,id=gpm_rp1,bus={profile.pcie_root_bus},"
                       f"addr={ROOT_PORT_SLOT:#x},chassis=7")


def _e1000e_bdfs(m) -> set[str]:
    out = m.ssh.run("cd /sys/bus/pci/devices && for d in *; do "
                    "echo $d $(cat $d/vendor $d/device); done").check().output
    return {f[0] for ln in out.splitlines()
            if len(f := ln.replace("0x", "").split()) == 3 and tuple(f[1:]) == E1000E_ID}


def hot_add_without_companion(m) -> str:
    """Hot-add the second e1000e behind the root port (native PCIe hotplug) and return
    the address the guest gave it, read from the guest.  The guest took its ACPI tables
    at boot, when the port was empty, so no QEMU version can have described it."""
    before = _e1000e_bdfs(m)
    m.qmp.execute("device_add", driver=DEVICE, bus="gpm_rp1", id="gpm_vfio1")

    def why() -> str:
        # pciehp drives the port only if _OSC grants native PCIe control, which needs
        # ExtendedConfig (MMCONFIG) among what the OS supports: the kernel says why not
        try:
            osc = m.ssh.run("dmesg | grep '_OSC: not requesting OS control'").output.strip()
        except GuestpmError:                    # the timeout is the verdict, not this
            osc = ""
        return ("the guest did not enumerate the e1000e hot-added behind the root port "
                "within 60 s" + (f"; its kernel said: {osc}" if osc else "") +
                f" (console: {m.console_log})")
    added = m.wait_until(lambda: sorted(_e1000e_bdfs(m) - before), 60,
                         "the guest to enumerate the e1000e hot-added behind the root port",
                         fail=why)
    return added[0]


@dataclasses.dataclass(kw_only=True)
class VfioHost(SuiteHost):
    """The kernel under test with the device for vfio; its cases in one agent call
    (4-6 s under TCG), with vfio-pci."""
    AGENT = "vfio"
    MERGED = MERGED
    kernel: kernels.Kernel
    profile: profiles.Profile
    _standin: dict | None = None
    _standin_missing: str | None = None     # why the stand-in module is not loaded
    _standin_error: str | None = None       # how loading it failed (never the stock run's)
    _standin_tried: bool = False
    _no_companion: str | None = None
    _no_companion_failed: str | None = None  # the hot-add is tried once per machine

    def before_run(self) -> None:
        """Where devices have companions the stand-in module is loaded first: its raise
        hook lets a kernel that carries the real series run the value cases too."""
        if self.no_companion:
            self.load_standin()

    def agent_args(self) -> dict:
        return {"bdf": BDF, "no_companion": self.no_companion}

    @property
    def no_companion(self) -> str | None:
        """Where devices have companions: a device without one, hot-added on first use."""
        if self.profile.acpi_pci_slot and self._no_companion is None:
            if self._no_companion_failed:       # a second device_add is only "Duplicate ID"
                raise GuestpmError(f"the device without a companion is missing on this "
                                   f"machine: {self._no_companion_failed}")
            try:
                self._no_companion = hot_add_without_companion(self.machine)
            except GuestpmError as e:
                self._no_companion_failed = first_line(e)
                raise
        return self._no_companion

    def load_standin(self) -> str | None:
        """Build the stand-in for this kernel and load it (it binds nothing by itself:
        only driver_override sends it a device); None, or why it is not loaded."""
        if not self._standin_tried:
            self._standin_tried = True
            m = self.machine
            if m.ssh.run("test -d /sys/module/vfio_pci_core").status != 0:
                self._standin_missing = (f"no vfio_pci_core in {self.kernel.release} (it came "
                                         f"with 5.15): the stand-in is a vfio-pci variant "
                                         f"driver built on it")
                return self._standin_missing
            try:
                ko = fixture_modules.build(STANDIN, self.kernel, self.profile.deb_arch, progress)
                m.ssh.put(ko.read_bytes(), "/tmp/vfio_acpi_standin.ko")
                m.ssh.run("insmod /tmp/vfio_acpi_standin.ko").check()
            except fixture_modules.Unbuildable as e:
                self._standin_missing = f"the vfio ACPI-notify stand-in cannot be built: {e}"
            except Exception as e:      # ours to report on the stand-in's tests, not here
                self._standin_error = f"{type(e).__name__}: {e}"
        return self._standin_missing

    @property
    def standin(self) -> dict:
        """After the stock run (the negative control, on this same machine): the
        acpi_notify cases with the device bound to the stand-in variant driver."""
        if self._standin is None:
            _ = self.run        # the stock run first: it must not see the stand-in
            if self.load_standin():
                pytest.skip(self._standin_missing)
            if self._standin_error:
                pytest.fail(f"loading the stand-in failed: {self._standin_error}",
                            pytrace=False)
            self._standin = self.machine.agent(
                "vfio", bdf=BDF, select="acpi_notify", driver=vfio.STANDIN_DRIVER,
                no_companion=self.no_companion)
        return self._standin

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
        qemu_args=profile.iommu_args + device_args(profile) + companion_args(profile)),
        kernel=machine_pool.kernel, profile=profile))


@pytest.fixture
def host(request, vfio_host_machine, kernel) -> VfioHost:
    """The vfio machine: only profiles that can have an IOMMU collect its tests."""
    return vfio_host_machine.serve(request, kernel)


def _fail_if_setup_failed(host: VfioHost) -> None:
    if host.setup_error:
        pytest.fail(f"set-up failed: see test_the_device_is_bound_to_vfio_pci_in_its_own_"
                    f"iommu_group ({host.setup_error})", pytrace=False)


@IOMMU
@pytest.mark.parametrize("case", [c.name for c in vfio.CASES])
def test_vfio(host, case):
    _fail_if_setup_failed(host)
    host.check_case(case)


@IOMMU
def test_the_device_is_bound_to_vfio_pci_in_its_own_iommu_group(host):
    """The set-up every vfio case stands on: the other cases FAIL pointing here when it
    fails (on this machine a missing group or driver is the set-up's fault)."""
    assert host.setup_error is None, host.setup_error
    env = host.run["env"]
    r = host.machine.ssh.run(f"ls /sys/kernel/iommu_groups/{env['iommu_group']}/devices")
    assert r.output.split() == [BDF], r.output


@IOMMU
def test_verdicts_follow_upstream_history(host, kernel):
    """low_power runs on every kernel from 6.1 on (unless its config has no vfio-pci),
    and on stock kernels SKIPs before; the unmerged ACPI-notify case SKIPs on every
    stock kernel (a PASS there means the series was applied).  (A PASS before the merge
    on path: and build: kernels is information, see history.py.)"""
    host.check_history(kernel)


@IOMMU
def test_bare_metal_entry_point_agrees(host):
    """`python3 -m harness.guest.vfio BDF` prints KTAP with the same verdicts."""
    other = ("--no-companion", host.no_companion) if host.no_companion else ()
    host.check_bare_metal(BDF, *other, timeout=120)


@pytest.mark.harness_selftest
def test_a_device_without_an_iommu_group_skips_naming_why(machine_factory, profile):
    """Bad input: the same device on a machine without an IOMMU cannot be bound to
    vfio-pci; every case SKIPs saying so, none FAILs."""
    m = machine_factory.booted(profile=vfio_profile(profile), qemu_args=device_args(profile))
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
    m = machine_factory.booted(profile=profile, append=profile.iommu_append,
                               qemu_args=profile.iommu_args + device_args(profile))
    res = m.agent("vfio", bdf=BDF)["results"]
    assert {r["status"] for r in res} == {"skip"}, res
    assert {r["reason"] for r in res} == {
        "driver missing: vfio-pci is neither built in nor loaded (CONFIG_VFIO_PCI)"}, res


@IOMMU
@COMPANIONS
@STANDIN_MARK
def test_the_ssdt_extends_the_companion_the_standin_serves(host, profile):
    """The firmware side of the stand-in cases: the device's companion is the slot
    device QEMU's DSDT declares, our SSDT's _PS0 made it ACPI-power-manageable, and the
    device hot-added behind the root port has no companion."""
    _fail_if_setup_failed(host)
    fw = f"/sys/bus/pci/devices/{BDF}/firmware_node"
    r = host.machine.ssh.run(f"cat {fw}/path; test -e {fw}/power_state && echo managed; "
                             f"test -e /sys/bus/pci/devices/{host.no_companion}/firmware_node"
                             f" && echo companion || echo none")
    assert r.output.split() == [profile.acpi_pci_slot.format(devfn=SLOT << 3), "managed",
                                "none"], r.output + r.stderr


@IOMMU
@COMPANIONS
@STANDIN_MARK
@pytest.mark.parametrize("case", ACPI_NOTIFY_CASES)
def test_vfio_acpi_notify_with_the_standin_fixture(host, case):
    """STAND-IN, not the kernel's verdict: the acpi_notify case against guestpm's
    stand-in for the unmerged series (tests/fixtures/vfio_acpi_standin), on the machine
    where stock vfio-pci just SKIPped it.  It proves the case's positive path against the
    uAPI as documented, not the series' code."""
    _fail_if_setup_failed(host)
    assert_case(host.result(case, host.standin))


@IOMMU
@COMPANIONS
@STANDIN_MARK
def test_the_eventfd_probe_agrees_with_the_standin_build(host):
    """The cases tell from /proc/kallsyms whether eventfd_signal() takes a count; the
    stand-in was told by the headers it was built against (parameter carries_value).
    A disagreement means one of the two probes is wrong."""
    _fail_if_setup_failed(host)
    said = {r["observed"]["eventfd counter"] for r in host.standin["results"]
            if "eventfd counter" in r.get("observed", {})}
    assert said, "no case recorded what the eventfd probe said: " + \
        str({r["name"]: r["status"] for r in host.standin["results"]})
    probe_says_no = any("eventfd_signal() takes no count" in r for r in said)
    built = host.machine.ssh.run(
        "cat /sys/module/guestpm_vfio_acpi_standin/parameters/carries_value").output.strip()
    assert built in ("Y", "N") and (built == "Y") != probe_says_no, \
        f"stand-in built with carries_value={built!r}; the cases' probe said: {said}"


# the stand-in's `defect` parameter -> the case that must FAIL on it
DEFECTS = {
    "all_at_once": "acpi_notify_new_eventfd_keeps_the_queued_values",
    "silent_drop": "acpi_notify_queue_keeps_the_newest_20_and_warns",
    "keeps_handler": "acpi_notify_registers_again_after_close",
    "swap_drops_queue": "acpi_notify_new_eventfd_keeps_the_queued_values",
}


@pytest.mark.harness_selftest
@IOMMU
@COMPANIONS
@pytest.mark.parametrize("defect", DEFECTS)
def test_a_defective_standin_fails_the_case_about_it(host, defect):
    """Self-test: a case that cannot FAIL proves nothing.  The stand-in, loaded with a
    defect on purpose (delivering every value at once, dropping without the warning,
    leaving its notify handler behind on close, losing the queue on an eventfd swap),
    must make the case about that defect FAIL."""
    case = DEFECTS[defect]
    good = host.result(case, host.standin)
    if good["status"] == "skip":
        pytest.skip(f"{case} SKIPs on this kernel: {good['reason']}")
    assert good["status"] == "pass", f"{case} does not PASS on the good stand-in: {good}"
    reload = "rmmod guestpm_vfio_acpi_standin && insmod /tmp/vfio_acpi_standin.ko"
    host.machine.ssh.run(f"{reload} defect={defect}").check()
    try:
        res = host.machine.agent("vfio", bdf=BDF, select=case, driver=vfio.STANDIN_DRIVER,
                                 no_companion=host.no_companion)
    finally:
        host.machine.ssh.run(reload).check()
    bad = host.result(case, res)
    assert bad["status"] == "fail", f"{case} with defect={defect}: {bad}"
