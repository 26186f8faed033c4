"""pytest plugin: targets (kernel x arch), booted machines, artifacts, KTAP, matrix.

Options:  --kernel SPEC (repeatable; default the Debian kernels)
          --arch PROFILE (repeatable; default x86_64 and arm64)
          --results DIR  (artifacts, KTAP, JUnit; default ./results)
Markers:  @pytest.mark.arch("arm64", ...)       other arches SKIP, naming the arch
          @pytest.mark.needs_config("KVM", ...)  SKIP when the kernel's config lacks it
          @pytest.mark.harness_selftest          runs on the first target only (of its arch)

Under pytest-xdist the tests of one target are marked to land on one worker
(xdist_group), so that each target boots once per run; machines, sockets and ports
are per process.  Known defect: with pytest 9.2 and pytest-xdist 3.8 the mark is
inert (xdist appends "@group" to item._nodeid, which pytest 9 no longer reads: it
keeps the id in item._id), so a target's tests spread over the workers and each
worker boots its own machines.  Verdicts are unaffected; boots are duplicated.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import kernels, ktap, profiles, rootfs
from .machine import Machine

_counter = itertools.count()


@dataclass(frozen=True)
class Target:
    kernel: str
    arch: str

    @property
    def id(self) -> str:
        return f"{self.kernel}/{self.arch}"

    def __str__(self) -> str:
        return self.id


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("guestpm")
    g.addoption("--kernel", action="append", default=[], metavar="SPEC",
                help=f"kernel under test (repeatable): {', '.join(kernels.DEFAULT_KERNELS)}, "
                     "path:IMAGE[,modules=DIR], build:DIR|TREE; default: all Debian labels")
    g.addoption("--arch", action="append", default=[], metavar="PROFILE",
                help=f"machine profile (repeatable): {', '.join(profiles.PROFILES)}; "
                     f"default: {', '.join(profiles.DEFAULT_ARCHES)}")
    g.addoption("--results", default="results", metavar="DIR",
                help="where artifacts, KTAP and JUnit go (default: ./results)")
    g.addoption("--slow", action="store_true",
                help="also run tests marked slow (a full kernel build and its PSCI run)")
    g.addoption("--boot-timeout", type=float, default=300, metavar="SECONDS",
                help="bound on one boot to a shell (default 300; TCG is slow)")


def targets(config: pytest.Config) -> list[Target]:
    ks = config.getoption("kernel") or list(kernels.DEFAULT_KERNELS)
    archs = config.getoption("arch") or list(profiles.DEFAULT_ARCHES)
    for a in archs:
        profiles.get(a)          # unknown arch: one clear line, before anything boots
    for k in ks:
        kernels.parse_spec(k)
    return [Target(k, a) for k in ks for a in archs]


def results_dir(config: pytest.Config) -> Path:
    return Path(config.getoption("results")).resolve()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")[:150]


def progress(msg: str) -> None:
    print(f"guestpm: {msg}", file=sys.__stderr__, flush=True)


# ------------------------------------------------------------------ configuration

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in ("arch(name, ...): run only on these machine profiles",
                 "needs_config(option, ...): skip unless the kernel config has CONFIG_option",
                 "harness_selftest: checks of the harness itself; first target only",
                 "e2e: boots real kernels in QEMU",
                 "slow: opt-in (--slow): builds a whole kernel tree from the fragments"):
        config.addinivalue_line("markers", line)
    res = results_dir(config)
    if not hasattr(config, "workerinput"):
        # a new run's artifacts never mix with an old run's (machine dir names repeat)
        for old in ("machines", "tests"):
            shutil.rmtree(res / old, ignore_errors=True)
        res.mkdir(parents=True, exist_ok=True)
        if getattr(config.option, "xmlpath", "missing") is None:
            config.option.xmlpath = str(res / "junit.xml")
        config.pluginmanager.register(Reporter(config, res), "guestpm-reporter")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        ts = targets(metafunc.config)
        if metafunc.definition.get_closest_marker("harness_selftest"):
            # the first target the test can run on (an arch-specific self-test must
            # not land on a target of another arch and skip everywhere)
            arch = metafunc.definition.get_closest_marker("arch")
            ts = [t for t in ts if not arch or t.arch in arch.args][:1] or ts[:1]
        metafunc.parametrize("target", ts, ids=[t.id for t in ts], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("slow"):
        # opt-in tests are deselected, not skipped: a SKIP line means "feature absent"
        slow = [i for i in items if i.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if not i.get_closest_marker("slow")]
    for item in items:
        t = getattr(item, "callspec", None) and item.callspec.params.get("target")
        if not isinstance(t, Target):
            continue
        item.add_marker(pytest.mark.xdist_group(t.id))
        item.user_properties.append(("target", t.id))
        m = item.get_closest_marker("arch")
        if m and t.arch not in m.args:
            item.add_marker(pytest.mark.skip(
                reason=f"{'/'.join(m.args)}-only test; this target is {t.arch}"))


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def profile(target: Target) -> profiles.Profile:
    return profiles.get(target.arch)


@pytest.fixture(scope="session")
def kernel(target: Target, profile: profiles.Profile) -> kernels.Kernel:
    return kernels.resolve(target.kernel, profile, progress)


@pytest.fixture(scope="session")
def initrd(kernel: kernels.Kernel, profile: profiles.Profile) -> Path:
    return rootfs.initramfs(kernel, profile, progress)


def _machine_dir(config: pytest.Config, target: Target, tag: str) -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return results_dir(config) / "machines" / f"{_safe(target.id)}-{tag}-{worker}-{next(_counter)}"


class MachinePool:
    """The booted machines of one target, one per variant (extra kernel parameters,
    QEMU arguments, another profile of the same arch; none: `machine`), booted on
    first use and shared by the target's tests for the session."""

    def __init__(self, config: pytest.Config, target: Target, profile, kernel, initrd):
        self.config, self.target = config, target
        self.profile, self.kernel, self.initrd = profile, kernel, initrd
        self.machines: dict[tuple, Machine] = {}
        self.failed: dict[tuple, Exception] = {}

    def get(self, append: tuple[str, ...], tag: str, qemu_args: tuple[str, ...] = (),
            profile: profiles.Profile | None = None) -> Machine:
        profile = profile or self.profile
        key = (append, qemu_args, profile)
        if key in self.failed:          # one failed boot is reported once per test, not retried
            raise self.failed[key]
        if key not in self.machines:
            initrd = self.initrd if profile.modules == self.profile.modules else \
                rootfs.initramfs(self.kernel, profile, progress)
            m = Machine(profile, self.kernel, initrd,
                        _machine_dir(self.config, self.target, _safe(tag)), append=append,
                        qemu_args=qemu_args, boot_timeout=self.config.getoption("boot_timeout"))
            self.machines[key] = m
            try:
                m.launch()
                m.wait_ready()
            except Exception as e:
                self.failed[key] = e
                raise
        return self.machines[key]

    def close(self) -> None:
        for m in self.machines.values():
            m.close()


