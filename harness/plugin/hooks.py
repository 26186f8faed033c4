"""The pytest plugin (the `guestpm` entry point): its options, markers, run directory
and xdist scheduling; its parts, registered below, do the rest:

  collection.py  the tests x targets, and the rules that decide which apply to this run
  fixtures.py    profile, kernel, machine, machine_factory, ... and each test's artifacts
  judging.py     a test's kernel splats judged into its report, its artifacts named
  pool.py, targets.py, report.py, summary.py: the machines, directories and reporting

Options:  the table of harness/plan/options.py (`guestpm run` takes the same), e.g.
          --kernel SPEC (repeatable; default the Debian kernels)
          --arch PROFILE (repeatable; default x86_64 and arm64)
          --results DIR  (each run's own directory DIR/RUN: verdicts.jsonl, artifacts,
                         KTAP, JUnit, summary.md; DIR/latest -> the newest; default
                         ./results)
          --self-test    also run guestpm's own self-tests
Markers:  @pytest.mark.arch("arm64", ...)       not collected for other arches
          @pytest.mark.profile_has("iommu_args") not collected where the profile lacks it
          @pytest.mark.needs_config("KVM", ...)  SKIP when the kernel's config lacks it
          @pytest.mark.harness_selftest          a test of guestpm itself: only with
                                                 --self-test, on the first target (of its arch)
          @pytest.mark.needs_build_tools("arm64") not collected where `guestpm build` could
                                                 not build for the arch (names the packages)
          @pytest.mark.standin("series")         our stand-in for an unmerged series: per
                                                 target, reported under "stand-in"
          @pytest.mark.stock_kernel_only         collected only for debian: kernels

Bad input (an unknown spec, a missing, foreign or truncated image, no QEMU) ends the
run before anything boots: one line, exit status 2.

Under pytest-xdist (`--dist loadgroup`, as `guestpm run` passes) the plugin's own
scheduler sends each work unit to one worker (harness/plugin/units.py: a part of a
target whose tests share a machine: an L1 host, a PSCI host, the shared machine), the
longest first (units.pick), so that those machines boot once per unit and worker.  The
`xdist_group` mark is inert with pytest 9.2 and pytest-xdist 3.8 (xdist appends "@group"
to item._nodeid, which pytest 9 no longer reads), which is why the unit comes from the
test id instead.
"""

from __future__ import annotations

import pytest

from harness import host_packages, wait
from harness.errors import GuestpmError
from harness.plan import options
from harness.plugin import units
from harness.plugin.report import Reporter
from harness.plugin.targets import (
    NOTES,
    RUN_DIR,
    WORKER_RUN_DIR,
    check_targets,
    keeps_results,
    results_parent,
    runs_e2e,
    targets,
)
from harness.results import runs, verdicts
from harness.vm import cmdline

MEASURED = pytest.StashKey[dict]()      # the last run's test seconds: node id -> s

# judging first: fixtures imports it, and pytest can rewrite the asserts only of a
# plugin module it imports itself
pytest_plugins = ("harness.plugin.judging", "harness.plugin.collection",
                  "harness.plugin.fixtures")


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add(parser.getgroup("guestpm"))


# ------------------------------------------------------------------ the run: markers, directory, workers

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in ("arch(name, ...): collected only for these machine profiles",
                 "profile_has(field, ...): collected only where the profile has these",
                 "needs_config(option, ...): skip unless the kernel config has CONFIG_option",
                 "harness_selftest: a test of guestpm itself: with --self-test, first target",
                 "needs_build_tools(arch, ...): collected only where guestpm build can build",
                 "stock_kernel_only: collected only for debian: kernels (upstream history)",
                 "cross_guest((host_spec, guest_spec), ...): L2 host x guest cells this test "
                 "also runs (without --guest-kernel), each only on its host kernel, in VHE",
                 "l2_mode_hosts(mode, host_spec, ...): the test's L2 `mode` cells are "
                 "collected only on these host kernels (all with --all-l2-modes)",
                 "standin(series): runs our stand-in for an unmerged series; reported apart "
                 "from the kernel's verdicts, under 'stand-in'",
                 "e2e: boots real kernels in QEMU",
                 "slow: opt-in (--slow): builds kernel code (a whole tree from the "
                 "fragments, a fixture module for an L2 guest)"):
        config.addinivalue_line("markers", line)
    config.stash[NOTES] = []
    try:
        cmdline.use_qemu(host_packages.qemu_dir(config.getoption("qemu")))
    except GuestpmError as e:
        pytest.exit(f"guestpm: error: {e}", returncode=2)
    if not hasattr(config, "workerinput"):
        if runs_e2e(config) and not config.option.collectonly:
            try:
                check_targets(config)
            except GuestpmError as e:        # before any worker starts or anything boots
                pytest.exit(f"guestpm: error: {e}", returncode=2)
        res = None
        if keeps_results(config):
            # the last run's test seconds order this run's work units (units.estimate)
            config.stash[MEASURED] = verdicts.durations(runs.latest(results_parent(config)))
            # a directory of its own: a run never deletes or mixes with another's results
            res = config.stash[RUN_DIR] = runs.new_run(results_parent(config))
            wait.record_close_calls(res / "waits.jsonl")      # the workers inherit it
            if getattr(config.option, "xmlpath", "missing") is None:
                config.option.xmlpath = str(res / "junit.xml")
        config.pluginmanager.register(Reporter(config, res), "guestpm-reporter")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: every worker writes into the controller's run directory."""
    if RUN_DIR in node.config.stash:
        node.workerinput[WORKER_RUN_DIR] = str(node.config.stash[RUN_DIR])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup as it was meant: the units of harness/plugin/units.py (parts of a target
    that share their machines) stay on one worker; the longest unit is handed out first."""
    if config.getoption("dist", None) != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling
    ids = [t.id for t in targets(config)]
    measured = config.stash.get(MEASURED, {})

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return units.unit_of(nodeid, ids)

        def _assign_work_unit(self, node) -> None:
            # longest first, keeping a worker to its target where that costs little,
            # the shortest to a worker still busy (xdist takes the queue's head:
            # collection order, or the unit with the most tests)
            mine = self.assigned_work.get(node, {})
            held = [n for u in mine.values() for n, done in u.items() if not done]
            unit = units.pick(self.workqueue,
                              units.target_of_unit(list(mine)[-1]) if mine else None,
                              held_s=units.estimate(held, measured), measured=measured)
            self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return UnitScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):    # xdist worker: tell the controller
        session.config.workeroutput["guestpm_notes"] = session.config.stash.get(NOTES, [])
