"""The pytest plugin: its options, markers, collection, fixtures and hooks; the parts
live beside it (targets, pool, report).

Options:  --kernel SPEC (repeatable; default the Debian kernels)
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

import json
import secrets
import time
from pathlib import Path

import pytest

from harness import host_packages, profiles, wait
from harness.errors import AbnormalShutdown, GuestpmError
from harness.image import rootfs
from harness.kernel import kernels
from harness.plugin import accel, summary, units
from harness.plugin.known_defects import explains
from harness.plugin.pool import (
    CURRENT_TEST,
    DeadTargets,
    MachineFactory,
    MachinePool,
    as_test_failure,
    record_splats,
    retire_if_splatted,
    splats_fail,
)
from harness.plugin.report import Reporter
from harness.plugin.targets import (
    NOTES,
    RUN_DIR,
    WORKER_RUN_DIR,
    Target,
    artifacts_dir_of,
    check_targets,
    keeps_results,
    machine_dir,
    results_dir,
    results_parent,
    runs_e2e,
    target_of,
    targets,
)
from harness.progress import progress
from harness.results import runs
from harness.vm import cmdline
from harness.vm.machine import Machine


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("guestpm")
    g.addoption("--kernel", action="append", default=[], metavar="SPEC",
                help=f"kernel under test (repeatable): {', '.join(kernels.DEFAULT_KERNELS)}, "
                     "path:IMAGE[,modules=DIR], build:DIR|TREE; default: all Debian labels")
    g.addoption("--arch", action="append", default=[], metavar="PROFILE",
                help=f"machine profile (repeatable): {', '.join(profiles.PROFILES)}; "
                     f"default: {', '.join(profiles.DEFAULT_ARCHES)}")
    g.addoption("--results", default=None, metavar="DIR",
                help="each run writes its verdicts, artifacts, KTAP and JUnit to a "
                     "directory of its own, DIR/RUN, and points DIR/latest at it (default: "
                     "./results; a unit-test run writes nothing unless given this)")
    g.addoption("--slow", action="store_true",
                help="also run tests marked slow (a full kernel build and its PSCI run, "
                     "compare on two kernels)")
    g.addoption("--boot-timeout", type=float, default=300, metavar="SECONDS",
                help="bound on one boot to a shell (default 300; TCG is slow)")
    g.addoption("--self-test", action="store_true",
                help="also run guestpm's own self-tests (harness failure paths, build, bisect)")
    g.addoption("--splats", choices=("fail", "warn"), default="fail",
                help="a kernel splat fails the test during which it is printed (fail, "
                     "default), or is only counted in the summary (warn)")
    g.addoption("--snapshots", choices=("on", "off"), default="on",
                help="a test's fresh machine is restored from a snapshot of the first "
                     "machine of its configuration (on, default), or boots (off)")
    g.addoption("--all-l2-modes", action="store_true",
                help="run the L2 tests that are VHE-only by default in nVHE too")
    g.addoption("--accel", choices=profiles.ACCELS, default=profiles.DEFAULT_ACCEL,
                help="tcg (default), kvm (targets of the host's arch under the host's KVM, "
                     "nested), auto (KVM where a probe boot proved it, else TCG; says why)")
    g.addoption("--guest-kernel", action="append", default=[], metavar="SPEC",
                help="an L2 guest kernel of the reference-VMM tests (any --kernel spec; "
                     "repeatable: host x guest cells); default: the kernel under test, as "
                     "host and guest")
    g.addoption("--qemu", default=None, metavar="DIR|debian:SUITE",
                help="run this QEMU instead of the system's: a directory of qemu-system-* "
                     "binaries (or an unpacked Debian QEMU's root), or debian:SUITE to fetch "
                     "that suite's QEMU into the cache once (e.g. debian:bookworm-backports)")


# ------------------------------------------------------------------ configuration

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        ts = targets(metafunc.config)
        if metafunc.definition.get_closest_marker("harness_selftest"):
            # the first target the test can run on (an arch-specific self-test must
            # not land on a target of another arch and skip everywhere)
            arch = metafunc.definition.get_closest_marker("arch")
            ts = [t for t in ts if not arch or t.arch in arch.args][:1] or ts[:1]
        metafunc.parametrize("target", ts, ids=[t.id for t in ts], scope="session")
    if "guest_spec" in metafunc.fixturenames:
        # host x guest cells of the L2 tests: every --guest-kernel; without the option,
        # the kernel under test as its own guest plus the cells a test's cross_guest mark
        # names (collected only on their host kernel)
        specs: list[str | None] = list(metafunc.config.getoption("guest_kernel"))
        if not specs:
            m = metafunc.definition.get_closest_marker("cross_guest")
            specs = [None] + [guest for _, guest in m.args] if m else []
        if specs:
            metafunc.parametrize("guest_spec", specs,
                                 ids=[f"guest={s}" if s else "guest=same" for s in specs])


def _why_not_collected(config: pytest.Config, item: pytest.Item, tools: dict) -> str | None:
    """Why `item` does not apply to this run (None: it does).  Such tests are
    deselected, never SKIPped: a SKIP line says the kernel under test lacks something."""
    if item.get_closest_marker("slow") and not config.getoption("slow"):
        return "opt-in with --slow"
    if item.get_closest_marker("harness_selftest") and not config.getoption("self_test"):
        return "guestpm self-tests: run with --self-test (./guestpm.sh test does)"
    m = item.get_closest_marker("needs_build_tools")
    if m:
        for arch in m.args:
            if arch not in tools:
                from harness.kernel import build
                try:
                    build.toolchain(arch)
                    tools[arch] = None
                except GuestpmError as e:
                    tools[arch] = str(e)
            if tools[arch]:
                return f"self-tests that build kernels: {tools[arch]}"
        if config.getoption("arch") and not set(m.args) & set(config.getoption("arch")):
            return f"self-tests that build and boot {'/'.join(m.args)}, not selected by --arch"
    t = target_of(item)
    if t is None:
        return None
    m = item.get_closest_marker("arch")
    if m and t.arch not in m.args:
        return f"tests do not apply to {t.arch}"
    if item.get_closest_marker("stock_kernel_only") and not t.kernel.startswith("debian:"):
        return f"tests do not apply to {summary.short_spec(t.kernel)} (upstream history is " \
               "asserted on stock Debian kernels; on others it is reported as information)"
    params = getattr(getattr(item, "callspec", None), "params", {})
    m = item.get_closest_marker("cross_guest")
    guest = params.get("guest_spec")
    if m and guest and not config.getoption("guest_kernel"):
        if (t.kernel, guest) not in [tuple(a) for a in m.args]:
            return "cross cells (host x guest kernel) of other host kernels"
        if params.get("l2_mode", "vhe") != "vhe":
            return "cross cells in nVHE (the guest's side does not depend on the host's mode)"
    m = item.get_closest_marker("l2_mode_hosts")
    if m and params.get("l2_mode") == m.args[0] and t.kernel not in m.args[1:] \
            and not config.getoption("all_l2_modes"):
        return f"L2 {m.args[0]} cells of hosts other than {', '.join(m.args[1:])} (opt-in: " \
               "--all-l2-modes)"
    m = item.get_closest_marker("profile_has")
    if m:
        p = profiles.get(t.arch)
        lacking = [f for f in m.args if not getattr(p, f)]
        if lacking:
            return f"tests do not apply to {t.arch} (its {p.machine} machine has no " \
                   f"{', '.join(lacking)})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, dropped, why, tools = [], [], {}, {}
    for item in items:
        reason = _why_not_collected(config, item, tools)
        if reason:
            dropped.append(item)
            why[reason] = why.get(reason, 0) + 1
            continue
        keep.append(item)
        t = target_of(item)
        family = summary.family_of(item.nodeid.split("::")[0])
        guest = getattr(getattr(item, "callspec", None), "params", {}).get("guest_spec")
        if guest:                       # a host x guest cell of the L2 families
            family += f" (guest {summary.short_spec(guest)})"
        item.user_properties.append(("family", family))
        if t is not None and "guest_spec" in getattr(getattr(item, "callspec", None),
                                                     "params", {}):
            item.user_properties.append(("guest", guest or t.kernel))   # L2: the guest kernel
        if item.get_closest_marker("harness_selftest"):
            item.user_properties.append(("kind", "self-test"))
        elif item.get_closest_marker("standin"):
            item.user_properties.append(("kind", "stand-in"))
        if t is None:
            continue
        item.add_marker(pytest.mark.xdist_group(t.id))
        item.user_properties.append(("target", t.id))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[NOTES] = [f"{n} {'test' if n == 1 else 'tests'} not collected: {r}"
                            if not r.startswith("tests do not apply") else
                            f"{n} {r if n > 1 else r.replace('tests do', 'test does')}"
                            for r, n in why.items()]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup as it was meant: the units of harness/plugin/units.py (parts of a target
    that share their machines) stay on one worker; the longest unit is handed out first."""
    if config.getoption("dist", None) != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling
    ids = [t.id for t in targets(config)]

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
                              held_s=units.estimate(held))
            self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return UnitScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):    # xdist worker: tell the controller
        session.config.workeroutput["guestpm_notes"] = session.config.stash.get(NOTES, [])


