"""In-guest case framework: verdicts from checks, KTAP out and back, host-side asserts."""

import pytest

from harness.guest import kselftest
from harness.guest.kvm.vm import VcpuHang
from harness.plugin.suite import assert_case


def _case(fn, requires=()):
    return kselftest.Case(fn.__name__, "fam", fn, "doc", requires)


def passes(t):
    t.expect("one", 1, 1)


def differs(t):
    t.expect("exit", {"type": "SUSPEND"}, {"type": "SUSPEND"})
    t.expect("returned", -1, 0)


def checks_nothing(t):
    pass


def hangs(t):
    raise VcpuHang("KVM_RUN on vCPU 0 did not return within 10 s", {"pc": "0x80000004"})


def stops(t):
    t.require("first step", "RUNNABLE", "SUSPENDED")
    t.expect("never reached", 1, 1)


def test_verdicts():
    env = object()
    got = {fn.__name__: kselftest.run_case(_case(fn), env) for fn in
           (passes, differs, checks_nothing, hangs, stops)}
    assert {k: r["status"] for k, r in got.items()} == {
        "passes": "pass", "differs": "fail", "checks_nothing": "fail", "hangs": "fail",
        "stops": "fail"}
    assert got["differs"]["reason"] == "returned"
    assert got["checks_nothing"]["reason"] == "the case recorded no check"
    assert got["hangs"]["vcpu_state"] == {"pc": "0x80000004"}
    assert len(got["stops"]["checks"]) == 1


def test_skip_names_the_missing_feature():
    r = kselftest.run_case(
        _case(passes, (lambda env: "PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent",)), None)
    assert (r["status"], r["reason"], r["checks"]) == \
        ("skip", "PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent", [])


def test_ktap_round_trip():
    results = [kselftest.run_case(_case(fn, req), None) for fn, req in
               ((passes, ()), (differs, ()), (passes, (lambda e: "no /dev/kvm",)))]
    results[2]["name"] = "skipped_one"
    text = kselftest.ktap(results, "title")
    assert text.startswith("KTAP version 1\n# title\n1..3\n")
    assert "not ok 2 differs" in text
    assert '# differs: MISMATCH: returned: expected 0, actual -1' in text
    assert "ok 3 skipped_one # SKIP no /dev/kvm" in text
    assert kselftest.parse_ktap(text) == {"passes": "pass", "differs": "fail",
                                          "skipped_one": "skip"}


def test_host_side_asserts_each_check_again():
    r = kselftest.run_case(_case(differs), None)
    with pytest.raises(AssertionError, match=r"(?s)differs: returned.*expected 0.*actual   -1"):
        assert_case(r)
    # a result that claims pass with a differing check still fails on the host
    with pytest.raises(AssertionError):
        assert_case({**r, "status": "pass"})
    with pytest.raises(pytest.skip.Exception, match="SYSTEM_OFF2 absent"):
        assert_case({"name": "x", "status": "skip", "reason": "SYSTEM_OFF2 absent"})
    with pytest.raises(pytest.fail.Exception, match="vCPU state"):
        assert_case(kselftest.run_case(_case(hangs), None))
    with pytest.raises(AssertionError, match="recorded no check"):
        assert_case({"name": "x", "status": "pass", "checks": []})


def test_a_mismatch_before_a_skip_fails_the_case():
    """Evidence recorded before a Skip is not discarded: guest side and host side."""
    from harness.plugin.suite import assert_case

    def case(t):
        t.expect("FEATURES(SYSTEM_SUSPEND) with the cap", -1, 0)
        raise kselftest.Skip("PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent")
    r = kselftest.run_case(kselftest.Case("c", "fam", case, "doc"), env=None)
    assert r["status"] == "fail" and "then skipped" in r["reason"], r
    with pytest.raises(AssertionError, match=r"(?s)with the cap.*expected 0.*actual   -1"):
        assert_case(r)
    r.update(status="skip", reason="absent")          # a host that got a skip anyway
    with pytest.raises(AssertionError, match="expected 0"):
        assert_case(r)


def test_a_clean_skip_skips():
    from harness.plugin.suite import assert_case

    def case(t):
        t.expect("probe", 1, 1)
        raise kselftest.Skip("no /dev/kvm")
    r = kselftest.run_case(kselftest.Case("c", "fam", case, "doc"), env=None)
    assert (r["status"], r["reason"]) == ("skip", "no /dev/kvm")
    with pytest.raises(pytest.skip.Exception, match="no /dev/kvm"):
        assert_case(r)
