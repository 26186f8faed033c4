"""The xdist work unit: all of one target's tests go to one worker, whatever their file."""

from harness.plugin.targets import scope_of

IDS = ["debian:7.2/arm64", "debian:7.2/x86_64", "path:/a/b-c/Image,modules=/m/arm64"]


def test_a_targets_tests_share_a_scope_across_files():
    a = "tests/e2e/test_l2_suspend.py::test_x[vhe-debian:7.2/arm64]"
    b = "tests/e2e/test_l2_suspend.py::test_y[nvhe-debian:7.2/arm64]"
    c = "tests/e2e/test_l2_suspend.py::test_y[nvhe-debian:7.2/x86_64]"
    d = "tests/e2e/test_boot.py::test_z[debian:7.2/arm64]"
    assert scope_of(a, IDS) == scope_of(b, IDS) == scope_of(d, IDS) == "debian:7.2/arm64"
    assert scope_of(c, IDS) == "debian:7.2/x86_64"


def test_the_target_is_found_wherever_it_sits_in_the_parameters():
    mid = "tests/e2e/test_psci.py::test_psci[vhe-debian:7.2/arm64-system_off2]"
    assert scope_of(mid, IDS) == "debian:7.2/arm64"
    cross = "tests/e2e/test_l2_hibernate.py::t[vhe-debian:7.2/arm64-guest=debian:6.12]"
    assert scope_of(cross, IDS) == "debian:7.2/arm64"
    path = "tests/e2e/test_boot.py::t[path:/a/b-c/Image,modules=/m/arm64]"
    assert scope_of(path, IDS) == "path:/a/b-c/Image,modules=/m/arm64"


def test_tests_without_a_target_are_grouped_by_file():
    assert scope_of("tests/unit/test_fdt.py::test_a", IDS) == "tests/unit/test_fdt.py"
    assert scope_of("tests/unit/test_x.py::test_a[1-2]", IDS) == "tests/unit/test_x.py"
