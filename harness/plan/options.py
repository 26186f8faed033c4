"""The options of a run, declared once.  `guestpm run` (harness/cli.py) and pytest (the
plugin's pytest_addoption) add the same table to their parsers, and `guestpm run` hands
what it parsed to pytest through `pytest_argv`: a new option is one row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import profiles
from harness.kernel import kernels


@dataclass(frozen=True)
class Option:
    flag: str                              # "--boot-timeout"
    help: str
    kind: str = "value"                    # value, list (repeatable) or flag (on/off)
    default: Any = None
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute argparse and pytest both store it under."""
        return self.flag.lstrip("-").replace("-", "_")

    def kwargs(self) -> dict[str, Any]:
        """argparse's add_argument keywords, which pytest's addoption takes too."""
        if self.kind == "flag":
            return {"action": "store_true", "help": self.help}
        kw: dict[str, Any] = {"help": self.help, "metavar": self.metavar}
        if self.kind == "list":
            kw.update(action="append", default=[])
        else:
            kw["default"] = self.default
        if self.choices:
            kw["choices"] = self.choices
        if self.type:
            kw["type"] = self.type
        return kw

    def argv(self, value: Any) -> list[str]:
        """`value` as pytest arguments; a default is left out (both sides share it)."""
        if self.kind == "flag":
            return [self.flag] if value else []
        if self.kind == "list":
            return [f"{self.flag}={v}" for v in value]
        return [] if value == self.default else [f"{self.flag}={value}"]


OPTIONS: tuple[Option, ...] = (
    Option("--kernel", kind="list", metavar="SPEC",
           help=f"kernel under test (repeatable): {', '.join(kernels.DEFAULT_KERNELS)} (the "
                "defaults), any debian:X.Y or debian:SUITE, path:IMAGE[,modules=DIR], "
                "build:DIR|TREE"),
    Option("--arch", kind="list", metavar="PROFILE",
           help=f"machine profile (repeatable): {', '.join(profiles.PROFILES)}; default: "
                f"{', '.join(profiles.DEFAULT_ARCHES)}"),
    Option("--qemu", metavar="DIR|debian:SUITE",
           help="run this QEMU instead of the system's: a directory of qemu-system-* "
                "binaries (or an unpacked Debian QEMU's root), or debian:SUITE (e.g. "
                "debian:bookworm-backports), fetched into the cache once and unpacked "
                "there, never installed"),
    Option("--results", metavar="DIR",
           help="each run writes its verdicts, artifacts, KTAP and JUnit to a directory of "
                "its own, DIR/RUN, and points DIR/latest at it (default: ./results; a "
                "unit-test run writes nothing unless given this)"),
    Option("--self-test", kind="flag",
           help="also run guestpm's own self-tests (harness failure paths; build and bisect "
                "where the build tools are installed)"),
    Option("--slow", kind="flag",
           help="also run tests marked slow (a full kernel build and its PSCI run, compare "
                "on two kernels)"),
    Option("--boot-timeout", type=float, default=300, metavar="SECONDS",
           help="bound on one boot to a shell (default 300; TCG is slow)"),
    Option("--guest-kernel", kind="list", metavar="SPEC",
           help="an L2 guest kernel of the reference-VMM tests (any --kernel spec; "
                "repeatable: host x guest cells); default: the kernel under test, as host "
                "and guest"),
    Option("--all-l2-modes", kind="flag",
           help="run the L2 tests that are VHE-only by default in nVHE too"),
    Option("--splats", choices=("fail", "warn"), default="fail",
           help="a kernel splat (WARNING, lockdep, KASAN, UBSAN, hung task, ...) fails the "
                "test during which it is printed (fail, the default), or is only counted in "
                "the summary (warn: bisecting something else on a noisy kernel)"),
    Option("--snapshots", choices=("on", "off"), default="on",
           help="a test's fresh machine is restored from a snapshot of the first machine of "
                "its configuration, where QEMU restores them faithfully (on, the default; "
                "arm64 only where a probe of the QEMU in use shows its restores keep the "
                "timers), or always boots (off)"),
    Option("--accel", choices=profiles.ACCELS, default=profiles.DEFAULT_ACCEL,
           help="tcg (the default), kvm (targets of the host's arch under the host's KVM, "
                "nested; not run in this project's CI), auto (KVM where a probe boot proved "
                "it can run the kernel, else TCG, saying why)"),
)
BY_FLAG = {o.flag: o for o in OPTIONS}
TARGETS = ("--kernel", "--arch", "--qemu")     # what names the machines (guestpm setup)


def add(parser, flags: tuple[str, ...] | None = None) -> None:
    """Add the options (all, or those of `flags`) to an argparse parser or a pytest
    option group: both take add_argument's keywords."""
    add_option = getattr(parser, "addoption", None) or parser.add_argument
    for o in OPTIONS if flags is None else [BY_FLAG[f] for f in flags]:
        add_option(o.flag, **o.kwargs())


def pytest_argv(values) -> list[str]:
    """The pytest arguments that give pytest the values `guestpm run` parsed (an
    argparse namespace, or anything with the options' attributes)."""
    return [a for o in OPTIONS for a in o.argv(getattr(values, o.dest))]
