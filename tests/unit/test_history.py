"""Upstream history vs what a kernel's cases did (harness.plugin.history)."""

from harness.plugin import history

MERGED = {"system_suspend": (5, 19), "system_off2": (6, 13), "acpi_notify": None}


def res(**families):
    return [{"family": f, "status": s} for f, sts in families.items() for s in sts]


def test_stock_kernels_follow_history():
    r = res(system_suspend=["pass", "fail"], system_off2=["skip", "skip"], acpi_notify=["skip"])
    assert history.differences(MERGED, (6, 12), r) == []
    assert history.differences(MERGED, (5, 10), r) == [
        "system_suspend ran on 5.10 (merged in 5.19), expected skipped: backported?"]


def test_a_skip_where_the_feature_is_merged_is_named():
    r = res(system_suspend=["pass"], system_off2=["skip", "pass"], acpi_notify=["pass"])
    assert history.differences(MERGED, (7, 2), r) == [
        "system_off2 partly skipped: ['skip', 'pass'] on 7.2 (merged in 6.13), expected ran",
        "acpi_notify ran on 7.2 (unmerged), expected skipped: the series applied?"]


def test_information_only_for_a_developers_kernel():
    from harness.kernel.kernels import Kernel
    r = res(system_suspend=["pass"], system_off2=["pass"], acpi_notify=["skip"])
    own = Kernel("path:/x/Image", "arm64", None, "6.12.9-mine", None, None, "/x/Image")
    stock = Kernel("debian:6.12", "arm64", None, "6.12.9", None, None, "Debian",
                   debian=("trixie", "6.12.9-1"))
    assert history.information(own, MERGED, r) == [
        "system_off2 ran on 6.12 (merged in 6.13), expected skipped: backported?"]
    assert history.information(stock, MERGED, r) == []


# ---------------------------------------------------------------- a promised feature
# The verdict a case gets through SuiteHost.check_case, the path every in-guest suite
# takes (tests/e2e/test_psci.py, test_vfio.py): a SKIP of a family that the kernel's
# release promises is a FAIL, unless the kernel's config turns it off.

import pytest
from _pytest.outcomes import Failed, Skipped

from harness.kernel.kernels import Kernel
from harness.plugin.suite import SuiteHost

CAP_ZERO = ("KVM_CHECK_EXTENSION(KVM_CAP_ARM_SYSTEM_SUSPEND=216) is 0: "
            "SYSTEM_SUSPEND exits absent")
PSCI = {"system_suspend": (5, 19), "system_off2": (6, 13)}


def _own(release: str) -> Kernel:
    return Kernel("build:/src/linux", "arm64", None, release, None, None, "a guestpm build")


def _host(release: str, config: dict | None, kvm: str | None = None,
          suspend: str = "skip", off2: str = "pass") -> SuiteHost:
    """A served suite host whose (recorded) agent run saw `release`: SYSTEM_SUSPEND
    cases with `suspend` (skip: the cap probe said 0), SYSTEM_OFF2 ones with `off2`."""
    class Host(SuiteHost):
        MERGED = PSCI

        def shown(self):
            return {"CONFIG_KVM": True} if kvm is None else {}
    results = [{"name": "system_suspend_features_with_the_cap", "family": "system_suspend",
                "status": suspend, "checks": [] if suspend == "skip" else [
                    {"what": "x", "expected": 0, "actual": 0, "ok": True}],
                "reason": CAP_ZERO},
               {"name": "system_off2_features_report_hibernate_off", "family": "system_off2",
                "status": off2, "reason": "PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent",
                "checks": [] if off2 == "skip" else [
                    {"what": "x", "expected": 0, "actual": 0, "ok": True}]}]
    h = Host(machine=None, _run={"env": {"release": release, "kvm": kvm}, "results": results})
    h.kernel = _own(release)
    h._config = lambda: config
    return h


def test_a_skip_of_a_promised_family_on_your_own_kernel_fails():
    """A 7.2 patch makes KVM_CHECK_EXTENSION(KVM_CAP_ARM_SYSTEM_SUSPEND) return 0: the
    case FAILs naming the release, the merge and the probe (it used to SKIP)."""
    with pytest.raises(Failed) as e:
        _host("7.2.0-rc1-mine", {"CONFIG_KVM": "y"}).check_case(
            "system_suspend_features_with_the_cap")
    msg = str(e.value)
    assert "release 7.2.0-rc1-mine" in msg and "merged in 5.19" in msg, msg
    assert "KVM: arm64: Implement PSCI SYSTEM_SUSPEND" in msg, msg
    assert CAP_ZERO in msg and "the L1 host's" in msg, msg


