"""The machines of one target: booted on first use, shared by its tests, retired after a
kernel splat; a test's own machines; targets that did not boot, shared between xdist
workers; and the record of the splats they printed (results/splats.jsonl)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import AbnormalShutdown, BootError, GuestpmError
from harness.image import rootfs
from harness.plugin.targets import Target, machine_dir, results_dir
from harness.progress import progress
from harness.vm.machine import Machine


class GuestpmWarning(UserWarning):
    """Something the run must show but no test owns (a pool machine's abnormal shutdown)."""


CURRENT_TEST: list[str] = [""]             # the nodeid of the test running in this process


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
                fh.write(f"{CURRENT_TEST[0] or target.id} ({first})\n")
        except FileExistsError:
            pass


def launch(m: Machine, config: pytest.Config, target: Target, shared: bool) -> Machine:
    """Boot `m` unless its target is known dead; record the target as dead when its
    shared machine does not boot (a splat during boot included), or when any of its
    machines stays silent."""
    dead = DeadTargets(config)
    dead.check(target)
    m.on_silent = lambda e: dead.record(target, e)
    m.fail_on_boot_splat = splats_fail(config)
    try:
        m.launch()
        m.wait_ready()
    except GuestpmError as e:
        boot = m.splats.claim()
        if boot:
            record_splats(config, target, m, boot, "boot", CURRENT_TEST[0])
        if shared:
            dead.record(target, e)
        raise
    return m


def splats_fail(config: pytest.Config) -> bool:
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
    if splats_fail(config) and any(s.own and not s.allowed for s in found):
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
                        machine_dir(self.config, self.target, tag), append=append,
                        qemu_args=qemu_args, boot_timeout=self.config.getoption("boot_timeout"))
            self.machines[key] = m
            try:
                launch(m, self.config, self.target,
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
