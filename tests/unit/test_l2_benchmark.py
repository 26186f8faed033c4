"""benchmarks/l2.py's reading of a finished run: where an L2 scenario's time goes."""

import importlib.util
import json
from pathlib import Path


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_l2", Path(__file__).parents[2] / "benchmarks" / "l2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_l2_round_trip_breaks_down_into_its_phases():
    """The debian:7.2 arm64 VHE host's first hibernation round trip, as a run records
    it, read by benchmarks/l2.py --results."""
    mod = _bench()
    golden = Path(__file__).parent / "golden" / "l2" / "hibernate-7.2-vhe.json"
    b = mod.breakdown(json.loads(golden.read_text()))
    assert b == {"ram_mib": 512, "l2_boot": 69.5, "l2_uptime": 21.26, "before_clock": 48.2,
                 "scenario": 11.2,
                 "write": 41.4, "relaunch": 32.9, "read": 40.9, "console_exits": 9382,
                 "whole": 198.2}


def test_the_time_before_the_l2_clock_is_summed_up_per_l1_host():
    rows = [(f"debian-{h}-arm64-l2-{m}-gw0-1", "l2-x-0-deny", {"before_clock": v}, None)
            for h, m, v in (("7.2", "vhe", 12.0), ("7.2", "nvhe", 9.0), ("7.2", "vhe", 15.0),
                            ("6.1", "vhe", 3.0))]
    rows.append(("debian-6.1-arm64-l2-vhe-gw0-2", "l2-vhe-0-off", {"before_clock": None}, None))
    assert _bench().before_clock_by_host(rows) == {"debian-6.1-arm64": (3.0, 1),
                                                    "debian-7.2-arm64": (12.0, 3)}
