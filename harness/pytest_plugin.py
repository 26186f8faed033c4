"""pytest plugin: targets (kernel x arch), booted machines, artifacts, KTAP, matrix.

Options:  --kernel SPEC (repeatable; default the Debian kernels)
          --arch PROFILE (repeatable; default x86_64 and arm64)
          --results DIR  (artifacts, KTAP, JUnit, summary.md; default ./results)
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
scheduler sends each test file's tests for one target to one worker (`scope_of`), so
that machines a file shares (the L2 host, the PSCI hosts) boot once per run, not once
per worker.  The `xdist_group` mark is inert with pytest 9.2 and pytest-xdist 3.8
(xdist appends "@group" to item._nodeid, which pytest 9 no longer reads), which is why
the scope comes from the target in the test id instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import kernels, ktap, profiles, rootfs, summary
from .errors import AbnormalShutdown, BootError, GuestpmError
from .machine import Machine


class GuestpmWarning(UserWarning):
    """Something the run must show but no test owns (a pool machine's abnormal shutdown)."""


_counter = itertools.count()
_NOTES = pytest.StashKey[list]()       # lines about what was not collected, and why
_CURRENT: list[str] = [""]             # the nodeid of the test running in this process
ROOT = Path(__file__).resolve().parent.parent


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
            return _safe(f"debian-{rest}-{self.arch}")
        stem = Path(rest.split(",")[0].rstrip("/")).name or scheme
        digest = hashlib.sha1(self.kernel.encode()).hexdigest()[:8]
        return _safe(f"{stem[:24]}-{self.arch}-{digest}")

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
    g.addoption("--self-test", action="store_true",
                help="also run guestpm's own self-tests (harness failure paths, build, bisect)")
    g.addoption("--splats", choices=("fail", "warn"), default="fail",
                help="a kernel splat fails the test during which it is printed (fail, "
                     "default), or is only counted in the summary (warn)")
    g.addoption("--all-l2-modes", action="store_true",
                help="run the L2 tests that are VHE-only by default in nVHE too")
    g.addoption("--guest-kernel", action="append", default=[], metavar="SPEC",
                help="an L2 guest kernel of the reference-VMM tests (any --kernel spec; "
                     "repeatable: host x guest cells); default: the kernel under test, as "
                     "host and guest")


def targets(config: pytest.Config) -> list[Target]:
    ks = config.getoption("kernel") or list(kernels.DEFAULT_KERNELS)
    archs = config.getoption("arch") or list(profiles.DEFAULT_ARCHES)
    for a in archs:
        profiles.get(a)          # unknown arch: one clear line, before anything boots
    for k in ks:
        kernels.parse_spec(k)
    return [Target(k, a) for k in ks for a in archs]


def check_targets(config: pytest.Config) -> None:
    """Everything about the targets that can be known before booting: specs, images
    (there, of the arch, whole), QEMU and firmware.  GuestpmError on the first problem."""
    ts = targets(config)
    for t in ts:
        kernels.check_spec(t.kernel, profiles.get(t.arch))
    for p in {profiles.get(t.arch) for t in ts}:
        Machine.check_host(p)


def _runs_e2e(config: pytest.Config) -> bool:
    """Whether the selected paths include the end-to-end tests (unit tests need no QEMU)."""
    e2e = ROOT / "tests" / "e2e"
    for arg in config.args or ["tests"]:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == e2e or e2e in path.parents or path in e2e.parents:
            return True
    return False


def results_dir(config: pytest.Config) -> Path:
    return Path(config.getoption("results")).resolve()


def _safe(name: str, limit: int = 150) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")
    if len(name) > limit:       # readable head, unique tail
        name = name[:limit - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def artifacts_dir_of(config: pytest.Config, nodeid: str, target: Target | None) -> Path:
    """results/tests/<test>: the target's short slug instead of its spec."""
    if target is not None:
        nodeid = nodeid.replace(target.id, target.slug)
    nodeid = nodeid.removeprefix("tests/e2e/")
    return results_dir(config) / "tests" / _safe(nodeid, 120)


def progress(msg: str) -> None:
    print(f"guestpm: {msg}", file=sys.__stderr__, flush=True)


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
                 "slow: opt-in (--slow): builds a whole kernel tree from the fragments"):
        config.addinivalue_line("markers", line)
    res = results_dir(config)
    config.stash[_NOTES] = []
    if not hasattr(config, "workerinput"):
        if _runs_e2e(config) and not config.option.collectonly:
            try:
                check_targets(config)
            except GuestpmError as e:        # before any worker starts or anything boots
                pytest.exit(f"guestpm: error: {e}", returncode=2)
        # a new run's artifacts never mix with an old run's (machine dir names repeat);
        # --collect-only runs nothing, so it leaves a running run's artifacts alone
        for old in ("machines", "tests", "targets") if not config.option.collectonly else ():
            shutil.rmtree(res / old, ignore_errors=True)
        if not config.option.collectonly:
            (res / "splats.jsonl").unlink(missing_ok=True)
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


def _target_of(item: pytest.Item) -> Target | None:
    t = getattr(item, "callspec", None) and item.callspec.params.get("target")
    return t if isinstance(t, Target) else None


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
                from . import build
                try:
                    build.toolchain(arch)
                    tools[arch] = None
                except GuestpmError as e:
                    tools[arch] = str(e)
            if tools[arch]:
                return f"self-tests that build kernels: {tools[arch]}"
        if config.getoption("arch") and not set(m.args) & set(config.getoption("arch")):
            return f"self-tests that build and boot {'/'.join(m.args)}, not selected by --arch"
    t = _target_of(item)
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
        t = _target_of(item)
        family = summary.family_of(item.nodeid.split("::")[0])
        guest = getattr(getattr(item, "callspec", None), "params", {}).get("guest_spec")
        if guest:                       # a host x guest cell of the L2 families
            family += f" (guest {summary.short_spec(guest)})"
        item.user_properties.append(("family", family))
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
    config.stash[_NOTES] = [f"{n} {'test' if n == 1 else 'tests'} not collected: {r}"
                            if not r.startswith("tests do not apply") else
                            f"{n} {r if n > 1 else r.replace('tests do', 'test does')}"
                            for r, n in why.items()]


def scope_of(nodeid: str, target_ids: list[str]) -> str:
    """The unit of work an xdist worker takes: a test file's tests of one target (pure).
    Tests without a target (unit tests, self-tests) are grouped by file."""
    file = nodeid.split("::")[0]
    m = re.search(r"\[(.*)\]$", nodeid)
    if m:
        params = m.group(1)
        for t in sorted(target_ids, key=len, reverse=True):
            if params == t or params.endswith("-" + t) or params.startswith(t + "-") \
                    or f"-{t}-" in params:
                return f"{file}::{t}"
    return file


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup as it was meant: a target's tests of one file stay on one worker."""
    if config.getoption("dist", None) != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling
    ids = [t.id for t in targets(config)]

    class TargetScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, ids)

    return TargetScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):    # xdist worker: tell the controller
        session.config.workeroutput["guestpm_notes"] = session.config.stash.get(_NOTES, [])


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def profile(target: Target) -> profiles.Profile:
    return profiles.get(target.arch)


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


