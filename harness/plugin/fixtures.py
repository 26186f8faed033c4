"""The fixtures a test asks for: its target's profile (under --accel), kernel, config and
initramfs; the target's machine pool and shared machine; a test's own machines
(`machine_factory`); the needs_config marker's SKIP; and each test's artifacts (its
shared machine's console and QMP log during the test, links to its machines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import AbnormalShutdown
from harness.image import rootfs
from harness.kernel import kernels
from harness.plan.targets import Target
from harness.plugin import accel
from harness.plugin.judging import ARTIFACTS, MACHINES, note
from harness.plugin.pool import CURRENT_TEST, MachineFactory, MachinePool, record_splats, watch
from harness.plugin.targets import artifacts_dir_of, machine_dir, results_dir, target_of
from harness.progress import progress
from harness.vm.machine import Machine

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


@pytest.fixture
def machine_factory(request: pytest.FixtureRequest, target: Target, kernel,
                    machine_pool: MachinePool):
    """Machines of the test's own (e.g. with other kernel parameters); closed after it.
    `.booted(...)` restores them from the target's snapshots where it can (pool.Snapshots)."""
    made: list[Machine] = []

    def make(profile: profiles.Profile = machine_pool.profile, extra_modules=(),
             **kwargs) -> Machine:
        """`extra_modules`: (name, .ko bytes, parameters) that /init loads during boot."""
        kwargs.setdefault("boot_timeout", request.config.getoption("boot_timeout"))
        own = machine_pool.initrd_for(profile)
        workdir = machine_dir(request.config, target, request.node.name)
        if extra_modules:
            workdir.mkdir(parents=True, exist_ok=True)
            own = rootfs.with_modules(own, list(extra_modules), workdir / "initramfs.cpio")
        m = Machine(profile, kernel, own, workdir, **kwargs)
        watch(m, request.config, target)    # its first boot; a kernel that never prints
        made.append(m)
        request.node.stash.setdefault(MACHINES, []).append(m)
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


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest):
    """Per test: the console and QMP log of its shared machine during the test."""
    CURRENT_TEST[0] = request.node.nodeid
    target = target_of(request.node)
    test_dir = artifacts_dir_of(request.config, request.node.nodeid, target)
    request.node.stash[ARTIFACTS] = test_dir
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
        request.node.stash.setdefault(MACHINES, []).append(shared)
    yield
    machines = request.node.stash.get(MACHINES, [])
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