# ------------------------------------------------------------------ fixtures

_ACCEL_NOTES = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest, target: Target) -> profiles.Profile:
    """The target's profile under --accel (harness/plugin/accel.py)."""
    config = request.config

    def run_probe(kvm: profiles.Profile) -> str | None:
        k = kernels.resolve(target.kernel, kvm, progress)
        return accel.probe(kvm, k, rootfs.initramfs(k, kvm, progress),
                           machine_dir(config, target, "accel-probe"),
                           timeout=config.getoption("boot_timeout"))
    p, why = accel.choose(config.getoption("accel"), profiles.get(target.arch),
                          results_dir(config) / "targets" / f"{target.slug}.accel", run_probe)
    if why:
        progress(f"{target.id}: {why}")
        config.stash.setdefault(_ACCEL_NOTES, {})[target.id] = why
    return p


@pytest.fixture(scope="session")
def kernel(target: Target, profile: profiles.Profile) -> kernels.Kernel:
    return kernels.resolve(target.kernel, profile, progress)


@pytest.fixture
def guest_spec() -> str | None:
    """The L2 guest's spec; None: the kernel under test.  Parametrized (ids
    `guest=SPEC`) by --guest-kernel and by the cross_guest mark.  Function-scoped on
    purpose: a session fixture computed from it would be cached by pytest under the
    first value it saw and reused for another guest (seen: a "guest=debian:6.12" cell
    that booted the host's own kernel); tests/e2e/conftest.py keys L1 hosts by it."""
    return None


