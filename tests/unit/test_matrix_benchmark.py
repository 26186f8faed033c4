"""benchmarks/matrix.py's reading of a run: which QEMU starts share a configuration."""

import importlib.util
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "matrix"


def _matrix():
    spec = importlib.util.spec_from_file_location(
        "bench_matrix", Path(__file__).parents[2] / "benchmarks" / "matrix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    counts = m.boots(tmp_path)
    assert sorted(counts.values()) == [1, 3]
