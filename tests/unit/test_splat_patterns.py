"""Kernel splat detection (harness/vm/splats.py) on golden kernel logs."""

import re
from pathlib import Path

from harness.vm import splats
from harness.vm.console import FATAL

GOLDEN = Path(__file__).parent / "golden" / "splats"


def found(name: str, fatal=FATAL) -> list[splats.Splat]:
    return splats.scan((GOLDEN / name).read_text(), "console", GOLDEN / name, fatal)


def test_titles_are_anchored_on_the_record_format():
    kinds = [(s.kind, s.line) for s in found("misc.txt")]
    # not: a shell's own "WARNING:", an echo of a title, a record with WARNING mid-line
    assert kinds == [("atomic", 8), ("hung-task", 10), ("rcu-stall", 12),
                     ("soft-lockup", 14), ("kfence", 15), ("workqueue-lockup", 16)]


def test_a_splat_after_a_crash_is_the_crash_s_report():
    """The L2 6.12 trans_pgd oops (a real console): its WARNING in ktime_get follows the
    Oops and is not a second defect; without the crash check it would be one."""
    assert found("l2-6.12-arm64-trans-pgd-crash.txt") == []
    alone = found("l2-6.12-arm64-trans-pgd-crash.txt", fatal=None)
    assert [(s.kind, s.line) for s in alone] == [("warning", 84)]
    assert alone[0].trace()[:2] == ["ktime_get+0xbc/0xe0", "tick_nohz_idle_enter+0x58/0xa0"]


def test_ubsan_5_10_title_and_its_banner_ends_it():
    (s,) = found("ubsan-5.10.txt")
    assert s.kind == "ubsan" and s.title.startswith("UBSAN: Undefined behaviour in drivers/")
    assert s.trace() == ["dump_stack+0x6b/0x83", "ubsan_epilogue+0x5/0x40",
                         "example_probe+0x51/0x60"]
    assert s.lines[-1].endswith("=" * 80)


def test_quote_names_title_trace_and_log_line():
    (s,) = found("ubsan-5.10.txt")
    q = s.quote()
    assert q.splitlines()[0] == (f"kernel splat (ubsan) at [3.101011] on the console, "
                                 f"{GOLDEN / 'ubsan-5.10.txt'}:2")
    assert "    example_probe+0x51/0x60" in q


def test_the_same_record_read_twice_is_one_splat():
    log = splats.SplatLog("7.2.13+deb14-amd64", "x86_64")
    text = (GOLDEN / "ubsan-5.10.txt").read_text()
    assert len(log.scan(text, "console", "a")) == 1
    assert log.scan(text, "dmesg over ssh", "b") == []      # dmesg shows it again
    assert len(log.claim()) == 1 and log.claim() == [] and len(log) == 1


def test_allowances_match_kind_title_release_and_profile():
    a = splats.Allowance("rcu-stall", r"rcu_preempt", r"6\.1\.", r"arm64",
                         "a stall under TCG", "an example")
    log = splats.SplatLog("6.1.0-50-arm64", "arm64", allowed=(a,))
    got = log.scan((GOLDEN / "misc.txt").read_text(), "console", "x")
    assert [s.kind for s in got if s.allowed] == ["rcu-stall"]
    other = splats.SplatLog("7.2.13+deb14-arm64", "arm64", allowed=(a,))
    assert not any(s.allowed for s in other.scan((GOLDEN / "misc.txt").read_text(),
                                                 "console", "x"))


def test_every_allowance_names_its_written_up_defect():
    doc = (Path(__file__).parents[2] / "docs" / "known-defects.md").read_text()
    for a in splats.ALLOWED:
        assert a.symptom and "docs/known-defects.md" in a.reason
        assert all(f in doc for f in re.findall(r"\w{12,}", a.title)), a.title


