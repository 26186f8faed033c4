"""The machines of one target: booted on first use, shared by its tests, retired after a
kernel splat; a test's own machines, restored from snapshots where they can be; targets
that did not boot, shared between xdist workers; and the record of the splats they printed
(results/splats.jsonl) and of every boot and restore (results/boots.jsonl)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import AbnormalShutdown, BootError, GuestpmError, first_line
from harness.image import rootfs
from harness.plan.targets import Target
from harness.plugin.targets import machine_dir, results_dir
from harness.progress import progress
from harness.vm import snapshot
from harness.vm.boot import Snapshot
from harness.vm.l2 import L2Run
from harness.vm.machine import Machine


class GuestpmWarning(UserWarning):
    """Something the run must show but no test owns (a pool machine's abnormal shutdown)."""


CURRENT_TEST: list[str] = [""]             # the nodeid of the test running in this process
FIRST_BOOT = "the first of its configuration"
RESTORE_PROBE = "the restore probe of this QEMU (once per QEMU binary)"


class BootFailed(BootError):
    """A machine of a target that has booted before in this run did not boot: the
    failure of the test that needed it (a FAIL, `as_test_failure`), which says what the
    boot waited for and the console's tail; the target's other tests go on."""


class DeadTargets:
    """Targets whose kernel never booted in this run, shared by all xdist workers through
    files in the results directory.  A target's first boot (any machine of it, booted or
    restored) is recorded; until then, a machine of it that stays silent, or its shared
    machine failing to boot, records the target as dead, and every later boot of it
    fails at once, pointing at that failure, instead of waiting out its own timeout.
    Once the target has booted, a failed boot condemns nothing but the test it was for."""

    def __init__(self, config: pytest.Config):
        self.dir = results_dir(config) / "targets"

    def _file(self, target: Target) -> Path:
        return self.dir / f"{target.slug}.did-not-boot"

    def _booted_file(self, target: Target) -> Path:
        return self.dir / f"{target.slug}.booted"

    def booted(self, target: Target) -> bool:
        return self._booted_file(target).exists()

    def mark_booted(self, target: Target) -> None:
        if not self.booted(target):
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self._booted_file(target), "a") as fh:   # the first boot's test
                fh.write(f"{CURRENT_TEST[0] or target.id}\n")

    def check(self, target: Target) -> None:
        f = self._file(target)
        if f.exists() and not self.booted(target):     # another worker may have booted it
            raise BootError(f"target did not boot: see {f.read_text().strip()}")

    def record(self, target: Target, error: Exception) -> None:
        if self.booted(target):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self._file(target)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        try:
            with open(f, "x") as fh:             # the first failure wins
                fh.write(f"{CURRENT_TEST[0] or target.id} ({first})\n")
        except FileExistsError:
            pass

    def attach(self, m: Machine, target: Target) -> None:
        """`m` records the target as booted once it is ready, as dead if it stays silent
        before the target ever booted (its kernel never starts)."""
        m.on_silent = lambda e: self.record(target, e)
        m.on_ready = lambda: self.mark_booted(target)


def as_test_failure(report: pytest.TestReport, call: pytest.CallInfo) -> None:
    """A set-up that raised BootFailed is reported as the test's FAIL, not as an ERROR of
    its set-up: the kernel under test failed to boot for it (pytest_runtest_makereport)."""
    if call.when == "setup" and report.failed and call.excinfo is not None and \
            call.excinfo.errisinstance(BootFailed):
        report.when = "call"


def watch(m: Machine, config: pytest.Config, target: Target) -> DeadTargets:
    """Refuse `m` when its target is known dead; `m` records its target's first boot,
    and the target as dead if it stays silent before that."""
    dead = DeadTargets(config)
    dead.check(target)
    dead.attach(m, target)
    m.fail_on_boot_splat = splats_fail(config)
    return dead


