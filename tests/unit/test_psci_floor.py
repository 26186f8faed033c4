"""The PSCI version floor by release (harness.guest.psci), and the version cases that
assert it instead of what KVM itself reports."""

import pytest

from harness.guest import kselftest, psci
from harness.guest.kvm.arm64 import psci_version, version_str


@pytest.mark.parametrize("release,floor", [
    ("5.10.0-32-arm64", "1.0"), ("5.17.15", "1.0"), ("5.18.0", "1.1"),
    ("6.1.0-50-arm64", "1.1"), ("6.12.117+deb13-arm64", "1.1"), ("6.13.0-rc1", "1.3"),
    ("7.2.13+deb14-arm64", "1.3")])
def test_the_floor_follows_the_release(release, floor):
    assert version_str(psci.psci_floor(release)) == floor


def test_no_release_no_floor():
    assert psci.psci_floor("unknown") is None and psci.psci_floor(None) is None


class _Vcpu:
    def __init__(self, reg):
        self.reg = reg

    def get_reg(self, _):
        return self.reg

    def set_reg(self, _, v):
        if not psci_version(0, 2) <= v <= KVM_DEFAULT[0]:
            raise OSError(22, "EINVAL")
        self.reg = v


KVM_DEFAULT = [0]


class _Guest:
    """A KVM whose new VMs default to KVM_DEFAULT[0] and that implements every version
    up to it: the register reads back what was written, PSCI_VERSION returns it."""
    def __init__(self, version=None, **_):
        self.v = _Vcpu(version if version is not None else KVM_DEFAULT[0])

    def vcpu(self, _):
        return self.v

    def call(self, _fid, *a):
        return psci.ret(self.v.reg)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _run(name, release, default, monkeypatch):
    """The case's body (its probe's requirements left out: they read the default too)."""
    KVM_DEFAULT[0] = default
    monkeypatch.setattr(psci, "PsciGuest", _Guest)
    env = psci.Env(machine="aarch64", release=release, suspend_cap=1, psci_default=default)
    case = next(c for c in psci.CASES if c.name == name)
    return kselftest.run_case(kselftest.Case(name, case.family, case.fn, "", ()), env)


@pytest.mark.parametrize("name", ["psci_version_reports_the_version_register",
                                  "psci_version_register_default_and_writes"])
def test_a_7_2_kvm_that_gives_psci_1_1_fails(name, monkeypatch):
    """KVM on 7.2 giving new VMs PSCI 1.1 (below 6.13's 1.3): a FAIL, although KVM agrees
    with itself (the register, PSCI_VERSION and the writable range all say 1.1)."""
    r = _run(name, "7.2.0-mine", psci_version(1, 1), monkeypatch)
    assert r["status"] == "fail", r
    bad = [c for c in r["checks"] if not c["ok"]]
    assert bad[0]["what"] == "default version register at least the floor of 7.2.0-mine", bad
    assert (bad[0]["expected"], bad[0]["actual"]) == (">= 1.3", "1.1")


@pytest.mark.parametrize("release,default", [("7.2.0", "1.3"), ("6.12.9", "1.1"),
                                             ("6.12.9-backport", "1.3"), ("5.10.0", "1.0")])
def test_at_or_above_the_floor_passes(release, default, monkeypatch):
    major, minor = map(int, default.split("."))
    for name in ("psci_version_reports_the_version_register",
                 "psci_version_register_default_and_writes"):
        r = _run(name, release, psci_version(major, minor), monkeypatch)
        assert r["status"] == "pass", r