def test_the_6_12_nvhe_kvm_warnings_are_allowed_only_on_that_host():
    """The debian:6.12 arm64 L1 host in nVHE mode (docs/known-defects.md)."""
    text = (GOLDEN / "kvm-nvhe-6.12-arm64.txt").read_text()
    nvhe = splats.SplatLog("6.12.117+deb13-arm64", "arm64", cmdline="kvm-arm.mode=nvhe")
    got = nvhe.scan(text, "console", "x")
    assert [s.kind for s in got] == ["warning", "warning"] and all(s.allowed for s in got)
    for release, cmdline in (("6.12.117+deb13-arm64", ""),              # VHE: not allowed
                             ("7.2.13+deb14-arm64", "kvm-arm.mode=nvhe"),
                             ("6.1.0-50-arm64", "kvm-arm.mode=nvhe")):
        log = splats.SplatLog(release, "arm64", cmdline=cmdline)
        assert not any(s.allowed for s in log.scan(text, "console", "x")), (release, cmdline)
    other = text.replace("mark_page_dirty_in_slot", "kvm_other_fn").replace(
        "kvm_arch_timer_get_input_level", "kvm_other_fn")
    assert not any(s.allowed for s in splats.SplatLog(
        "6.12.117+deb13-arm64", "arm64", cmdline="kvm-arm.mode=nvhe").scan(other, "c", "x"))


def test_7_2_warning_format():
    """7.2 moved the CPU and task to the end of the line (kernel/panic.c); a real
    WARN_ON of tests/fixtures/splat on debian:7.2 arm64."""
    (s,) = found("warn-7.2-arm64.txt")
    assert s.kind == "warning" and s.line == 3
    assert s.title == ("WARNING: guestpm_splat.c:35 at splat_warn+0x8/0x18 [guestpm_splat], "
                       "CPU#1: sh/136")
    assert s.trace()[:2] == ["splat_warn+0x8/0x18 [guestpm_splat] (P)",
                             "trigger_write+0xbc/0x198 [guestpm_splat]"]
    assert s.lines[-1].endswith("---[ end trace 0000000000000000 ]---")
    for older in ("WARNING: CPU: 0 PID: 1 at drivers/x.c:12 f+0x1/0x2",
                  "WARNING: at f+0x1/0x2, CPU#0: swapper/0/1"):
        assert splats.classify(older)[0] == "warning"


def test_a_record_after_a_shell_prompt_is_still_a_record():
    """The serial console interleaves: "# " then the kernel's record on one line."""
    (s,) = splats.scan("# [   11.401391] WARNING: guestpm_splat.c:35 at splat_warn+0x8/0x18 "
                       "[guestpm_splat], CPU#1: sh/136\n", "console", "c")
    assert s.timestamp == "11.401391" and s.title.startswith("WARNING: guestpm_splat.c:35")
    assert splats.scan("echo x[1.5] WARNING: CPU: 0 PID: 1 at a.c:1\n", "console", "c") == []


def test_a_lockdep_report_quotes_its_locks_and_the_code_not_dump_stack():
    """A real report: tests/fixtures/splat's lockdep case on a --fragment debug build."""
    (s,) = found("lockdep-7.2-arm64-debug.txt")
    assert s.kind == "lockdep" and s.title == "WARNING: possible circular locking " \
                                             "dependency detected"
    q = s.quote().splitlines()
    assert q[2:6] == [
        "  sh/77 is trying to acquire lock:",
        "  ffff800079742080 (guestpm_lock_a){+.+.}-{4:4}, at: splat_lockdep+0x58/0x74 "
        "[guestpm_splat]",
        "  but task is already holding lock:",
        "  ffff800079742108 (guestpm_lock_b){+.+.}-{4:4}, at: splat_lockdep+0x4c/0x74 "
        "[guestpm_splat]"]
    assert q[6:8] == ["  Call trace:", "    __mutex_lock+0xa0/0x858"]


def test_a_kasan_report_quotes_the_access_and_the_faulting_code():
    """A real report: tests/fixtures/splat's kasan case on a --fragment kasan build."""
    (s,) = found("kasan-7.2-arm64-kasan.txt")
    assert s.kind == "kasan"
    assert s.title == "BUG: KASAN: slab-out-of-bounds in splat_kasan+0xa8/0xb0 [guestpm_splat]"
    q = s.quote().splitlines()
    assert q[2] == "  Read of size 1 at addr fff0000006dcd9d0 by task sh/78"
    assert q[3:5] == ["  Call trace:", "    splat_kasan+0xa8/0xb0 [guestpm_splat]"]
    assert s.lines[-1].endswith("=" * 66)        # the report's closing banner ends it