@pytest.fixture(scope="session")
def initrd(kernel: kernels.Kernel, profile: profiles.Profile) -> Path:
    return rootfs.initramfs(kernel, profile, progress)


# ------------------------------------------------------------------ kernel splats


@pytest.fixture(scope="session")
def machine_pool(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd):
    pool = MachinePool(request.config, target, profile, kernel, initrd)   # boots lazily
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def machine(machine_pool: MachinePool) -> Machine:
    """One booted machine per target, shared by the target's tests (a fresh one after
    a kernel splat)."""
    return machine_pool.get((), tag="shared")


def note(request: pytest.FixtureRequest, text: str) -> None:
    """Information about the target, not a verdict: shown under the summary matrix."""
    request.node.user_properties.append(("info", text))


def attach_machine(request: pytest.FixtureRequest, m: Machine) -> None:
    """Name `m`'s artifacts in the test's failure report and results/tests/ links."""
    request.node.stash.setdefault(_MACHINES, []).append(m)


def attach_splats(request: pytest.FixtureRequest, found: list) -> None:
    """Splats in evidence the test reads but did not make: an L2 run or an agent run
    that an earlier test started.  They fail this test as they failed the first reader
    (which claimed them from the machine)."""
    request.node.stash.setdefault(_SHARED_SPLATS, []).extend(found)


@pytest.fixture
def machine_factory(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd,
                    machine_pool: MachinePool):
    """Machines of the test's own (e.g. with other kernel parameters); closed after it.
    `.booted(...)` restores them from the target's snapshots where it can (pool.Snapshots)."""
    made: list[Machine] = []
    base_profile = profile

    dead = DeadTargets(request.config)

    def make(profile: profiles.Profile = profile, extra_modules=(), **kwargs) -> Machine:
        """`extra_modules`: (name, .ko bytes, parameters) that /init loads during boot."""
        dead.check(target)
        kwargs.setdefault("boot_timeout", request.config.getoption("boot_timeout"))
        own = initrd if profile.modules == base_profile.modules else \
            rootfs.initramfs(kernel, profile, progress)     # other modules: its own
        workdir = machine_dir(request.config, target, request.node.name)
        if extra_modules:
            workdir.mkdir(parents=True, exist_ok=True)
            own = rootfs.with_modules(own, list(extra_modules), workdir / "initramfs.cpio")
        m = Machine(profile, kernel, own, workdir, **kwargs)
        dead.attach(m, target)          # its first boot; a kernel that never prints
        m.fail_on_boot_splat = splats_fail(request.config)
        made.append(m)
        request.node.stash.setdefault(_MACHINES, []).append(m)
        return m

    yield MachineFactory(make, machine_pool.snapshots)
    abnormal = []
    for m in made:
        try:
            m.close()
        except AbnormalShutdown as e:    # after closing the others: the test's teardown
            abnormal.append(e)
        left = m.splats.claim()          # printed while it shut down, after the test
        if left:
            record_splats(request.config, target, m, left, "between", request.node.nodeid)
    if abnormal:
        raise abnormal[0]


