"""The waits that used more than half their bound are recorded (results/waits.jsonl),
named, with what they used: benchmarks/load.py reads them."""

import json
import time

import pytest

from harness import wait
from harness.errors import WaitTimeout


@pytest.fixture
def waits(tmp_path, monkeypatch):
    path = tmp_path / "waits.jsonl"
    monkeypatch.setenv(wait.WAITS_ENV, str(path))
    return lambda: [json.loads(ln) for ln in path.read_text().splitlines()] \
        if path.exists() else []


def after(seconds: float):
    t = time.monotonic() + seconds
    return lambda: time.monotonic() >= t


def test_a_wait_well_within_its_bound_leaves_no_line(waits):
    wait.wait_until(lambda: True, 10, "x")
    wait.wait_until(after(0.05), 10, "y", interval=0.01)
    assert waits() == []


def test_a_wait_past_half_its_bound_is_a_line_naming_it(waits):
    wait.wait_until(after(0.3), 0.4, "the guest's 'guestpm: ready' line", interval=0.01)
    [rec] = waits()
    assert rec["what"] == "the guest's 'guestpm: ready' line" and rec["met"] is True
    assert rec["bound_s"] == 0.4 and 0.3 <= rec["used_s"] < 0.4 and rec["share"] > 0.5
    assert rec["test"] == "tests/unit/test_wait_records.py::" \
                          "test_a_wait_past_half_its_bound_is_a_line_naming_it"     # no " (call)"
    assert rec["where"].startswith("test_wait_records.py:")


def test_a_timeout_is_a_line_too(waits):
    with pytest.raises(WaitTimeout):
        wait.wait_until(lambda: None, 0.1, "QMP WAKEUP", interval=0.02)
    assert wait.within(lambda: None, 0.1, interval=0.02) is None     # unnamed: its caller
    recs = waits()
    assert [(r["what"], r["met"]) for r in recs] == [
        ("QMP WAKEUP", False),
        (recs[1]["where"], False)]
    assert "test_a_timeout_is_a_line_too" in recs[1]["what"]


def test_a_wait_ended_by_its_watchdog_is_recorded_when_it_came_close(waits):
    start = time.monotonic()

    def watchdog():
        if time.monotonic() - start > 0.3:
            raise RuntimeError("QEMU exited")
    with pytest.raises(RuntimeError):
        wait.wait_until(lambda: None, 0.4, "ssh", watchdog, interval=0.01)
    assert [(r["what"], r["met"]) for r in waits()] == [("ssh", False)]


def test_without_a_file_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(wait.WAITS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WaitTimeout):
        wait.wait_until(lambda: None, 0.05, "x", interval=0.01)
    assert list(tmp_path.iterdir()) == []


def test_record_close_calls_sets_and_clears_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(wait.WAITS_ENV, raising=False)
    wait.record_close_calls(tmp_path / "w.jsonl")
    assert wait.os.environ[wait.WAITS_ENV] == str(tmp_path / "w.jsonl")
    wait.record_close_calls(None)
    assert wait.WAITS_ENV not in wait.os.environ
