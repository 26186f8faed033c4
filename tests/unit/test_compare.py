"""`guestpm compare` on golden verdict records (tests/unit/golden/compare: a 6.12 base
and a 7.2 "patched" run, one test per kind of change): the grouping, the exit status,
flake confirmation with a fake runner, and bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import compare, verdicts

G = Path(__file__).parent / "golden" / "compare"
ROOT = Path(__file__).resolve().parents[2]


def records():
    return verdicts.read(G / "base"), verdicts.read(G / "patched")


def groups(cmp: compare.Comparison) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in cmp.rows:
        out.setdefault(r.group + (" (flaky)" if r.status == "flaky" else ""), []).append(r.test)
    return out


def test_grouping_is_by_outcome():
    cmp = compare.compare(*records())
    assert groups(cmp) == {
        compare.REGRESSION: ["test_psci::test_kvm_runs_in_the_requested_mode[nvhe]",
                             "test_psci::test_psci[vhe-system_suspend_features_with_the_cap]"],
        compare.FIX: ["test_hibernate::test_resume"],
        compare.SKIP_PASS: ["test_psci::test_psci[vhe-system_off2_features_report_hibernate_off]"],
        compare.OTHER: ["test_known::test_defect",
                        "test_psci::test_psci[vhe-system_reset_exits_reset]"],
        compare.ONE_SIDE: ["test_l2::test_only_on_base[vhe-guest=same]",
                           "test_l2::test_only_on_patched[vhe-guest=same]"],
        compare.SPLATS: ["test_splats::test_quiet"],
    }
    # a SKIP whose reason changed with the release is no change; guestpm's own tests
    # (no kernel) are not the patch's
    tests = {r.test for r in cmp.rows}
    assert "test_s3::test_s3_cycle" not in tests and "test_boot::test_ssh" not in tests
    assert not any("test_ktap" in t for t in tests)
    # the moved WARNING (other CPU, PID, offsets, line) is the same splat; lockdep is new
    assert [s["kind"] for s in cmp.group(compare.SPLATS)[0].splats] == ["lockdep"]


@pytest.mark.parametrize("base,patched,group", [
    ("PASS", "FAIL", compare.REGRESSION), ("PASS", "ERROR", compare.REGRESSION),
    ("PASS", "SKIP", compare.REGRESSION), ("FAIL", "SKIP", compare.REGRESSION),
    ("XFAIL", "FAIL", compare.REGRESSION), ("SKIP", "FAIL", compare.REGRESSION),
    ("FAIL", "PASS", compare.FIX), ("ERROR", "XFAIL", compare.FIX),
    ("SKIP", "PASS", compare.SKIP_PASS), ("SKIP", "XFAIL", compare.SKIP_PASS),
    ("PASS", "XFAIL", compare.OTHER), ("XFAIL", "XPASS", compare.OTHER),
    ("FAIL", "ERROR", compare.OTHER), ("SKIP", "SKIP", None), ("PASS", "PASS", None)])
def test_classify(base, patched, group):
    assert compare.classify(base, patched) == group


def test_the_table_golden():
    b, p = records()
    cmp = compare.compare(b, p, base_name="debian:6.12", patched_name="debian:7.2")
    text = compare.markdown(cmp, out_dir=G)
    assert text == (G / "compare.md").read_text()
    # a FAIL of an in-guest case shows its first differing check
    assert "system_suspend_features_with_the_cap: PSCI_FEATURES(SYSTEM_SUSPEND) with the " \
           "cap: expected 0, actual -1" in text


def test_exit_status_is_1_on_a_regression_only():
    b, p = records()
    assert compare.compare(b, p).exit_status() == 1
    fixed_only = verdicts.Record(p.header, [
        v if v.test != "test_psci::test_psci[vhe-system_suspend_features_with_the_cap]" and
        v.test != "test_psci::test_kvm_runs_in_the_requested_mode[nvhe]"
        else dataclasses.replace(v, outcome="PASS", reason="") for v in p.verdicts], p.path)
    cmp = compare.compare(b, fixed_only)
    assert not cmp.regressions() and cmp.group(compare.FIX) and cmp.exit_status() == 0


class FakeRunner:
    """Re-runs from a script: per re-run, test -> (base outcome, patched outcome); tests
    not named keep their recorded outcomes."""

    def __init__(self, cmp: compare.Comparison, script: list[dict]):
        self.cmp, self.script, self.calls = cmp, script, []

    def __call__(self, rows, i):
        self.calls.append(sorted(r.test for r in rows))
        b, p = [], []
        for r in rows:
            ob, op = self.script[i].get(r.test, (r.base.outcome, r.patched.outcome))
            b.append(dataclasses.replace(r.base, outcome=ob))
            p.append(dataclasses.replace(r.patched, outcome=op))
        return b, p


def test_confirm_tells_a_change_from_a_flake():
    b, p = records()
    cmp = compare.compare(b, p)
    reg = "test_psci::test_psci[vhe-system_suspend_features_with_the_cap]"
    mode = "test_psci::test_kvm_runs_in_the_requested_mode[nvhe]"
    runner = FakeRunner(cmp, [{}, {mode: ("PASS", "PASS")}, {}])
    compare.confirm(cmp, runner, 3)
    # every change is re-run, nothing else (one side only, splats: not changes)
    assert len(runner.calls) == 3 and runner.calls[0] == sorted(
        r.test for r in cmp.rows if r.group in compare.CHANGES)
    by = {r.test: r for r in cmp.rows if r.group in compare.CHANGES}
    assert by[reg].status == "confirmed" and by[reg].counts == \
        "held 3/3; base PASS 3; patched FAIL 3"
    assert by[mode].status == "flaky" and by[mode].counts == \
        "held 2/3; base PASS 3; patched SKIP 2, PASS 1"
    # the flaky regression is listed apart and does not set the exit status
    assert [r.test for r in cmp.regressions()] == [reg] and cmp.exit_status() == 1
    assert [r.test for r in cmp.flaky()] == [mode]
    text = compare.markdown(cmp)
    flaky = text[text.index("## flaky"):]
    assert mode in flaky and reg not in flaky


def test_confirm_a_flaky_regression_alone_exits_0():
    b, p = records()
    cmp = compare.compare(b, p)
    names = [r.test for r in cmp.regressions()]
    compare.confirm(cmp, FakeRunner(cmp, [{n: ("PASS", "PASS") for n in names}]), 1)
    assert not cmp.regressions() and cmp.exit_status() == 0


def test_a_missing_rerun_is_not_a_confirmation():
    b, p = records()
    cmp = compare.compare(b, p)
    compare.confirm(cmp, lambda rows, i: ([], []), 2)
    assert all(r.status == "flaky" and "missing 2" in r.counts
               for r in cmp.rows if r.group in compare.CHANGES)


def test_same_kernels_pair_by_kernel(tmp_path):
    """A↔B of one matrix (flake rate): every kernel against itself."""
    b, _ = records()
    other = verdicts.Record(b.header, [dataclasses.replace(v, outcome="FAIL")
                                       if v.test == "test_boot::test_ssh" else v
                                       for v in b.verdicts], b.path)
    cmp = compare.compare(b, other)
    assert [(r.group, r.test, r.where) for r in cmp.rows] == \
        [(compare.REGRESSION, "test_boot::test_ssh", "arm64 debian:6.12")]


# ---------------------------------------------------------------- bad input

def _write(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / verdicts.FILE).write_text(text)
    return d


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("not json\n", "is not a verdict record"),
    ('{"test": "t", "outcome": "PASS"}\n', "has no header line"),
    ('{"header": {"schema": 99}}\n', "is schema 99"),
    ('{"header": {"schema": 1}}\n{"test": "t", "outcome": "MAYBE"}\n', ":2: not a verdict line"),
])
def test_bad_records_are_refused_with_one_line(tmp_path, text, message):
    with pytest.raises(verdicts.RecordError, match=message) as e:
        verdicts.read(_write(tmp_path / "r", text))
    assert "\n" not in str(e.value)


def test_kernels_that_do_not_pair_are_refused():
    b, p = records()
    both = verdicts.Record(b.header, b.verdicts + p.verdicts)
    with pytest.raises(compare.CompareError, match="the same kernels on both sides, or one"):
        compare.compare(both, p)
    selftests = verdicts.Record(b.header, [v for v in b.verdicts if not v.kernel])
    with pytest.raises(compare.CompareError, match="the base side judged no kernel"):
        compare.compare(selftests, p)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args,message", [
    (["nosuch", "debian:7.2"], "nosuch: neither a results directory nor a kernel spec"),
    (["debian:7.2", "debian:7.2"], "debian:7.2 against itself: run it twice"),
    (["empty", "patched"], "is neither a run directory"),
    (["base", "patched", "--confirm", "-1"], "--confirm -1"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    shutil.copytree(G / "base", tmp_path / "base")
    shutil.copytree(G / "patched", tmp_path / "patched")
    (tmp_path / "empty").mkdir()
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guestpm: error: ") and message in lines[0]
    assert not (tmp_path / "results").exists()


def test_cli_on_two_directories_writes_compare_md_and_exits_1(tmp_path):
    """A parent with `latest` stands for a results directory."""
    shutil.copytree(G / "base", tmp_path / "r1" / "20261203-120000")
    (tmp_path / "r1" / "latest").symlink_to("20261203-120000")
    shutil.copytree(G / "patched", tmp_path / "patched")
    proc = _cli("r1", "patched", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    md = (tmp_path / "results" / "compare.md").read_text()
    assert md == proc.stdout and "**2 regressions**" in md
    back = _cli("patched", "patched", cwd=tmp_path)
    assert back.returncode == 0 and "Nothing changed." in back.stdout
    assert json.loads((G / "base" / verdicts.FILE).read_text().splitlines()[0])["header"]


def test_the_rerunner_runs_both_kernels_in_one_run(monkeypatch, tmp_path):
    """Each re-run: one pytest run of the changed tests' ids on both kernels; its record
    split back into the two sides."""
    from harness.errors import GuestpmError
    from harness.results import rerun
    b, p = records()
    cmp = compare.compare(b, p)
    calls = []

    def fake_run(specs, profiles, selection, parent, jobs=0, extra=()):
        calls.append((list(dict.fromkeys(specs)), profiles, selection, parent))
        return verdicts.Record(p.header, b.verdicts + p.verdicts)
    monkeypatch.setattr(rerun, "run_kernels", fake_run)
    checked = []
    rows = cmp.regressions()
    vb, vp = rerun.Rerunner(tmp_path, 2, check=lambda *a: checked.append(a))(rows, 0)
    assert checked == [(["debian:6.12", "debian:7.2"], ["arm64"])]   # before the first run
    specs, profiles, selection, parent = calls[0]
    assert specs == ["debian:6.12", "debian:7.2"] and profiles == ["arm64"]
    assert parent == tmp_path / "confirm"
    assert selection == [x for r in rows for x in (r.base.nodeid, r.patched.nodeid)]
    assert {v.kernel for v in vb} == {"debian:6.12"} and {v.kernel for v in vp} == {"debian:7.2"}

    def refuse(specs, profiles):
        raise GuestpmError("qemu-system-aarch64 not found")
    with pytest.raises(compare.CompareError, match="--confirm cannot re-run the records' "
                                                   "kernels: qemu-system-aarch64 not found"):
        rerun.Rerunner(tmp_path, 2, check=refuse)(rows, 0)


def test_cli_two_kernels_of_one_run_with_a_file_filter(tmp_path):
    """SPEC@DIR: the default run already judged both kernels; comparing them boots
    nothing.  Paths after -- keep the recorded sides' tests of those files."""
    b, p = records()
    run = tmp_path / "r" / "20261203-120000"
    run.mkdir(parents=True)
    (run / verdicts.FILE).write_text(verdicts.dumps(b.header, b.verdicts + p.verdicts))
    (tmp_path / "r" / "latest").symlink_to(run.name)
    proc = _cli("debian:6.12@r", "debian:7.2@r", "--arch", "arm64", "--", "tests/e2e/test_psci.py",
                cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| `")]
    assert rows and all(ln.startswith("| `test_psci::") for ln in rows), rows
    assert "## skip -> pass (1)" in proc.stdout and "## fixes" not in proc.stdout
    bad = _cli("debian:6.1@r", "debian:7.2@r", cwd=tmp_path)
    assert bad.returncode == 2 and "judged debian:6.12, debian:7.2, not debian:6.1" in bad.stderr