def _machine_dir(config: pytest.Config, target: Target, tag: str) -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return results_dir(config) / "machines" / \
        f"{target.slug}-{_safe(tag, 60)}-{worker}-{next(_counter)}"


class DeadTargets:
    """Targets whose kernel did not boot, shared by all xdist workers through files in
    the results directory: the first failure is recorded, and every later boot of the
    target fails at once, pointing at it, instead of waiting out its own timeout."""

    def __init__(self, config: pytest.Config):
        self.dir = results_dir(config) / "targets"

    def _file(self, target: Target) -> Path:
        return self.dir / f"{target.slug}.did-not-boot"

    def check(self, target: Target) -> None:
        f = self._file(target)
        if f.exists():
            raise BootError(f"target did not boot: see {f.read_text().strip()}")

    def record(self, target: Target, error: Exception) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self._file(target)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        try:
            with open(f, "x") as fh:             # the first failure wins
                fh.write(f"{_CURRENT[0] or target.id} ({first})\n")
        except FileExistsError:
            pass


def _launch(m: Machine, config: pytest.Config, target: Target, shared: bool) -> Machine:
    """Boot `m` unless its target is known dead; record the target as dead when its
    shared machine does not boot (a splat during boot included), or when any of its
    machines stays silent."""
    dead = DeadTargets(config)
    dead.check(target)
    m.on_silent = lambda e: dead.record(target, e)
    m.fail_on_boot_splat = _splats_fail(config)
    try:
        m.launch()
        m.wait_ready()
    except GuestpmError as e:
        boot = m.splats.claim()
        if boot:
            record_splats(config, target, m, boot, "boot", _CURRENT[0])
        if shared:
            dead.record(target, e)
        raise
    return m


