"""The unit of work an xdist worker takes: a part of one target's tests that shares what
is expensive to set up, and the order in which the units are handed out (pure).

A target's machine pool (harness/plugin/pool.py) lives in the worker process that runs its
tests: the shared machine, the PSCI hosts (one per KVM mode), the vfio host and the L1
hosts of the L2 families each boot once per worker that needs them, and a worker keeps
them while it runs units of the same target one after another (a unit of another target
tears the pool down: the `target` fixture is session-scoped and parametrized).  So a unit
below a target costs the boots of the pool machines it needs in a worker that has not
booted them yet; it buys parallelism where the tests that share one machine take much
longer than the machine's boot (an arm64 L1 host boots in 10-20 s; its L2 round trips take
minutes).  The units, per target:

  l2-MODE-suspend    the L2 suspend tests: they read the boot that is denied, held and
                     honoured in turn and the boot without the cap (a run is cached on
                     its L1 host machine and read by several tests), and the silent guest
  l2-MODE-round-trip the L2 hibernation round trip and the mismatch test, which reads
                     the third VM of that round trip's run
  l2-MODE-psci-1.2   the round trip at PSCI 1.2: its own L1 host
  l2-...-guest=SPEC  a host x guest cell: its own L1 host anyway
  l2-x86             the x86 L2 tests (opt-in): one x86 L1 host
  psci-MODE          the PSCI cases of one KVM mode: the shared machine and that mode's host
  vfio               the vfio host's tests (and the shared machine)
  power              S3, s2idle and hibernation: machines of their own configurations
                     (a chipset, s2idle's devices, a swap disk), so no pool machine; the
                     x86 main unit was the run's critical path before they left it
  main               everything else (the shared machine, tests' own machines restored
                     from its snapshots on x86, the splat sequence that must stay in order)

Tests without a target (unit tests, self-tests that build kernels) are grouped by file,
as xdist's loadscope does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# file -> test function -> unit name ("*": the rest of the file); {mode} is filled
# from the test id.  Files not named here go to "main".
UNITS: dict[str, dict[str, str]] = {
    "test_l2_suspend.py": {"*": "l2-{mode}-suspend"},
    "test_l2_hibernate.py": {
        "test_l2_hibernation_exits_shutdown_with_the_off2_flag": "l2-{mode}-round-trip",
        "test_l2_nothing_to_resume_boots_fresh": "l2-{mode}-round-trip",
        "test_l2_hibernation_round_trip_at_psci_1_2_goes_through_system_off":
            "l2-{mode}-psci-1.2",
    },
    "test_psci.py": {"*": "psci-{mode}"},
    "test_l2_x86_boot.py": {"*": "l2-x86"},       # one x86 L1 host for both files
    "test_l2_x86_s2idle.py": {"*": "l2-x86"},
    "test_s2idle.py": {"*": "power"},
    "test_s3.py": {"*": "power"},
    "test_hibernate.py": {"*": "power"},
    "test_vfio.py": {
        "test_a_device_without_an_iommu_group_skips_naming_why": "main",
        "test_a_missing_vfio_pci_driver_skips_naming_it": "main",
        "*": "vfio",
    },
}
MAIN = "main"
MODES = ("vhe", "nvhe")

# Rough test seconds per test of a file under TCG on 2 cores: they only order the queue
# (the longest units first, so that no long unit starts last); a file not named costs
# DEFAULT_S per test.
SECONDS_PER_TEST: dict[str, float] = {
    # means per test of a default run (where from: docs/figures.md, "Figures behind code
    # comments")
    "test_l2_hibernate.py": 46, "test_l2_suspend.py": 11, "test_bisect.py": 290,
    "test_build_psci.py": 600, "test_hibernate.py": 40, "test_s2idle.py": 27,
    "test_splats.py": 60, "test_accel_fallback.py": 65, "test_snapshots.py": 19,
    "test_acpi_arm64.py": 18, "test_acpi_events.py": 13, "test_harness_faults.py": 11,
    "test_s3.py": 7, "test_vfio.py": 3.5, "test_l2_x86_boot.py": 60,
    "test_l2_x86_s2idle.py": 25, "test_boot.py": 2, "test_psci.py": 1.1,
}
DEFAULT_S = 2.0
# a worker keeps to its target's units unless another's is 1/AFFINITY times longer (pick)
AFFINITY = 0.3
BUSY_S = 60.0           # a worker still this busy gets the shortest unit (pick)


def target_in(nodeid: str, target_ids: list[str]) -> tuple[str | None, str]:
    """(the target in the test id's parameters or None, the parameters without it)."""
    m = re.search(r"\[(.*)\]$", nodeid)
    if not m:
        return None, ""
    params = m.group(1)
    for t in sorted(target_ids, key=len, reverse=True):
        if params == t or params.endswith("-" + t) or params.startswith(t + "-") \
                or f"-{t}-" in params:
            return t, params.replace(t, "", 1).strip("-").replace("--", "-")
    return None, params


def unit_of(nodeid: str, target_ids: list[str]) -> str:
    """The work unit of a test: `TARGET UNIT` (see the module's docstring), or the file
    for a test without a target."""
    path = nodeid.split("::")[0]
    target, rest = target_in(nodeid, target_ids)
    if target is None:
        return path
    file = path.rsplit("/", 1)[-1]
    func = nodeid.split("::")[-1].split("[")[0]
    rules = UNITS.get(file, {})
    name = rules.get(func, rules.get("*", MAIN))
    params = rest.split("-") if rest else []
    mode = next((p for p in params if p in MODES), None)
    guest = next((p for p in rest.split("-guest=")[1:]), "same") if "guest=" in rest else "same"
    if "{mode}" in name and mode is None:        # a test of the file without a KVM mode
        return f"{target} {MAIN}"
    name = name.format(mode=mode)
    if guest != "same":
        name += f"-guest={guest}"
    return f"{target} {name}"


def estimate(nodeids: list[str], measured: Mapping[str, float] | None = None) -> float:
    """A unit's test seconds, to order the queue (pure): what each test took in the last
    run (`measured`, node id -> seconds: results/latest's verdict record), else the
    rough SECONDS_PER_TEST of its file.  A per-test guess cannot tell that the tests of an
    L2 unit share one VMM run, or that one x86 target's main unit is twice another's."""
    m = measured or {}
    return sum(m.get(n, SECONDS_PER_TEST.get(n.split("::")[0].rsplit("/", 1)[-1], DEFAULT_S))
               for n in nodeids)


def target_of_unit(unit: str) -> str | None:
    """`TARGET UNIT` -> TARGET; a file's unit (no target) -> None (pure)."""
    return unit.split(" ", 1)[0] if " " in unit else None


def pick(workqueue: dict, current: str | None = None, affinity: float = AFFINITY,
         held_s: float = 0.0, measured: Mapping[str, float] | None = None) -> str:
    """The unit of a scheduler's queue (unit -> its tests) to hand a worker whose last
    unit was of target `current` and whose tests not yet done are estimated at
    `held_s` (pure).  xdist's worker runs a test only once it knows the next one, so a
    worker asks for its next unit while its last tests still run: one still busy for
    more than BUSY_S gets the shortest unit (the longest would wait behind it while
    other workers go idle); otherwise the longest, unless a unit of `current` is at
    least `affinity` times as long, which the worker can run on the machines it has
    booted (a unit of another target makes it boot them anew; `affinity` 0: the
    longest, whatever the target).  `measured`: see estimate."""
    est = {u: estimate(list(workqueue[u]), measured) for u in workqueue}
    if held_s > BUSY_S:
        return min(est, key=est.__getitem__)
    top = max(est, key=est.__getitem__)
    mine = [u for u in est if affinity and current is not None and target_of_unit(u) == current]
    if mine:
        best = max(mine, key=est.__getitem__)
        if est[best] >= affinity * est[top]:
            return best
    return top
