from pathlib import Path

from harness.plugin import ktap

GOLDEN = Path(__file__).parent / "golden"


def test_render_golden():
    groups = {
        "debian:6.1/arm64": [
            ktap.Result("test_psci::test_off2", "skipped", "PSCI version 1.1 < 1.3: SYSTEM_OFF2 absent"),
            ktap.Result("test_boot::test_uname", "passed"),
        ],
        "debian:7.2/x86_64": [
            ktap.Result("test_s3::test_q35_second_cycle", "xfailed", "q35 PMBASE lost after S3 #1"),
            ktap.Result("test_boot::test_kvm", "failed", "assert 11 == 12\nmore"),
            ktap.Result("test_boot::test_setup", "error", ""),
        ],
    }
    assert ktap.render(groups) == (GOLDEN / "render.ktap").read_text()


def test_group_outcome():
    assert ktap.group_outcome([ktap.Result("a", "skipped")]) == "skipped"
    assert ktap.group_outcome([ktap.Result("a", "skipped"), ktap.Result("b", "passed")]) == "passed"
    assert ktap.group_outcome([ktap.Result("a", "xpassed")]) == "failed"
