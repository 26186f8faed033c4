"""The run's targets and result directories as pytest sees them: the targets its
options name (harness/plan/targets.py declares them), the tests' target, the run's own
directory and the per-test and per-machine directories in it."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from harness.plan.targets import Target, check, expand, safe_name

ROOT = Path(__file__).resolve().parents[2]
NOTES = pytest.StashKey[list]()       # lines about what was not collected, and why
RUN_DIR = pytest.StashKey[Path]()     # this run's own directory (harness.results.runs)
WORKER_RUN_DIR = "guestpm_run_dir"    # the same, handed to xdist workers
_machine_counter = itertools.count()


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

