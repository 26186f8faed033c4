"""benchmarks/load.py's reading of two runs (idle, loaded): the verdicts that changed and
the waits that came close to their bound, from recorded junit.xml and waits.jsonl."""

import os
import runpy
from pathlib import Path
from types import SimpleNamespace

GOLDEN = Path(__file__).parent / "golden" / "load"
SCRIPT = Path(__file__).parents[2] / "benchmarks" / "load.py"


def _load() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="bench_load"))


def test_verdicts_read_xfail_apart_from_skip_and_the_worse_of_two_entries():
    v = _load().verdicts(GOLDEN / "loaded" / "junit.xml")
    assert v == {
        "tests.e2e.test_s2idle::test_s2idle_wakes_by[debian:6.12/arm64-console]": "PASS",
        "tests.e2e.test_s2idle::test_s2idle_wakes_by[debian:6.12/arm64-rtc]": "ERROR",
        "tests.e2e.test_psci::test_psci[debian:6.12/arm64-nvhe--system_off2_features_report_"
        "hibernate_off]": "SKIP",
        "tests.e2e.test_hibernate::test_hibernate_round_trip[debian:6.12/arm64]": "ERROR",
    }


def test_only_changed_verdicts_are_listed_and_a_missing_side_is_a_dash():
    load = _load()
    assert load.changed({"a": "PASS", "b": "SKIP"}, {"a": "PASS", "b": "FAIL", "c": "PASS"}) \
        == [("b", "SKIP", "FAIL"), ("c", "-", "PASS")]


def test_close_calls_are_grouped_by_name_worst_first():
    load = _load()
    rows = load.close_calls({"idle": [], "loaded": load.read_waits(GOLDEN / "loaded" /
                                                                    "waits.jsonl")})
    ready = next(r for r in rows if r["what"] == "the guest's 'guestpm: ready' line")
    assert ready["loaded"] == {"n": 2, "share": 1.0, "ran_out": 1}
    assert ready["idle"] == {"n": 0, "share": 0.0, "ran_out": 0}
    assert rows[-1]["what"] == "ssh"


def test_the_report_of_two_recorded_runs():
    assert _load().report(GOLDEN) == (GOLDEN / "load.md").read_text()


def test_the_load_is_our_own_processes_and_dies_with_stop_load():
    load = _load()
    procs = load.start_load("spin")
    try:
        assert len(procs) == (os.cpu_count() or 1) and all(p.poll() is None for p in procs)
    finally:
        load.stop_load(procs)
    assert all(p.poll() is not None for p in procs)
