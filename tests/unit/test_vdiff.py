"""benchmarks/vdiff.py: the junit id -> outcome diff that verdict-keeping changes are held to."""

from pathlib import Path

import benchmark_module

GOLDEN = Path(__file__).parent / "golden" / "vdiff"


def _vdiff():
    return benchmark_module.load("vdiff")


def test_outcomes_are_read_as_pytest_wrote_them():
    v = _vdiff().verdicts(GOLDEN / "before.xml")
    assert v == {
        "tests.e2e.test_psci::test_psci[vhe-debian:7.2/arm64-system_off2_exits]": "PASS",
        "tests.e2e.test_psci::test_psci[vhe-debian:6.12/arm64-system_off2_exits]": "SKIP",
        "tests.e2e.test_s3::test_s3_twice[debian:7.2/x86_64]": "XFAIL",
        "tests.e2e.test_boot::test_boots[debian:7.2/x86_64]": "FAIL",
        "tests.e2e.test_boot::test_gone[debian:7.2/x86_64]": "PASS",
    }


def test_a_teardown_error_beside_a_pass_is_an_error():
    assert _vdiff().verdicts(GOLDEN / "after.xml")[
        "tests.e2e.test_boot::test_boots[debian:7.2/x86_64]"] == "ERROR"


def test_only_outcome_changes_and_one_sided_ids_differ(capsys):
    m = _vdiff()
    assert m.main([str(GOLDEN / "before.xml"), str(GOLDEN / "after.xml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "FAIL   -> ERROR  tests.e2e.test_boot::test_boots[debian:7.2/x86_64]",
        "PASS   -> -      tests.e2e.test_boot::test_gone[debian:7.2/x86_64]",
        "-      -> PASS   tests.e2e.test_boot::test_new[debian:7.2/x86_64]",
        "4 common ids, 3 differ (5 before, 5 after)",
    ]


def test_same_file_differs_nowhere_and_bad_input_is_2(tmp_path):
    m = _vdiff()
    assert m.main([str(GOLDEN / "before.xml"), str(GOLDEN / "before.xml")]) == 0
    assert m.main([str(GOLDEN / "before.xml"), str(tmp_path / "missing.xml")]) == 2