@pytest.fixture(scope="session")
def machine_pool(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd):
    pool = MachinePool(request.config, target, profile, kernel, initrd)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def machine(machine_pool: MachinePool) -> Machine:
    """One booted machine per target, shared by the target's tests."""
    return machine_pool.get((), tag="shared")


def attach_machine(request: pytest.FixtureRequest, m: Machine) -> None:
    """Name `m`'s artifacts in the test's failure report and results/tests/ links."""
    request.node.stash.setdefault(_MACHINES, []).append(m)


@pytest.fixture
def machine_factory(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd):
    """Machines of the test's own (e.g. with other kernel parameters); closed after it."""
    made: list[Machine] = []
    base_profile = profile

    def make(profile: profiles.Profile = profile, **kwargs) -> Machine:
        kwargs.setdefault("boot_timeout", request.config.getoption("boot_timeout"))
        own = initrd if profile.modules == base_profile.modules else \
            rootfs.initramfs(kernel, profile, progress)     # other modules: its own
        m = Machine(profile, kernel, own,
                    _machine_dir(request.config, target, _safe(request.node.name)), **kwargs)
        made.append(m)
        request.node.stash.setdefault(_MACHINES, []).append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture(autouse=True)
def _needs_config(request: pytest.FixtureRequest) -> None:
    m = request.node.get_closest_marker("needs_config")
    if not m or "kernel" not in request.fixturenames:
        return
    k: kernels.Kernel = request.getfixturevalue("kernel")
    opts = k.config_options()
    if not opts:
        pytest.skip(f"kernel {k.spec} has no readable config; cannot check "
                    f"{', '.join(m.args)}")
    missing = [o for o in m.args if opts.get(f"CONFIG_{o}") not in ("y", "m")]
    if missing:
        pytest.skip(f"kernel {k.spec} lacks {', '.join('CONFIG_' + o for o in missing)}")