def launch(m: Machine, config: pytest.Config, target: Target, shared: bool,
           why: str) -> Machine:
    """Boot `m` unless its target is known dead.  When it fails: if the target has booted
    before in this run, BootFailed (the test's failure); else, for its shared machine (a
    splat during boot included) or a machine that stays silent, the target is recorded
    as dead.  (`m` may be one whose restore failed: it boots again.)
    `why`: why it boots rather than being restored (`Snapshots.boot_reason`)."""
    dead = watch(m, config, target)
    try:
        m.relaunch() if m.proc is not None else m.launch()
        m.wait_ready()
        record_boot(config, target, m, why=why)
    except GuestpmError as e:
        boot = m.splats.claim()
        if boot:
            record_splats(config, target, m, boot, "boot", CURRENT_TEST[0])
        if dead.booted(target):
            raise BootFailed(f"{target.id} booted earlier in this run, but this boot of its "
                             f"{m.workdir.name} machine failed: {e}") from e
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
        fh.writelines(json.dumps({"target": target.id if target else None, "when": when,
                                 "test": test, "machine": str(m.workdir), **s.record()})
                     + "\n" for s in found)


def record_boot(config: pytest.Config, target: Target, m: Machine, **more) -> None:
    """Append a boot (`why` it was not a restore), a restore or a snapshot (`more`) to
    results/boots.jsonl, which benchmarks/matrix.py reads.  A boot a test starts itself
    (its subject: `machine_factory(...)`, `relaunch`) has no line."""
    path = results_dir(config) / "boots.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    boot = m.boot
    assert boot is not None, "logged once the machine is ready"
    rec = {"target": target.id, "profile": m.profile.name, "machine": m.workdir.name,
           "test": CURRENT_TEST[0], "kind": "restore" if boot.restored else "boot",
           "wall_s": round(boot.wall_s, 3), **more}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


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
    QEMU arguments, another profile of the same arch; none: `machine`), started on
    first use (restored when a test's fresh machine of its configuration left a
    snapshot, else booted) and shared by the target's tests for the session.  A machine
    that printed a kernel splat is replaced by a fresh one (`usable`); one that failed to
    boot is never handed out: the next test that needs it boots it afresh, until its
    configuration has failed RETRIES times in a row (then each test needing it FAILs at
    once, naming those failures, instead of waiting out another boot timeout)."""

    RETRIES = 2

    def __init__(self, config: pytest.Config, target: Target, profile, kernel, initrd):
        self.config, self.target = config, target
        self.profile, self.kernel, self.initrd = profile, kernel, initrd
        self.machines: dict[tuple, Machine] = {}
        self.failed: dict[tuple, list[str]] = {}     # consecutive failed boots, by key
        self.wrappers: dict = {}          # reuse(): objects built around a pool machine
        self.snapshots = Snapshots(config, target)
        # per machine handed out: the last test it was handed to (a splat printed after
        # that test is "between" it and the next), and the reference VMM's runs on it
        # (harness/vm/l2.py: every L2 host on that machine shares them)
        self.last_test: dict[Machine, str] = {}
        self.runs: dict[Machine, dict[tuple, L2Run]] = {}

    def get(self, append: tuple[str, ...], tag: str, qemu_args: tuple[str, ...] = (),
            profile: profiles.Profile | None = None) -> Machine:
        profile = profile or self.profile
        key = (append, qemu_args, profile)
        DeadTargets(self.config).check(self.target)     # before counting this as a retry
        failed = self.failed.get(key, [])
        if len(failed) >= self.RETRIES:
            raise BootFailed(f"{self.target.id}: this machine ({tag}) failed to boot "
                             f"{len(failed)} times in a row, not booted again: "
                             + "; ".join(failed))
        old = self.machines.get(key)
        if old is not None and not self.usable(old):
            del self.machines[key]
            self._close(old)
        if key not in self.machines:
            m = Machine(profile, self.kernel, self.initrd_for(profile),
                        machine_dir(self.config, self.target, tag), append=append,
                        qemu_args=qemu_args, boot_timeout=self.config.getoption("boot_timeout"))
            self.machines[key] = m
            try:
                # a test's fresh machine of this configuration may have booted first
                watch(m, self.config, self.target)
                if not self.snapshots.restore(m):
                    launch(m, self.config, self.target,
                           shared=not append and not qemu_args and profile == self.profile,
                           why=self.snapshots.boot_reason(m))
                    self.snapshots.offer(m)
            except Exception as e:
                # never handed out: the next test boots afresh (its logs stay in its dir)
                del self.machines[key]
                m.close(graceful=False)
                first = first_line(e)
                self.failed.setdefault(key, []).append(f"{CURRENT_TEST[0] or tag}: {first}")
                raise
            self.failed.pop(key, None)
        return self.handed_out(self.machines[key])

    def handed_out(self, m: Machine) -> Machine:
        """`m`, noted as handed to the test being set up."""
        if CURRENT_TEST[0]:
            self.last_test[m] = CURRENT_TEST[0]
        return m

    def l2_runs(self, m: Machine) -> dict[tuple, L2Run]:
        """The L2 runs made on `m` (vm/l2.py HostPool)."""
        return self.runs.setdefault(m, {})

    def initrd_for(self, profile: profiles.Profile) -> Path:
        """The initramfs a machine of `profile` boots: the target's, or its own where
        the profile loads other modules."""
        if profile.modules == self.profile.modules:
            return self.initrd
        return rootfs.initramfs(self.kernel, profile, progress)

    def usable(self, m: Machine) -> bool:
        """Whether `m` may serve the next test.  Splats no test claimed were printed
        between two tests: they go to the target and the machine in the summary, are
        never blamed on a test, and retire the machine."""
        between = m.splats.claim()
        if between:
            last = self.last_test.get(m)
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
        self.handed_out(machine_of(w))
        return w

    def _close(self, m: Machine) -> None:
        last = self.last_test.pop(m, None)
        self.runs.pop(m, None)
        try:
            m.close()
        except AbnormalShutdown as e:     # no test owns a pool machine: a warning, which
            warnings.warn(GuestpmWarning(  # the run's warnings summary lists
                f"{self.target.id}: {e} (after {last})"))
        left = m.splats.claim()           # printed after its last test, while it shut down
        if left:
            record_splats(self.config, self.target, m, left, "between", last)

    def close(self) -> None:
        for m in self.machines.values():
            self._close(m)
        self.snapshots.close()


class Snapshots:
    """A target's snapshots, one per machine configuration (profile, kernel, initramfs,
    kernel parameters, QEMU arguments, memory), taken right after the ready line of the
    first machine of that configuration, the pool's (`offer`) or the first a test asks
    for fresh (`machine_factory.booted`); the next ones, fresh or the pool's, are
    restored from it instead of booting.  A configuration boots every time when it
    cannot be restored (a writable disk, modules the boot itself loads:
    `snapshot.restorable`; a profile whose restores the QEMU in use breaks, as its
    restore probe measured: `Profile.probe_restores`, `snapshot.probe_restores`),
    when its snapshot or a restore failed (a warning says why), when a restore was slower
    than its boot, and with --snapshots=off.  The files live in results/snapshots/ until
    the session ends."""

    def __init__(self, config: pytest.Config, target: Target):
        self.config, self.target = config, target
        self.enabled = config.getoption("snapshots") == "on"
        self.taken: dict[tuple, Snapshot] = {}
        self.boots: dict[tuple, str] = {}       # configurations that boot, and why
        self.probed: dict[str, str | None] = {}  # profile -> why its QEMU cannot restore it
        self.dir = results_dir(config) / "snapshots" / \
            f"{target.slug}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"

    @staticmethod
    def key(m: Machine) -> tuple:
        return (m.profile, str(m.kernel.image), str(m.initrd), m.append, m.extra_qemu_args,
                m.memory_mb)

    def why_boot(self, m: Machine, why: str | None = None) -> str | None:
        """Why `m` must boot rather than be restored (None: it may be restored)."""
        if not self.enabled:
            return "--snapshots=off"
        return why or snapshot.restorable(m.extra_qemu_args) or \
            self.boots.get(self.key(m)) or self.qemu_refuses(m)

    def qemu_refuses(self, m: Machine) -> str | None:
        """Why the QEMU in use cannot restore `m`'s profile (its restore probe, run on the
        first question and kept per QEMU binary in the cache), or None."""
        p = m.profile
        if not p.probe_restores:
            return None
        if self.probed.get(p.name, "") is None:   # a restore that failed since refuses it
            self.probed[p.name] = snapshot.kept_refusal(p)
        if p.name not in self.probed:
            def make(tag: str) -> Machine:
                return Machine(p, m.kernel, m.initrd, machine_dir(self.config, self.target, tag),
                               memory_mb=snapshot.PROBE_MEMORY_MB,
                               boot_timeout=self.config.getoption("boot_timeout"))

            def record(probe: Machine, kind: str) -> None:
                record_boot(self.config, self.target, probe, why=RESTORE_PROBE, probe=kind)
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                self.probed[p.name] = snapshot.probe_restores(p, make, self.dir, record)
            except GuestpmError as e:       # its boot failed: the machine's own boot says why
                self.probed[p.name] = f"the restore probe did not boot ({e})"
        return self.probed[p.name]

    def boot_reason(self, m: Machine, why: str | None = None) -> str:
        """Why `m` boots, for boots.jsonl: why it may not be restored, or because it is
        the first of its configuration."""
        return self.why_boot(m, why) or FIRST_BOOT

    def ready(self, m: Machine, why_boot: str | None = None) -> Machine:
        """Start `m` and wait until it is ready: restored from its configuration's
        snapshot if there is one, else booted (and then snapshotted, if it may be)."""
        key, why = self.key(m), self.why_boot(m, why_boot)
        if why is None and self.restore(m):
            return m
        self._start(m, m.relaunch if m.proc is not None else m.launch,
                    why=self.boot_reason(m, why_boot))
        if why is None and key not in self.taken:
            self._take(m, key)
        return m

    def restore(self, m: Machine) -> bool:
        """Start `m` from its configuration's snapshot, if it has one and may be
        restored: True once it is ready; False when it must boot (`m` not started, or
        killed after a failed restore: the configuration boots from now on)."""
        key = self.key(m)
        if self.why_boot(m) is not None or key not in self.taken:
            return False
        m.restore_from(self.taken[key])
        try:
            self._start(m, m.launch)
        except GuestpmError as e:
            if m.console is not None and m.console.fatal_index is not None:
                raise                           # the restored guest crashed
            why = f"a restore failed ({e})"
            if m.profile.probe_restores:        # the probe passed: it is not evidence enough
                # what the restored guest printed before it was killed (the lost timers'
                # hard LOCKUP, docs/known-defects.md) is QEMU's symptom: named here, not
                # counted against the fresh boot that follows on this machine object
                left = m.splats.claim()
                printed = f"; the restored guest printed {'; '.join(s.title for s in left)}" \
                    if left else ""
                why = f"{why}{printed}; no {m.profile.arch} machine is restored from now on " \
                      f"on this QEMU (kept in {snapshot.restore_probe_file(m.profile)}; " \
                      "delete it to probe again)"
                first = first_line(e)
                kept = f"a restore of an {m.profile.name} machine failed in a run: {first}{printed}"
                snapshot.refuse(m.profile, kept)
                self.probed[m.profile.name] = kept
            self._boot_from_now_on(key, why)
            m.kill()
            return False
        boot_s = self.taken[key].boot.wall_s
        assert m.boot is not None, "_start returns a ready machine"
        restore_s = m.boot.wall_s
        if restore_s >= boot_s:                 # restore only where it wins
            self._boot_from_now_on(key, f"a restore took {restore_s:.1f} s, "
                                        f"its boot {boot_s:.1f} s")
        return True

    def offer(self, m: Machine) -> None:
        """A machine that just booted for the pool: the snapshot of its configuration,
        if there is none yet (the shared machine's is the tests' plain fresh machine)."""
        if self.why_boot(m) is None and self.key(m) not in self.taken:
            self._take(m, self.key(m))

    def _start(self, m: Machine, start, **why) -> Machine:
        start()
        m.wait_ready()         # boot splats stay unclaimed: the factory records them
        record_boot(self.config, self.target, m, **why)
        return m

    def _take(self, m: Machine, key: tuple) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{m.workdir.name}.vmstate"
        try:
            snap = self.taken[key] = snapshot.take(m, path)
        except snapshot.SnapshotError as e:
            self._boot_from_now_on(key, str(e))
            return
        record_boot(self.config, self.target, m, kind="snapshot",
                    wall_s=round(snap.write_s, 3), bytes=snap.size)

    def _boot_from_now_on(self, key: tuple, why: str) -> None:
        self.boots[key] = why
        warnings.warn(GuestpmWarning(f"{self.target.id}: a machine configuration boots "
                                     f"from now on instead of being restored: {why}"))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class MachineFactory:
    """`machine_factory(...)`: a test's own machine, not started (a test whose subject is
    the boot launches it); `.booted(...)`: the same, ready: restored from a snapshot of a
    machine of its configuration where it can be, else booted (Snapshots)."""

    def __init__(self, make, snapshots: Snapshots):
        self._make, self._snapshots = make, snapshots

    def __call__(self, *args, **kwargs) -> Machine:
        return self._make(*args, **kwargs)

    def booted(self, *args, **kwargs) -> Machine:
        m = self._make(*args, **kwargs)
        why = "its boot loads the test's modules" if kwargs.get("extra_modules") else None
        return self._snapshots.ready(m, why)
