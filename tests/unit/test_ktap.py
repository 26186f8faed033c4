from pathlib import Path

from harness.plugin import ktap
from harness.results.verdicts import Verdict as R

GOLDEN = Path(__file__).parent / "golden"


def test_render_golden():
    groups = {
        "debian:6.1/arm64": [
            R("test_psci::test_off2", "SKIP", reason="PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent"),
            R("test_boot::test_uname", "PASS"),
        ],
        "debian:7.2/x86_64": [
            R("test_s3::test_q35_second_cycle", "XFAIL", reason="q35 PMBASE lost after S3 #1"),
            R("test_boot::test_kvm", "FAIL", reason="assert 11 == 12\nmore"),
            R("test_boot::test_setup", "ERROR", reason=""),
        ],
    }
    assert ktap.render(groups) == (GOLDEN / "render.ktap").read_text()


def test_group_outcome():
    assert ktap.group_outcome([R("a", "SKIP")]) == "SKIP"
    assert ktap.group_outcome([R("a", "SKIP"), R("b", "PASS")]) == "PASS"
    assert ktap.group_outcome([R("a", "XPASS")]) == "FAIL"