@pytest.fixture(scope="session")
def kernel_config(request: pytest.FixtureRequest, kernel: kernels.Kernel) -> dict[str, str]:
    """The kernel's CONFIG_ options: its config file, else the booted guest's
    /proc/config.gz (CONFIG_IKCONFIG_PROC), else empty."""
    opts = kernel.config_options()
    if opts:
        return opts
    m = request.getfixturevalue("machine_pool").get((), tag="shared")
    r = m.ssh.run("test -r /proc/config.gz && zcat /proc/config.gz")
    return kernels.parse_config(r.output) if r.status == 0 else {}


@pytest.fixture(autouse=True)
def _needs_config(request: pytest.FixtureRequest) -> None:
    m = request.node.get_closest_marker("needs_config")
    if not m or "kernel" not in request.fixturenames:
        return
    k: kernels.Kernel = request.getfixturevalue("kernel")
    opts = request.getfixturevalue("kernel_config")
    if not opts:
        pytest.skip(f"kernel {k.spec} has no readable config (no config file beside it, no "
                    f"/proc/config.gz); cannot check {', '.join(m.args)}")
    missing = [o for o in m.args if opts.get(f"CONFIG_{o}") not in ("y", "m")]
    if missing:
        pytest.skip(f"kernel {k.spec} lacks {', '.join('CONFIG_' + o for o in missing)}")


_MACHINES = pytest.StashKey[list]()
_ARTIFACTS = pytest.StashKey[Path]()
_SHARED_SPLATS = pytest.StashKey[list]()


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest):
    """Per test: the console and QMP log of its shared machine during the test."""
    CURRENT_TEST[0] = request.node.nodeid
    target = target_of(request.node)
    test_dir = artifacts_dir_of(request.config, request.node.nodeid, target)
    request.node.stash[_ARTIFACTS] = test_dir
    if target is not None:       # the release the target resolved to, for the summary
        k = request.getfixturevalue("kernel")
        request.node.user_properties.append(("release", k.release or "?"))
        request.node.user_properties.append(
            ("accel", request.getfixturevalue("profile").accelerator))
        why = request.config.stash.get(_ACCEL_NOTES, {}).get(target.id)
        if why:
            note(request, why)
    shared = request.getfixturevalue("machine") if "machine" in request.fixturenames else None
    start = (shared.console.size, len(shared.qmp.events)) if shared else None
    if shared:
        request.node.stash.setdefault(_MACHINES, []).append(shared)
    yield
    machines = request.node.stash.get(_MACHINES, [])
    if not machines:
        return
    test_dir.mkdir(parents=True, exist_ok=True)
    if shared and start:
        with open(shared.console_log, "rb") as fh:
            fh.seek(start[0])
            (test_dir / "console.log").write_bytes(fh.read())
        with open(test_dir / "qmp-events.jsonl", "w") as fh:
            fh.writelines(json.dumps(ev) + "\n" for ev in shared.qmp.events[start[1]:])
    for m in machines:
        link = test_dir / f"machine-{m.workdir.name}"
        if not link.exists():
            link.symlink_to(m.workdir)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    as_test_failure(report, call)
    if call.when == "call" or (call.when == "setup" and not report.passed):
        _judge_splats(item, report)
    if report.failed:
        lines = [f"test artifacts: {item.stash.get(_ARTIFACTS, '(none)')}"]
        for m in item.stash.get(_MACHINES, []):
            files = sorted(p.name for p in m.workdir.iterdir()) if m.workdir.is_dir() else []
            lines.append(f"machine {m.workdir}: {', '.join(files) or '(empty)'}")
        report.sections.append(("guestpm artifacts", "\n".join(lines)))


