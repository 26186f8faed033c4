"""The verdict record: a real pytest run writes it beside pytest's JUnit file and the
two agree id for id; run directories never overwrite each other; bad input before any
test leaves the results directory as it was."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.results import runs, verdicts

ROOT = Path(__file__).resolve().parents[2]

INNER = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_pass():
    pass

def test_info(request):
    request.node.user_properties += [("info", "note one"), ("info", "note two")]

def test_fail():
    assert 1 == 2, "one is not two"

def test_check():
    assert -1 == 0, ("case_x: PSCI_FEATURES(SYSTEM_OFF2)\\n  expected 0\\n  actual   -1\\n"
                     "  (doc)")

def test_skip():
    pytest.skip("kernel 6.1 lacks CONFIG_FOO")

@pytest.mark.xfail(reason="a known defect")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="a known defect, fixed")
def test_xpass():
    pass

def test_error(broken):
    pass

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1
'''


@pytest.fixture(scope="module")
def inner_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("inner")
    (tmp / "test_inner.py").write_text(INNER)
    (tmp / "results").mkdir()
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_inner.py", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp),
                           f"--results={tmp / 'results'}"], cwd=tmp, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return tmp, runs.resolve(tmp / "results")


def _junit(path: Path) -> dict[str, str]:
    """nodeid -> outcome, as pytest's JUnit file says it."""
    out = {}
    for case in ET.parse(path).iter("testcase"):
        nodeid = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
        tags = {c.tag: c for c in case}
        if "error" in tags:
            out[nodeid] = "ERROR"
        elif "failure" in tags:
            out[nodeid] = "FAIL"
        elif "skipped" in tags:
            out[nodeid] = "XFAIL" if tags["skipped"].get("type") == "pytest.xfail" else "SKIP"
        else:
            out[nodeid] = "PASS"       # an XPASS too: JUnit has no word for it
    return out


def test_record_and_junit_agree_id_for_id(inner_run):
    tmp, run = inner_run
    assert run.parent == tmp / "results" and (run / "junit.xml").is_file()
    rec = verdicts.read(run)
    mine = {v.nodeid: v.outcome for v in rec.verdicts}
    junit = _junit(run / "junit.xml")
    assert set(mine) == set(junit)
    assert {n: ("PASS" if o == "XPASS" else o) for n, o in mine.items()} == junit
    assert mine == {
        "test_inner.py::test_pass": "PASS", "test_inner.py::test_fail": "FAIL",
        "test_inner.py::test_check": "FAIL", "test_inner.py::test_skip": "SKIP",
        "test_inner.py::test_xfail": "XFAIL", "test_inner.py::test_xpass": "XPASS",
        "test_inner.py::test_error": "ERROR", "test_inner.py::test_teardown_error": "ERROR",
        "test_inner.py::test_param[1]": "PASS", "test_inner.py::test_param[2]": "FAIL",
        "test_inner.py::test_info": "PASS"}


def test_record_fields(inner_run):
    _, run = inner_run
    rec = verdicts.read(run)
    by = {v.nodeid.split("::")[1]: v for v in rec.verdicts}
    assert by["test_skip"].reason == "kernel 6.1 lacks CONFIG_FOO"
    assert by["test_xfail"].reason == "a known defect"
    assert "one is not two" in by["test_fail"].reason
    assert by["test_teardown_error"].reason.startswith("teardown: ")
    assert by["test_check"].check == {"case": "case_x", "what": "PSCI_FEATURES(SYSTEM_OFF2)",
                                      "expected": "0", "actual": "-1"}
    assert by["test_param[2]"].test == "test_inner::test_param[2]"
    assert all(v.duration >= 0 and v.kind == "kernel" and not v.kernel for v in rec.verdicts)
    assert rec.header.accel == "tcg" and rec.header.guestpm and rec.header.host
    # the KTAP file and the matrix come from the same record
    ktap = (run / "guestpm.ktap").read_text()
    assert by["test_info"].info == ("note one", "note two")
    assert "  ok 8 test_inner::test_skip # SKIP kernel 6.1 lacks CONFIG_FOO" in ktap
    assert "FAIL 3/11" in (run / "summary.md").read_text()


def test_runs_never_share_a_directory(tmp_path):
    now = datetime.datetime(2026, 12, 3, 12, 0, 0)
    a = runs.new_run(tmp_path, now)
    (a / "verdicts.jsonl").write_text("{}")
    b = runs.new_run(tmp_path, now)
    assert a != b and b.name == "20261203-120000-2" and (a / "verdicts.jsonl").exists()
    assert runs.latest(tmp_path) == b and os.readlink(tmp_path / "latest") == b.name
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.name, b.name, "latest"]


def test_resolve_a_run_or_its_parent(tmp_path):
    run = runs.new_run(tmp_path)
    with pytest.raises(verdicts.RecordError, match="has no verdicts.jsonl"):
        runs.resolve(tmp_path)              # latest is a run still going
    (run / verdicts.FILE).write_text('{"header": {"schema": 1}}\n')
    assert runs.resolve(tmp_path) == run and runs.resolve(run) == run
    with pytest.raises(verdicts.RecordError, match="no such results directory"):
        runs.resolve(tmp_path / "nope")


def test_bad_input_before_any_test_touches_nothing(tmp_path):
    """An unknown kernel spec: exit 2, one line, and the results directory (with an
    earlier run and its `latest`) exactly as it was."""
    res = tmp_path / "results"
    old = res / "20261203-110000"
    old.mkdir(parents=True)
    (old / verdicts.FILE).write_text('{"header": {"schema": 1}}\n')
    (res / "latest").symlink_to(old.name)
    before = {p: (p.lstat().st_mtime_ns, p.is_symlink()) for p in res.rglob("*")}
    for argv in (["-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", "-q"],
                 ["-m", "harness.cli", "run"]):
        proc = subprocess.run([sys.executable, *argv, "--kernel=debian:woody", "--arch=arm64",
                               f"--results={res}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "unknown kernel" in proc.stdout + proc.stderr or \
            "debian:woody" in proc.stdout + proc.stderr
        assert {p: (p.lstat().st_mtime_ns, p.is_symlink()) for p in res.rglob("*")} == before
        assert res.stat().st_mtime_ns == tmp_path.joinpath("results").stat().st_mtime_ns


def test_the_last_runs_durations_for_the_scheduler(inner_run, tmp_path):
    _, run = inner_run
    got = verdicts.durations(run)
    assert set(got) <= {v.nodeid for v in verdicts.read(run).verdicts}
    assert "test_inner.py::test_pass" in got and all(s > 0 for s in got.values())
    # no earlier run, or a directory that is not one: nothing measured, no error
    assert verdicts.durations(None) == {} and verdicts.durations(tmp_path) == {}