# ------------------------------------------------------------------ kernel splats

def _splats_fail(config: pytest.Config) -> bool:
    return config.getoption("splats") == "fail"


def record_splats(config: pytest.Config, target: Target | None, m: Machine, found: list,
                  when: str, test: str | None) -> None:
    """Append to results/splats.jsonl (every xdist worker appends; the controller counts
    them per target in the summary).  `when`: test, between (after `test`), boot."""
    path = results_dir(config) / "splats.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for s in found:
            fh.write(json.dumps({"target": target.id if target else None, "when": when,
                                 "test": test, "machine": str(m.workdir), **s.record()})
                     + "\n")


def read_splats(res: Path) -> list[dict]:
    path = res / "splats.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def retire_if_splatted(config: pytest.Config, m: Machine, found: list, why: str) -> None:
    """A machine whose own kernel reported a splat serves no further test: lockdep, for
    one, switches itself off after its first report (--splats=warn keeps it)."""
    if _splats_fail(config) and any(s.own and not s.allowed for s in found):
        m.retired = why


class MachinePool:
    """The booted machines of one target, one per variant (extra kernel parameters,
    QEMU arguments, another profile of the same arch; none: `machine`), booted on
    first use and shared by the target's tests for the session.  A machine that printed
    a kernel splat is replaced by a fresh boot (`usable`)."""

    def __init__(self, config: pytest.Config, target: Target, profile, kernel, initrd):
        self.config, self.target = config, target
        self.profile, self.kernel, self.initrd = profile, kernel, initrd
        self.machines: dict[tuple, Machine] = {}
        self.failed: dict[tuple, Exception] = {}
        self.wrappers: dict = {}          # reuse(): objects built around a pool machine

    def get(self, append: tuple[str, ...], tag: str, qemu_args: tuple[str, ...] = (),
            profile: profiles.Profile | None = None) -> Machine:
        profile = profile or self.profile
        key = (append, qemu_args, profile)
        if key in self.failed:          # one failed boot is reported once per test, not retried
            raise self.failed[key]
        old = self.machines.get(key)
        if old is not None and not self.usable(old):
            del self.machines[key]
            self._close(old)
        if key not in self.machines:
            initrd = self.initrd if profile.modules == self.profile.modules else \
                rootfs.initramfs(self.kernel, profile, progress)
            m = Machine(profile, self.kernel, initrd,
                        _machine_dir(self.config, self.target, tag), append=append,
                        qemu_args=qemu_args, boot_timeout=self.config.getoption("boot_timeout"))
            self.machines[key] = m
            try:
                _launch(m, self.config, self.target,
                        shared=not append and not qemu_args and profile == self.profile)
            except Exception as e:
                self.failed[key] = e
                raise
        return self.machines[key]

    def usable(self, m: Machine) -> bool:
        """Whether `m` may serve the next test.  Splats no test claimed were printed
        between two tests: they go to the target and the machine in the summary, are
        never blamed on a test, and retire the machine."""
        between = m.splats.claim()
        if between:
            last = getattr(m, "last_test", None)
            record_splats(self.config, self.target, m, between, "between", last)
            retire_if_splatted(self.config, m, between,
                               f"a kernel splat between tests (after {last})")
        return m.retired is None

    def reuse(self, key, make, machine_of=lambda w: w.machine):
        """An object built around a pool machine (a PSCI or vfio host, an L2 host),
        cached per key and rebuilt when its machine is retired."""
        w = self.wrappers.get(key)
        if w is None or not self.usable(machine_of(w)):
            w = self.wrappers[key] = make()
        return w

    def _close(self, m: Machine) -> None:
        try:
            m.close()
        except AbnormalShutdown as e:     # no test owns a pool machine: a warning, which
            warnings.warn(GuestpmWarning(  # the run's warnings summary lists
                f"{self.target.id}: {e} (after {getattr(m, 'last_test', None)})"))
        left = m.splats.claim()           # printed after its last test, while it shut down
        if left:
            record_splats(self.config, self.target, m, left, "between",
                          getattr(m, "last_test", None))

    def close(self) -> None:
        for m in self.machines.values():
            self._close(m)