def _judge_splats(item: pytest.Item, report: pytest.TestReport) -> None:
    """The splats printed on the test's machines since the last claim are the test's
    (each console flushed first, so what the test made is read before its verdict), and
    so are those of the shared evidence it read (attach_splats): with --splats=fail
    each one that is not allowed FAILs it, quoting the splat."""
    found, flushed = [], []
    for m in dict.fromkeys(item.stash.get(_MACHINES, [])):
        m.last_test = item.nodeid
        flushed.append(flush_console(m))
        mine = m.splats.claim()
        if mine:
            record_splats(item.config, target_of(item), m, mine, "test", item.nodeid)
            retire_if_splatted(item.config, m, mine, f"a kernel splat during {item.nodeid}")
            found += mine
    took = [f for f in flushed if isinstance(f, float)]
    if took:
        item.user_properties.append(("console_flush_s", round(sum(took), 3)))
    problems = [f for f in flushed if isinstance(f, str)]
    if problems:
        report.sections.append(("console flush", "\n".join(problems)))
    found = list({(s.source, s.log, s.line): s
                  for s in found + item.stash.get(_SHARED_SPLATS, [])}.values())
    if not found:
        return
    # a known defect the test XFAILs on may print splats as part of its symptom: only
    # those of its own occurrence (the hung CPU's lockup and stall reports) are excused
    reason = getattr(report, "wasxfail", None)
    explained = [s for s in found if reason is not None and explains(reason, s)]
    bad = [s for s in found if not s.allowed and s not in explained]
    text = "\n\n".join(s.quote() + (f"\n  (allowed: {s.allowed.reason})" if s.allowed else
                                     "\n  (part of the known defect this test XFAILs on)"
                                     if s in explained else "")
                        for s in found)
    report.sections.append(("kernel splats", text))
    if not bad or not splats_fail(item.config):
        return
    first = bad[0]
    report.guestpm_reason = f"kernel splat ({first.kind}): {first.title}" + \
        (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")
    if report.failed:
        return                            # its own failure stays the message
    if hasattr(report, "wasxfail"):       # an xfail names another symptom: this is new
        del report.wasxfail
    report.outcome = "failed"
    report.longrepr = (f"{len(bad)} kernel splat(s) during the test (--splats=fail):\n\n"
                       + "\n\n".join(s.quote() for s in bad))


FLUSH_TIMEOUT = 10


def flush_console(m: Machine) -> float | str | None:
    """Write a marker into the kernel log of a live machine the test used over ssh and
    wait until its console reader has read it back: every record logged before it
    (a splat the test caused) is then in the machine's SplatLog, claimed by this test
    instead of the next.  The seconds it took; why not, if the marker never came back;
    None for a machine that cannot say (not running, crashed, never reached over ssh)
    or need not (nothing acted on it since its last flush: no ssh command, QMP command
    or console output; most tests that read a shared agent run)."""
    if not m.alive() or m.console is None or m.console.fatal_index is not None \
            or getattr(m, "_ssh", None) is None:
        return None
    if m.__dict__.get("flushed_at") == _activity(m):
        return None
    token = f"guestpm: console flush {secrets.token_hex(6)}"
    t0 = time.monotonic()
    try:
        # a guest left paused or suspended cannot answer; it is not waited for
        if m.qmp.execute("query-status", timeout=5)["status"] != "running":
            return None
        # level 0: printed at every console loglevel (a test may lower it to 1)
        m.ssh.run(f"echo '<0>{token}' > /dev/kmsg", timeout=FLUSH_TIMEOUT).check()
        m.wait_until(lambda: m.console.has_line(token), FLUSH_TIMEOUT,
                     "the console flush marker", interval=0.05)
    except Exception as e:          # a flush never decides a verdict
        return f"{m.workdir.name}: the console flush marker did not come back: " \
               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
    m.__dict__["flushed_at"] = _activity(m)
    return time.monotonic() - t0


def _activity(m: Machine) -> tuple:
    """What changes when anything acts on the guest or it prints."""
    def size(p) -> int:
        try:
            return p.stat().st_size
        except OSError:
            return -1
    return getattr(m._ssh, "commands", None), m.console.size, size(m.qmp_log)


# ------------------------------------------------------------------ reporting


