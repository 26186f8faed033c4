"""What a run tests and where its results go: the targets (kernel x arch), the checks
that can be made before anything boots, the per-test and per-machine directories."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import host_packages, profiles
from harness.kernel import kernels
from harness.plugin import units
from harness.vm.machine import Machine

ROOT = Path(__file__).resolve().parents[2]
NOTES = pytest.StashKey[list]()       # lines about what was not collected, and why
RUN_DIR = pytest.StashKey[Path]()     # this run's own directory (harness.results.runs)
WORKER_RUN_DIR = "guestpm_run_dir"    # the same, handed to xdist workers
_machine_counter = itertools.count()


@dataclass(frozen=True)
class Target:
    kernel: str
    arch: str

    @property
    def id(self) -> str:
        return f"{self.kernel}/{self.arch}"

    @property
    def slug(self) -> str:
        """A short file name for the target, unique whatever the spec: debian:6.1/arm64 ->
        debian-6.1-arm64; path:/long/dir/vmlinuz-X,modules=... -> vmlinuz-X-arm64-1a2b3c4d."""
        scheme, _, rest = self.kernel.partition(":")
        if scheme == "debian":
            return safe_name(f"debian-{rest}-{self.arch}")
        stem = Path(rest.split(",")[0].rstrip("/")).name or scheme
        digest = hashlib.sha1(self.kernel.encode()).hexdigest()[:8]
        return safe_name(f"{stem[:24]}-{self.arch}-{digest}")

    def __str__(self) -> str:
        return self.id


def expand(kernel_specs: list[str], arch_names: list[str]) -> list[Target]:
    """The kernel x arch targets (the defaults where none are given), each spec parsed
    and each arch known: one clear line, before anything boots (the CLI's and pytest's)."""
    ks = kernel_specs or list(kernels.DEFAULT_KERNELS)
    archs = arch_names or list(profiles.DEFAULT_ARCHES)
    for a in archs:
        profiles.get(a)
    for k in ks:
        kernels.parse_spec(k)
    return [Target(k, a) for k in ks for a in archs]


def check(ts: list[Target], host: bool = True) -> None:
    """Everything about the targets that can be known before booting: specs, images
    (there, of the arch, whole) and, with `host`, QEMU and firmware.  GuestpmError on
    the first problem."""
    for t in ts:
        kernels.check_spec(t.kernel, profiles.get(t.arch))
    for p in {profiles.get(t.arch) for t in ts} if host else ():
        Machine.check_host(p)
    if host:
        host_packages.check_host([profiles.get(t.arch) for t in ts])


def targets(config: pytest.Config) -> list[Target]:
    return expand(config.getoption("kernel"), config.getoption("arch"))


def check_targets(config: pytest.Config) -> None:
    check(targets(config))


def runs_e2e(config: pytest.Config) -> bool:
    """Whether the selected paths include the end-to-end tests (unit tests need no QEMU)."""
    e2e = ROOT / "tests" / "e2e"
    for arg in config.args or ["tests"]:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == e2e or e2e in path.parents or path in e2e.parents:
            return True
    return False


def results_parent(config: pytest.Config) -> Path:
    """--results: the directory that holds the run directories and `latest`."""
    return Path(config.getoption("results") or "results").resolve()


def keeps_results(config: pytest.Config) -> bool:
    """Whether this run gets a run directory: one that boots kernels, or any run given
    --results; not --collect-only, and not a unit-test run left to its defaults (it would
    move `latest` off the last run of the suite)."""
    return not config.option.collectonly and \
        (runs_e2e(config) or config.getoption("results") is not None)


def results_dir(config: pytest.Config) -> Path:
    """This run's own directory, results/RUN (the same in every xdist worker).  A run
    without one (keeps_results) writes nothing: the path is never created."""
    if RUN_DIR in config.stash:
        return config.stash[RUN_DIR]
    given = getattr(config, "workerinput", {}).get(WORKER_RUN_DIR)
    return Path(given) if given else results_parent(config) / "no-run"


def safe_name(name: str, limit: int = 150) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")
    if len(name) > limit:       # readable head, unique tail
        name = name[:limit - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def artifacts_dir_of(config: pytest.Config, nodeid: str, target: Target | None) -> Path:
    """results/RUN/tests/<test>: the target's short slug instead of its spec."""
    if target is not None:
        nodeid = nodeid.replace(target.id, target.slug)
    nodeid = nodeid.removeprefix("tests/e2e/")
    return results_dir(config) / "tests" / safe_name(nodeid, 120)


def machine_dir(config: pytest.Config, target: Target, tag: str) -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return results_dir(config) / "machines" / \
        f"{target.slug}-{safe_name(tag, 60)}-{worker}-{next(_machine_counter)}"


def target_of(item: pytest.Item) -> Target | None:
    callspec = getattr(item, "callspec", None)
    t = callspec and callspec.params.get("target")
    return t if isinstance(t, Target) else None


def scope_of(nodeid: str, target_ids: list[str]) -> str:
    """The target a test belongs to, whatever its file (its work unit is a part of it:
    harness/plugin/units.py); tests without a target: their file (pure)."""
    return units.target_in(nodeid, target_ids)[0] or nodeid.split("::")[0]