_MACHINES = pytest.StashKey[list]()
_ARTIFACTS = pytest.StashKey[Path]()


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest):
    """Per test: the console and QMP log of its shared machine during the test."""
    test_dir = results_dir(request.config) / "tests" / _safe(request.node.nodeid)
    request.node.stash[_ARTIFACTS] = test_dir
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
            for ev in shared.qmp.events[start[1]:]:
                fh.write(json.dumps(ev) + "\n")
    for m in machines:
        link = test_dir / f"machine-{m.workdir.name}"
        if not link.exists():
            link.symlink_to(m.workdir)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        lines = [f"test artifacts: {item.stash.get(_ARTIFACTS, '(none)')}"]
        for m in item.stash.get(_MACHINES, []):
            files = sorted(p.name for p in m.workdir.iterdir()) if m.workdir.is_dir() else []
            lines.append(f"machine {m.workdir}: {', '.join(files) or '(empty)'}")
        report.sections.append(("guestpm artifacts", "\n".join(lines)))


# ------------------------------------------------------------------ reporting

def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    if hasattr(report, "wasxfail"):
        return report.wasxfail
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr or "").strip().splitlines()[-1:][0] if report.longrepr else ""


class Reporter:
    """Runs in the controlling process only: KTAP file and the verdict matrix."""

    def __init__(self, config: pytest.Config, res: Path):
        self.config, self.res = config, res
        self.results: dict[str, ktap.Result] = {}
        self.target_of: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        target = self.target_of[report.nodeid] = props.get("target", "host")
        path, _, func = report.nodeid.partition("::")
        # the target is the KTAP subtest; other parameters stay in the test's name
        func, _, params = func.partition("[")
        params = params.rstrip("]").replace(target, "").strip("-")
        name = f"{Path(path).stem}::{func}" + (f"[{params}]" if params else "")
        prev = self.results.get(report.nodeid)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            elif report.when == "setup" and report.failed:
                outcome = "error"
            else:
                outcome = report.outcome
            self.results[report.nodeid] = ktap.Result(name, outcome, _reason(report))
        elif report.when == "teardown" and report.failed and prev is not None:
            self.results[report.nodeid] = ktap.Result(name, "error",
                                                      "teardown: " + _reason(report))

    def groups(self) -> dict[str, list[ktap.Result]]:
        out: dict[str, list[ktap.Result]] = {}
        for nodeid, r in sorted(self.results.items()):   # stable order whatever xdist did
            out.setdefault(self.target_of[nodeid], []).append(r)
        return out

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        (self.res / "guestpm.ktap").write_text(ktap.render(self.groups()))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        groups = self.groups()
        if not groups:
            return
        tr = terminalreporter
        tr.section("guestpm verdicts (kernel x arch x test)")
        width = min(max(len(r.name) for rs in groups.values() for r in rs), 72)
        label = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP",
                 "xfailed": "XFAIL", "xpassed": "XPASS"}
        cols = shutil.get_terminal_size((160, 20)).columns
        for target, rs in groups.items():
            kernel, _, arch = target.rpartition("/") if "/" in target else (target, "", "-")
            for r in rs:
                line = f"{kernel:<12} {arch:<10} {r.name:<{width}}  {label[r.outcome]:<5}"
                if r.outcome != "passed" and r.reason:   # only the reason is cut to fit
                    line += "  " + r.reason.splitlines()[0][:max(cols - len(line) - 2, 60)]
                tr.write_line(line.rstrip())
        tr.write_line(f"KTAP: {self.res / 'guestpm.ktap'}   JUnit: "
                      f"{getattr(self.config.option, 'xmlpath', None)}   "
                      f"artifacts: {self.res}")
