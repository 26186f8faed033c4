"""The bisect driver's verdict mapping (golden verdict records from real pytest runs)
and its refusals, on tiny git repositories that look like kernel trees."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.kernel import bisect
from harness.results import verdicts

G = Path(__file__).parent / "golden" / "bisect"
EXPECTED = json.loads((G / "expected.json").read_text())


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_record_outcomes_map_to_git_bisect_exit_codes(kind):
    outcome = bisect.outcome_of(verdicts.loads((G / f"{kind}.jsonl").read_text()))
    rc = 1 if outcome.failed or outcome.setup_errors else 0
    assert list(bisect.verdict(outcome, rc)) == EXPECTED[kind]


CAP = "test_x::test_psci[system_suspend_features_with_the_cap]"


@pytest.mark.parametrize("kind,code,word", [
    ("pass", 0, "PASS"), ("fail", 1, "FAIL"), ("xfail", 125, "XFAIL"),
    ("setup_error", 128, "ABORT"), ("boot_error", 125, "ERROR")])
def test_a_compare_row_as_the_bisect_test(kind, code, word):
    """--change TEST PASS FAIL: good where it PASSes, bad where it FAILs, skip otherwise."""
    rec = verdicts.loads((G / f"{kind}.jsonl").read_text())
    got = bisect.change_verdict(rec, 1, CAP, "PASS", "FAIL")
    assert got[:2] == (code, word), got
    if kind == "fail":
        assert got[2] == (f"{CAP}: FAIL (system_suspend_features_with_the_cap: "
                          "PSCI_FEATURES(0x8400000e), cap on: expected 0, actual -1)")


def test_a_compare_row_not_judged_or_not_run():
    rec = verdicts.loads((G / "pass.jsonl").read_text())
    assert bisect.change_verdict(rec, 0, "test_x::test_other", "PASS", "FAIL")[0] == 125
    assert bisect.change_verdict(None, 3, CAP, "PASS", "FAIL")[0] == 128
    assert bisect.change_verdict(rec, 5, CAP, "PASS", "FAIL")[0] == 128
    assert bisect.selector_of("test_psci::test_psci[vhe-system_off2_features]") == \
        ["tests/e2e/test_psci.py::test_psci"]


def test_bisect_refuses_a_change_that_is_none(fake_tree):
    with pytest.raises(bisect.BisectError, match="two different outcomes"):
        bisect.main(_args(fake_tree, selector=[], change=(CAP, "PASS", "PASSED")), print)
    with pytest.raises(bisect.BisectError, match="no tests: give pytest arguments"):
        bisect.main(_args(fake_tree, selector=[]), print)


@pytest.mark.parametrize("rc, code", [(5, 128), (2, 128), (3, 128), (4, 128)])
def test_pytest_that_could_not_judge_aborts_the_bisect(rc, code):
    assert bisect.verdict(bisect.Outcome(), rc)[0] == code


def test_first_bad_commit_is_read_from_git_bisect_output():
    out = ("Bisecting: 0 revisions left to test after this (roughly 0 steps)\n"
           "guestpm bisect: [3] 1a2b3c FAIL: ... -> bad (1)\n"
           "9f3e1c2d4b5a69788796a5b4c3d2e1f0a9b8c7d6 is the first bad commit\n"
           "commit 9f3e1c2d4b5a69788796a5b4c3d2e1f0a9b8c7d6\n")
    assert bisect.first_bad(out) == "9f3e1c2d4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    assert bisect.first_bad("There are only 'skip'ped commits left to test.\n") is None


# ---------------------------------------------------------------- refusals

def _git(tree: Path, *a: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *a], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    """Enough of a kernel tree for the checks, with two commits."""
    t = tmp_path / "linux"
    (t / "scripts/kconfig").mkdir(parents=True)
    (t / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 0\n")
    (t / "Kconfig").write_text("config X\n\tbool\n")
    (t / "scripts/kconfig/merge_config.sh").write_text("#!/bin/sh\n")
    _git(t.parent, "init", "-q", str(t))
    for n in (1, 2):
        (t / "file.c").write_text(f"int v = {n};\n")
        _git(t, "add", "-A")
        _git(t, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{n}")
    return t


def _args(tree: Path, **kw) -> bisect.Request:
    base = dict(tree=tree, arch="arm64", good="HEAD~1", bad="HEAD", ccache=False,
                logs=tree.parent / "logs", selector=["tests/e2e/test_psci.py"])
    base.update(kw)
    return bisect.Request(**base)


def _unchanged(tree: Path, head: str) -> None:
    assert _git(tree, "rev-parse", "HEAD") == head
    assert _git(tree, "symbolic-ref", "HEAD").endswith(("/master", "/main"))
    assert not (tree / ".git" / "BISECT_START").exists()


def test_bisect_refuses_a_dirty_tree_and_leaves_it_alone(fake_tree):
    head = _git(fake_tree, "rev-parse", "HEAD")
    (fake_tree / "file.c").write_text("int v = 99;\n")
    with pytest.raises(bisect.BisectError, match=r"uncommitted changes to tracked files "
                                                 r"\(file.c\).*commit or stash"):
        bisect.main(_args(fake_tree), print)
    _unchanged(fake_tree, head)
    assert (fake_tree / "file.c").read_text() == "int v = 99;\n"


def test_bisect_refuses_a_tree_mid_bisect(fake_tree):
    _git(fake_tree, "bisect", "start")
    with pytest.raises(bisect.BisectError, match="already in progress.*git bisect reset"):
        bisect.main(_args(fake_tree), print)


def test_bisect_refuses_what_is_not_a_kernel_tree(tmp_path, fake_tree):
    with pytest.raises(bisect.build.BuildError, match="is not a Linux kernel tree"):
        bisect.main(_args(tmp_path), print)
    (fake_tree / ".git").rename(fake_tree / ".git-away")
    with pytest.raises(bisect.BisectError, match="not a git repository"):
        bisect.main(_args(fake_tree), print)


def test_bisect_refuses_unknown_revisions(fake_tree):
    with pytest.raises(bisect.BisectError, match="'v0.0' is not a commit"):
        bisect.main(_args(fake_tree, good="v0.0"), print)