def test_a_skip_of_a_promised_family_fails_on_a_stock_kernel_too():
    h = _host("6.12.9+deb13-arm64", {"CONFIG_KVM": "y"})
    h.kernel = Kernel("debian:6.12", "arm64", None, "6.12.9+deb13-arm64", None, None,
                      "Debian", debian=("trixie", "6.12.9-1"))
    with pytest.raises(Failed):
        h.check_case("system_suspend_features_with_the_cap")


def test_the_config_turning_it_off_is_a_skip_naming_the_option():
    with pytest.raises(Skipped) as e:
        _host("7.2.0-mine", {"CONFIG_ARM64": "y"}, kvm="no /dev/kvm").check_case(
            "system_suspend_features_with_the_cap")
    assert str(e.value.msg).startswith("CONFIG_KVM is not set: "), e.value.msg


def test_without_a_config_what_the_kernel_shows_decides():
    """No config to read, but /dev/kvm opened: KVM is built, so the SKIP is a FAIL; a
    kernel that shows no KVM at all SKIPs, saying how that is known."""
    with pytest.raises(Failed) as e:
        _host("7.2.0-mine", None).check_case("system_suspend_features_with_the_cap")
    assert "the kernel shows KVM" in str(e.value), e.value
    v = history.judge_skip("system_suspend", "7.2.0-mine", "no /dev/kvm", None,
                           {"CONFIG_KVM": False})
    assert v.status == "skip" and "kernel shows no KVM" in v.message, v


def test_below_the_merge_the_skip_stands():
    with pytest.raises(Skipped) as e:
        _host("5.18.3-mine", {"CONFIG_KVM": "y"}).check_case(
            "system_suspend_features_with_the_cap")
    assert e.value.msg == CAP_ZERO
    with pytest.raises(Skipped):
        _host("6.12.3-mine", {"CONFIG_KVM": "y"}, off2="skip").check_case(
            "system_off2_features_report_hibernate_off")


def test_the_family_history_fails_a_regression_on_your_own_kernel():
    """test_verdicts_follow_upstream_history is collected on every kernel now: SYSTEM_OFF2
    skipped on a 7.2 build FAILs; run on a 6.12 build (before its merge) stays
    information; a config without KVM excuses both families."""
    with pytest.raises(AssertionError, match=r"system_off2 skipped on 7\.2 \(merged in 6\.13\)"):
        h = _host("7.2.0-mine", {"CONFIG_KVM": "y"}, suspend="pass", off2="skip")
        h.check_history(h.kernel)
    h = _host("6.12.3-mine", {"CONFIG_KVM": "y"}, suspend="pass", off2="pass")
    h.check_history(h.kernel)
    assert history.information(h.kernel, PSCI, h.run["results"]) == [
        "system_off2 ran on 6.12 (merged in 6.13), expected skipped: backported?"]
    h = _host("7.2.0-mine", {}, suspend="skip", off2="skip")
    h.check_history(h.kernel)


@pytest.mark.parametrize("host_release,verdict", [
    ("5.15.0-mine", Skipped), ("5.19.0-mine", Failed), ("7.2.1+deb14-arm64", Failed)])
def test_vmm_exit_4_on_a_host_that_promises_the_cap(host_release, verdict):
    """What the L2 tests call instead of pytest.skip for the VMM's exit 4: the L1 host's
    release applies to the cap."""
    with pytest.raises(verdict):
        history.skip_or_fail("l2_suspend", host_release,
                             "KVM_CAP_ARM_SYSTEM_SUSPEND is 0 on this host",
                             {"CONFIG_KVM": "y"})


def test_the_guest_release_applies_to_the_guest_side_off2_call():
    """SYSTEM_OFF2 from the L2 guest's psci_sys_hibernate: promised by a 6.13 guest,
    unless its config has no hibernation."""
    probe = "psci_sys_hibernate not in the L2 guest's /proc/kallsyms"
    assert history.judge_skip("system_off2_call", "6.13.0", probe,
                              {"CONFIG_HIBERNATION": "y"}).status == "fail"
    v = history.judge_skip("system_off2_call", "6.13.0", probe, {"CONFIG_SUSPEND": "y"})
    assert v == history.Verdict("skip", f"CONFIG_HIBERNATION is not set: {probe}")
    assert history.judge_skip("system_off2_call", "6.12.9", probe,
                              {"CONFIG_HIBERNATION": "y"}).status == "skip"
