"""benchmarks/matrix.py's reading of a run: which QEMU starts share a configuration."""

from pathlib import Path

import benchmark_module

GOLDEN = Path(__file__).parent / "golden" / "matrix"


def _matrix():
    return benchmark_module.load("matrix")


def test_two_boots_of_one_configuration_differ_only_in_what_each_boot_owns():
    """Recorded: a hibernation test's machine on debian:6.1 x86_64 (a fresh-clone run)."""
    m = _matrix()
    one = (GOLDEN / "hibernate.txt").read_text()
    other = one.replace("fd=14", "fd=31").replace("fd=16", "fd=33") \
        .replace("pytest-119/popen-gw1/test_hibernate_round_trip_keep0",
                 "pytest-7/popen-gw0/test_hibernate_fresh_boot0") \
        .replace("NlDW9Hj62AUFqn", "Xy0000000000000")
    assert other != one and m.configuration(other) == m.configuration(one)
    assert m.configuration(one.replace(" guestpm.resume=vda", "")) != m.configuration(one)
    assert m.label(m.configuration(one)) == (
        "6.1.0-50-amd64 q35 -drive swap.qcow2 -device virtio-blk-pci no_console_suspend "
        "no_console_suspend guestpm.resume=vda")


def test_boots_are_counted_per_configuration_and_restores_apart(tmp_path):
    m = _matrix()
    one = (GOLDEN / "hibernate.txt").read_text()
    for name, text in (("a", one), ("b", one.replace("fd=14", "fd=20")),
                       ("c", one.replace("-m 1024", "-m 2048"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "qemu-cmdline.txt").write_text(text)
    (tmp_path / "a" / "qemu-cmdline.run2.txt").write_text(one)       # a relaunch
    (tmp_path / "d").mkdir()                                         # a restore of it
    (tmp_path / "d" / "qemu-cmdline.txt").write_text(
        one.rstrip("\n") + " -incoming 'exec:cat /r/snapshots/t-gw0/a.vmstate'\n")
    booted, restored = m.starts(tmp_path)
    assert sorted(booted.values()) == [1, 3]
    assert list(restored.values()) == [1] and next(iter(restored)) in booted


def test_the_report_puts_restores_beside_boots_per_profile(tmp_path):
    m = _matrix()
    (tmp_path / "machines").mkdir()
    (tmp_path / "boots.jsonl").write_text("".join(
        f'{{"profile": "{p}", "machine": "m", "kind": "{k}", "wall_s": {s}}}\n' for p, k, s in
        [("x86_64", "boot", 10.0), ("x86_64", "boot", 12.0), ("x86_64", "snapshot", 0.5),
         ("x86_64", "restore", 1.0), ("arm64", "boot", 9.0)]))
    (tmp_path / "junit.xml").write_text("<testsuites/>")
    text = m.report(tmp_path, None, None)
    assert "  arm64        boot  9.00 (1)\n" in text
    assert "  x86_64       boot 11.00 (2)   restore  1.00 (1)   snapshot  0.50 (1)" in text


def test_boots_beyond_one_per_configuration_are_counted_by_why(tmp_path):
    m = _matrix()
    one = (GOLDEN / "hibernate.txt").read_text()
    machines = tmp_path / "machines"
    runs = {"a": [one], "b": [one + " -incoming 'exec:cat /r/a.vmstate'"],
            "c": [one, one], "d": [one.replace("-m 1024", "-m 2048")]}
    for name, texts in runs.items():
        (machines / name).mkdir(parents=True)
        for i, text in enumerate(texts, 1):
            (machines / name / ("qemu-cmdline.txt" if i == 1 else f"qemu-cmdline.run{i}.txt")) \
                .write_text(text)
    disk = "a writable disk (-drive file=/t/swap.qcow2) would be shared with the snapshot"
    arm = "QEMU 7.2's migration stream drops the EL2 timers' deadlines: on a restored guest"
    (tmp_path / "boots.jsonl").write_text("".join(
        f'{{"machine": "{n}", "kind": "{k}", "why": "{w}"}}\n' for n, k, w in
        [("a", "boot", m.FIRST_BOOT), ("a", "snapshot", ""), ("b", "restore", ""),
         ("c", "boot", disk), ("d", "boot", arm)]))
    # a: the configuration's one boot; c: a second boot (its disk) and the test's own
    # relaunch; d: the one boot of another configuration, whatever its reason
    assert m.extra_boots(tmp_path) == {"a writable disk": 1, m.OWN_BOOT: 1}


def test_family_times_come_from_the_latest_run_record(tmp_path):
    from harness.results import runs, verdicts
    m = _matrix()
    run = runs.new_run(tmp_path)
    (run / verdicts.FILE).write_text(verdicts.dumps(verdicts.Header(), [
        verdicts.Verdict("test_psci::a", "PASS", file="tests/e2e/test_psci.py", duration=2.5),
        verdicts.Verdict("test_psci::b", "FAIL", file="tests/e2e/test_psci.py", duration=1.5),
        verdicts.Verdict("test_ktap::c", "PASS", file="tests/unit/test_ktap.py", duration=0.25)]))
    assert m.run_dir(tmp_path) == run
    assert m.family_times(run) == {"psci": 4.0, "unit": 0.25}
    assert m.run_dir(tmp_path / "old-layout") == tmp_path / "old-layout"