@pytest.fixture(scope="session")
def machine_pool(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd):
    pool = MachinePool(request.config, target, profile, kernel, initrd)
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


class MachineFactory:
    """`machine_factory(...)`: a test's own machine, not started; `.booted(...)`: the
    same, launched and ready (its ssh host key seen)."""

    def __init__(self, make):
        self._make = make

    def __call__(self, *args, **kwargs) -> Machine:
        return self._make(*args, **kwargs)

    def booted(self, *args, **kwargs) -> Machine:
        m = self._make(*args, **kwargs)
        m.launch()
        m.wait_ready()
        return m


@pytest.fixture
def machine_factory(request: pytest.FixtureRequest, target: Target, profile, kernel, initrd):
    """Machines of the test's own (e.g. with other kernel parameters); closed after it."""
    made: list[Machine] = []
    base_profile = profile

    dead = DeadTargets(request.config)

    def make(profile: profiles.Profile = profile, extra_modules=(), **kwargs) -> Machine:
        """`extra_modules`: (name, .ko bytes, parameters) that /init loads during boot."""
        dead.check(target)
        kwargs.setdefault("boot_timeout", request.config.getoption("boot_timeout"))
        own = initrd if profile.modules == base_profile.modules else \
            rootfs.initramfs(kernel, profile, progress)     # other modules: its own
        workdir = _machine_dir(request.config, target, request.node.name)
        if extra_modules:
            workdir.mkdir(parents=True, exist_ok=True)
            own = rootfs.with_modules(own, list(extra_modules), workdir / "initramfs.cpio")
        m = Machine(profile, kernel, own, workdir, **kwargs)
        m.on_silent = lambda e: dead.record(target, e)   # a kernel that never prints
        m.fail_on_boot_splat = _splats_fail(request.config)
        made.append(m)
        request.node.stash.setdefault(_MACHINES, []).append(m)
        return m

    yield MachineFactory(make)
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


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest):
    """Per test: the console and QMP log of its shared machine during the test."""
    _CURRENT[0] = request.node.nodeid
    target = _target_of(request.node)
    test_dir = artifacts_dir_of(request.config, request.node.nodeid, target)
    request.node.stash[_ARTIFACTS] = test_dir
    if target is not None:       # the release the target resolved to, for the summary
        k = request.getfixturevalue("kernel")
        request.node.user_properties.append(("release", k.release or "?"))
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
    if call.when == "call" or (call.when == "setup" and not report.passed):
        _judge_splats(item, report)
    if report.failed:
        lines = [f"test artifacts: {item.stash.get(_ARTIFACTS, '(none)')}"]
        for m in item.stash.get(_MACHINES, []):
            files = sorted(p.name for p in m.workdir.iterdir()) if m.workdir.is_dir() else []
            lines.append(f"machine {m.workdir}: {', '.join(files) or '(empty)'}")
        report.sections.append(("guestpm artifacts", "\n".join(lines)))


