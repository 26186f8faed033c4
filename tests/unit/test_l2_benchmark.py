"""benchmarks/l2.py's reading of a finished run: where an L2 scenario's time goes."""

import importlib.util
import json
from pathlib import Path


def test_an_l2_round_trip_breaks_down_into_its_phases():
    """The debian:7.2 arm64 VHE host's first hibernation round trip, as a run records
    it, read by benchmarks/l2.py --results."""
    spec = importlib.util.spec_from_file_location(
        "bench_l2", Path(__file__).parents[2] / "benchmarks" / "l2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    golden = Path(__file__).parent / "golden" / "l2" / "hibernate-7.2-vhe.json"
    b = mod.breakdown(json.loads(golden.read_text()))
    assert b == {"ram_mib": 512, "l2_boot": 69.5, "l2_uptime": 21.26, "scenario": 11.2,
                 "write": 41.4, "relaunch": 32.9, "read": 40.9, "console_exits": 9382,
                 "whole": 198.2}
