"""The run options, declared once (harness/plan/options.py): `guestpm run` and pytest
take the same table, and what `guestpm run` parsed reaches pytest unchanged."""

from __future__ import annotations

import pytest

from harness import cli
from harness.plan import options
from harness.plugin import hooks


def _run_parser():
    top = cli.parser()
    sub = next(a for a in top._actions if a.dest == "command")
    return sub.choices["run"]


def _pytest_parser() -> pytest.Parser:
    parser = pytest.Parser(_ispytest=True)
    hooks.pytest_addoption(parser)
    return parser


def test_every_option_is_in_both_parsers_with_the_same_help():
    cli_help = {s: a.help for a in _run_parser()._actions for s in a.option_strings}
    group = _pytest_parser().getgroup("guestpm")
    pytest_help = {n: o.attrs()["help"] for o in group.options for n in o.names()}
    assert set(pytest_help) == {o.flag for o in options.OPTIONS}
    for o in options.OPTIONS:
        assert cli_help[o.flag] == pytest_help[o.flag] == o.help, o.flag


# `guestpm run` arguments -> the values pytest must end up with (those not named: the
# option's default)
GOLDEN = [
    ([], {}),
    (["--kernel", "debian:6.1", "--kernel=path:/x/Image,modules=/m", "--arch", "arm64"],
     {"kernel": ["debian:6.1", "path:/x/Image,modules=/m"], "arch": ["arm64"]}),
    (["--qemu", "debian:bookworm-backports", "--results", "/tmp/r dir", "--self-test"],
     {"qemu": "debian:bookworm-backports", "results": "/tmp/r dir", "self_test": True}),
    (["--splats", "warn", "--snapshots", "off", "--accel", "auto", "--boot-timeout", "42.5"],
     {"splats": "warn", "snapshots": "off", "accel": "auto", "boot_timeout": 42.5}),
    (["--guest-kernel", "debian:6.12", "--guest-kernel", "build:/b", "--all-l2-modes",
      "--slow"],
     {"guest_kernel": ["debian:6.12", "build:/b"], "all_l2_modes": True, "slow": True}),
    (["--accel", "tcg", "--splats", "fail", "--boot-timeout", "300"], {}),
]


@pytest.mark.parametrize("argv,want", GOLDEN)
def test_a_run_hands_pytest_every_value(argv, want):
    ns = _run_parser().parse_args(argv)
    got = _pytest_parser().parse_known_args(options.pytest_argv(ns))
    for o in options.OPTIONS:
        expected = want.get(o.dest, o.kwargs().get("default", False))
        assert getattr(ns, o.dest) == expected, o.flag
        assert getattr(got, o.dest) == expected, o.flag


def test_defaults_are_not_spelled_out():
    assert options.pytest_argv(_run_parser().parse_args([])) == []
    ns = _run_parser().parse_args(["--arch", "x86_64", "--splats", "warn", "--self-test"])
    assert options.pytest_argv(ns) == ["--arch=x86_64", "--self-test", "--splats=warn"]


def test_setup_and_boot_take_the_same_rows():
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    for name, flags in (("setup", options.TARGETS), ("boot", ("--qemu",))):
        helps = {s: a.help for a in sub.choices[name]._actions for s in a.option_strings}
        for f in flags:
            assert helps[f] == options.BY_FLAG[f].help, (name, f)


@pytest.mark.parametrize("pytest_args, collected", [
    ([], ["tests/e2e"]),
    (["-k", "psci"], ["tests/e2e"]),                     # a -k expression is not a path
    (["-x", "tests/e2e/test_psci.py"], []),              # pytest gets the file alone
    (["tests/e2e/test_psci.py::test_psci_version_is_reported"], []),
    (["no/such/file.py"], ["tests/e2e"]),                # pytest says it is not found
])
def test_a_run_collects_the_tests_it_is_given_instead_of_every_test(pytest_args, collected,
                                                                    monkeypatch):
    monkeypatch.chdir(cli.ROOT)
    assert cli.tests_of(pytest_args, cli.Path("tests/e2e")) == collected
