"""The xdist work units below a target (harness/plugin/units.py) and benchmarks/schedule.py's
replay of a run through the scheduler."""

import importlib.util
import json
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

from harness.plugin.units import SECONDS_PER_TEST, estimate, pick, unit_of

IDS = ["debian:7.2/arm64", "debian:7.2/x86_64", "debian:6.12/arm64"]
L2S = "tests/e2e/test_l2_suspend.py::"
L2H = "tests/e2e/test_l2_hibernate.py::"


def _schedule():
    spec = importlib.util.spec_from_file_location(
        "bench_schedule", Path(__file__).parents[2] / "benchmarks" / "schedule.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod           # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_l2_tests_that_read_one_vmm_run_share_a_unit_per_mode():
    honour = unit_of(L2S + "test_l2_boots_and_sees_the_psci_version_l1_gave_it[vhe-debian:7.2/arm64]", IDS)
    cap = unit_of(L2S + "test_l2_offers_deep_only_with_the_cap[vhe-debian:7.2/arm64]", IDS)
    off = unit_of(L2S + "test_l2_without_the_cap_takes_s2idle_and_no_suspend_exit[vhe-debian:7.2/arm64]", IDS)
    assert honour == cap == off == "debian:7.2/arm64 l2-vhe-suspend"
    assert unit_of(L2S + "test_l2_offers_deep_only_with_the_cap[nvhe-debian:7.2/arm64]", IDS) \
        == "debian:7.2/arm64 l2-nvhe-suspend"
    # one boot is denied, held and honoured in turn: its tests share the unit
    hold = unit_of(L2S + "test_l2_suspend_held_by_the_vmm_exits_once_and_resumes_at_the_entry_point[vhe-debian:7.2/arm64]", IDS)
    deny = unit_of(L2S + "test_l2_suspend_denied_fails_the_write_with_eperm[vhe-debian:7.2/arm64]", IDS)
    assert hold == deny == "debian:7.2/arm64 l2-vhe-suspend"


def test_each_l2_round_trip_is_a_unit_and_a_cross_cell_names_its_guest():
    off2 = L2H + "test_l2_hibernation_exits_shutdown_with_the_off2_flag"
    assert unit_of(off2 + "[vhe-debian:7.2/arm64-guest=same]", IDS) == \
        "debian:7.2/arm64 l2-vhe-round-trip"
    assert unit_of(off2 + "[vhe-debian:7.2/arm64-guest=debian:6.12]", IDS) == \
        "debian:7.2/arm64 l2-vhe-round-trip-guest=debian:6.12"
    # the mismatch test reads the round trip's third VM
    assert unit_of(L2H + "test_l2_nothing_to_resume_boots_fresh[nvhe-debian:6.12/arm64]", IDS) \
        == "debian:6.12/arm64 l2-nvhe-round-trip"
    assert unit_of(L2H + "test_l2_hibernation_round_trip_at_psci_1_2_goes_through_system_off"
                   "[nvhe-debian:6.12/arm64]", IDS) == "debian:6.12/arm64 l2-nvhe-psci-1.2"


def test_psci_splits_by_mode_and_the_rest_of_a_target_is_main():
    psci = "tests/e2e/test_psci.py::test_psci[nvhe-debian:7.2/arm64-system_off2_invalid_type_is_rejected]"
    assert unit_of(psci, IDS) == "debian:7.2/arm64 psci-nvhe"
    assert unit_of("tests/e2e/test_psci.py::test_a_spinning_vcpu_is_a_bounded_fail_with_its_state"
                   "[debian:7.2/arm64]", IDS) == "debian:7.2/arm64 main"
    assert unit_of("tests/e2e/test_vfio.py::test_vfio[debian:7.2/x86_64-probe]", IDS) == \
        "debian:7.2/x86_64 vfio"
    assert unit_of("tests/e2e/test_vfio.py::test_a_missing_vfio_pci_driver_skips_naming_it"
                   "[debian:7.2/x86_64]", IDS) == "debian:7.2/x86_64 main"
    assert unit_of("tests/e2e/test_splats.py::TestSequence::test_01_warn[debian:7.2/x86_64]",
                   IDS) == "debian:7.2/x86_64 main"
    assert unit_of("tests/unit/test_fdt.py::test_a", IDS) == "tests/unit/test_fdt.py"


def test_the_power_transitions_are_a_unit_of_their_own():
    for t in ("test_s3.py::test_s3_on_q35_wakes_by[debian:7.2/x86_64-key]",
              "test_s2idle.py::test_s2idle_lps0_calls_reach_host_wake_by[debian:7.2/x86_64-rtc]",
              "test_hibernate.py::test_fresh_boot_with_empty_swap_does_not_resume"
              "[debian:7.2/x86_64]"):
        assert unit_of("tests/e2e/" + t, IDS) == "debian:7.2/x86_64 power", t
    assert unit_of("tests/e2e/test_acpi_events.py::test_power_button_reaches_the_guest_button_"
                   "driver[debian:7.2/x86_64-q35]", IDS) == "debian:7.2/x86_64 main"


def test_the_x86_l2_files_share_one_unit_their_l1_host():
    for t in ("test_l2_x86_boot.py::test_l2_x86_linux_reaches_its_init_and_powers_off_"
              "through_acpi[debian:7.2/x86_64]",
              "test_l2_x86_s2idle.py::test_l2_x86_s2idle_the_guest_suspends_and_resumes"
              "[debian:7.2/x86_64]"):
        assert unit_of("tests/e2e/" + t, IDS) == "debian:7.2/x86_64 l2-x86", t


def test_the_longest_estimate_is_handed_out_first():
    q = OrderedDict([("a main", {"tests/e2e/test_boot.py::t[x]": False}),
                     ("a off2", {L2H + "t[x]": False}),
                     ("a psci", {f"tests/e2e/test_psci.py::t[{i}]": False for i in range(20)})])
    assert pick(q) == "a off2"
    assert estimate(list(q["a psci"])) == pytest.approx(20 * SECONDS_PER_TEST["test_psci.py"])


def test_a_worker_keeps_to_its_target_unless_another_unit_is_much_longer():
    q = OrderedDict([("a main", {f"tests/e2e/test_boot.py::t[{i}]": False for i in range(15)}),
                     ("b round-trip", {L2H + f"t[{i}]": False for i in range(3)}),
                     ("b psci", {f"tests/e2e/test_psci.py::t[{i}]": False for i in range(20)})])
    assert pick(q, "a") == "b round-trip"      # 30 s against 138 s: less than 0.3 of it
    assert pick(q, "b") == "b round-trip"
    del q["b round-trip"]
    assert pick(q, "b") == "b psci" and pick(q, "a") == "a main" and pick(q) == "a main"


def _run(tmp_path: Path, cases: list[tuple[str, str, float, str]], boots: list[dict],
         links: dict[str, list[str]]) -> Path:
    """A results directory: junit.xml (classname, name, time, target), boots.jsonl and
    the tests/ links."""
    xml = "".join(f'<testcase classname="{c}" name="{n}" time="{s}"><properties>'
                  f'<property name="target" value="{t}"/></properties></testcase>'
                  for c, n, s, t in cases)
    (tmp_path / "junit.xml").write_text(
        f'<testsuites><testsuite name="pytest" time="500">{xml}</testsuite></testsuites>')
    (tmp_path / "boots.jsonl").write_text("".join(json.dumps(b) + "\n" for b in boots))
    for test, machines in links.items():
        (tmp_path / "tests" / test).mkdir(parents=True)
        for m in machines:
            (tmp_path / "tests" / test / f"machine-{m}").symlink_to(tmp_path)
    return tmp_path


def test_the_replay_charges_each_worker_the_pool_machines_its_units_need(tmp_path):
    """Two L2 units of one target, one L1 host (20 s boot, paid by the first test in
    the measured run): on one worker the host boots once; on two workers twice, and the
    wall is the longer unit with its boot."""
    s = _schedule()
    t = "debian:7.2/arm64"
    host = "debian-7.2-arm64-l2-vhe-gw0-3"
    ids = {"tests/e2e/test_l2_suspend.py":
           "test_l2_boots_and_sees_the_psci_version_l1_gave_it[vhe-debian:7.2/arm64]",
           "tests/e2e/test_l2_hibernate.py":
           "test_l2_hibernation_round_trip_at_psci_1_2_goes_through_system_off[vhe-debian:7.2/arm64]"}
    res = _run(tmp_path, [(f.replace("/", ".").removesuffix(".py"), v, secs, t)
                          for (f, v), secs in zip(ids.items(), (120, 60))],
               [{"target": t, "profile": "arm64", "machine": host, "kind": "boot",
                 "wall_s": 20.0, "test": "tests/e2e/test_l2_suspend.py::"
                 + ids["tests/e2e/test_l2_suspend.py"]}],
               {s.artifacts_name(f"{f}::{v}", t): [host] for f, v in ids.items()})
    tests, cost, wall = s.load(res)
    assert wall == 500 and cost == {(t, "l2-vhe"): 20.0}
    assert [x.seconds for x in tests] == [100, 60]
    assert all(x.needs == {(t, "l2-vhe")} for x in tests)
    units = s.group(tests, "units", [t])
    assert list(units) == [f"{t} l2-vhe-suspend", f"{t} l2-vhe-psci-1.2"]
    one, _ = s.simulate(units, 1, cost)
    two, got = s.simulate(units, 2, cost)
    assert one == 180 and two == 120
    assert sorted(got) == [[f"{t} l2-vhe-psci-1.2"], [f"{t} l2-vhe-suspend"]]
    whole = s.group(tests, "target", [t])
    assert list(whole) == [t] and s.simulate(whole, 2, cost)[0] == 180


def test_a_worker_that_switches_target_boots_the_pool_again(tmp_path):
    s = _schedule()
    a, b = s.Test("x::t[a]", 10, "a", {("a", "shared")}), s.Test("x::t[b]", 10, "b", {("b", "shared")})
    a2 = s.Test("x::u[a]", 10, "a", {("a", "shared")})
    cost = {("a", "shared"): 5, ("b", "shared"): 5}
    q = OrderedDict([("a main", [a]), ("b main", [b]), ("a other", [a2])])
    assert s.simulate(q, 1, cost, affinity=0)[0] == 30 + 15      # a, b, a: a boots twice
    wall, got = s.simulate(q, 1, cost)
    assert wall == 30 + 10 and got == [["a main", "a other", "b main"]]


def test_junit_names_become_node_ids():
    s = _schedule()
    assert s.nodeid_of("tests.e2e.test_psci", "test_psci[vhe-x]") == \
        "tests/e2e/test_psci.py::test_psci[vhe-x]"
    assert s.nodeid_of("tests.e2e.test_splats.TestSequence", "test_01[x]") == \
        "tests/e2e/test_splats.py::TestSequence::test_01[x]"
    assert s.pool_tag("debian-7.2-arm64-l2-vhe-gw1-12", "debian:7.2/arm64") == "l2-vhe"
    assert s.pool_tag("debian-7.2-arm64-test_s3_x-gw1-2", "debian:7.2/arm64") is None



def test_a_worker_still_busy_gets_the_shortest_unit():
    """xdist's worker asks for more while its last tests run: a long one still to run
    would make the longest unit wait behind it."""
    q = OrderedDict([("a off2", {L2H + "t[x]": False}),
                     ("a main", {"tests/e2e/test_boot.py::t[x]": False})])
    assert pick(q, held_s=110) == "a main" and pick(q, held_s=10) == "a off2"


def test_the_last_runs_seconds_win_over_the_per_file_guess():
    # an L2 unit's one test is guessed at 110 s; the last run measured 30 s, and a main
    # unit the guess puts at 4 s took 90 s: with the measurements, main goes first
    q = OrderedDict([("a main", {"tests/e2e/test_boot.py::t[x]": False,
                                 "tests/e2e/test_boot.py::u[x]": False}),
                     ("a off2", {L2H + "t[x]": False})])
    assert pick(q) == "a off2"
    measured = {L2H + "t[x]": 30.0, "tests/e2e/test_boot.py::t[x]": 90.0}
    assert pick(q, measured=measured) == "a main"
    # a test the last run did not have keeps its guess
    assert estimate(list(q["a main"]), measured) == pytest.approx(
        90.0 + SECONDS_PER_TEST["test_boot.py"])