def _judge_splats(item: pytest.Item, report: pytest.TestReport) -> None:
    """The splats printed on the test's machines since the last claim are the test's:
    with --splats=fail each one that is not allowed FAILs it, quoting the splat."""
    found = []
    for m in dict.fromkeys(item.stash.get(_MACHINES, [])):
        m.last_test = item.nodeid
        mine = m.splats.claim()
        if mine:
            record_splats(item.config, _target_of(item), m, mine, "test", item.nodeid)
            retire_if_splatted(item.config, m, mine, f"a kernel splat during {item.nodeid}")
            found += mine
    if not found:
        return
    bad = [s for s in found if not s.allowed]
    text = "\n\n".join(s.quote() + (f"\n  (allowed: {s.allowed.reason})" if s.allowed else "")
                        for s in found)
    report.sections.append(("kernel splats", text))
    if not bad or not _splats_fail(item.config):
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


# ------------------------------------------------------------------ reporting

def _reason(report: pytest.TestReport) -> str:
    splat = getattr(report, "guestpm_reason", None)
    if splat and report.failed and isinstance(report.longrepr, str):
        return splat
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
        self.props: dict[str, dict] = {}
        self.worker_notes: list[str] = []

    def pytest_testnodedown(self, node, error) -> None:
        """xdist: what a worker did not collect (every worker collects the same)."""
        notes = getattr(node, "workeroutput", {}).get("guestpm_notes", [])
        if notes and not self.worker_notes:
            self.worker_notes = list(notes)

    def notes(self) -> list[str]:
        return self.worker_notes or self.config.stash.get(_NOTES, [])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = self.props[report.nodeid] = dict(report.user_properties)
        target, kind = props.get("target", ""), props.get("kind")
        # the kernel's verdicts, apart from guestpm's self-tests and from stand-ins (our
        # code playing an unmerged series: a PASS there is not the kernel's)
        self.target_of[report.nodeid] = summary.SELF_TEST if not target or kind == "self-test" \
            else f"{summary.STAND_IN} {target}" if kind == "stand-in" else target
        path, _, func = report.nodeid.partition("::")
        # the target is the KTAP subtest; other parameters stay in the test's name
        func, _, params = func.partition("[")
        params = params.rstrip("]").replace(target, "").strip("-") if target else \
            params.rstrip("]")
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

    def matrix(self) -> summary.Matrix:
        verdicts, releases = [], {}
        for nodeid, r in self.results.items():
            props = self.props.get(nodeid, {})
            target, row = props.get("target"), self.target_of[nodeid]
            if row != summary.SELF_TEST and "release" in props:
                releases[row] = props["release"]
            art = artifacts_dir_of(self.config, nodeid, self._target(target))
            link = str(art.relative_to(self.res)) if art.exists() else None
            verdicts.append(summary.Verdict(row, props.get("family") or "unit", r.outcome,
                                            nodeid, link))
        m = summary.Matrix.of(verdicts, releases)
        m.splats = read_splats(self.res)
        m.info = sorted({f"{self.target_of[n]}: {v}" for n, props in self.props.items()
                         for k, v in props.items() if k == "info"})
        return m

    @staticmethod
    def _target(target_id: str | None) -> Target | None:
        if not target_id or "/" not in target_id:
            return None
        kernel, _, arch = target_id.rpartition("/")
        return Target(kernel, arch)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        (self.res / "guestpm.ktap").write_text(ktap.render(self.groups()))
        if self.results:
            (self.res / "summary.md").write_text(self.matrix().markdown())

    def pytest_terminal_summary(self, terminalreporter) -> None:
        groups = self.groups()
        tr = terminalreporter
        if not groups:
            for note in self.notes():
                tr.write_line(note)
            return
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
        tr.section("guestpm summary (kernel x arch x family)")
        tr.write_line(self.matrix().text())
        for note in self.notes():
            tr.write_line(note)
        tr.write_line(f"KTAP: {self.res / 'guestpm.ktap'}   JUnit: "
                      f"{getattr(self.config.option, 'xmlpath', None)}   "
                      f"summary: {self.res / 'summary.md'}   artifacts: {self.res}")
