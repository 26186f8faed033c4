"""pool.Snapshots without a QEMU: which fresh machine boots, which is restored, and when
a configuration goes back to booting."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import profiles
from harness.errors import BootError
from harness.plugin import pool
from harness.plugin.targets import Target
from harness.vm.boot import BootInfo


class FakeMachine:
    """Boots in `boot_s`, restores in `restore_s`, or fails its restore."""

    def __init__(self, tmp_path, n, profile=profiles.X86_64_Q35, qemu_args=(), restore_s=1.0,
                 restore_fails=False):
        self.profile, self.extra_qemu_args = profile, qemu_args
        self.kernel = type("K", (), {"image": Path("/k/vmlinuz")})()
        self.initrd, self.append, self.memory_mb = Path("/k/initrd"), (), None
        self.workdir = tmp_path / f"m{n}"
        self.snapshot, self.launches, self.events, self.proc = None, 0, [], None
        self.restore_s, self.restore_fails = restore_s, restore_fails
        self.console = type("C", (), {"fatal_index": None})()
        self.splats = type("S", (), {"claim": staticmethod(list)})()

    @property
    def restoring(self):
        return self.snapshot is not None and self.launches == 1

    def restore_from(self, snap):
        self.snapshot = snap
        return self

    def launch(self):
        self.launches += 1
        self.proc = "qemu"

    relaunch = launch

    def kill(self):
        self.events.append("killed")

    def wait_ready(self):
        if self.restoring:
            if self.restore_fails:
                raise BootError("the restored guest does not run as a booted one would")
            self.boot = BootInfo(self.restore_s, 8.0, "7.2.0", restored=True)
        else:
            self.boot = BootInfo(10.0, 8.0, "7.2.0")
        self.events.append("restored" if self.boot.restored else "booted")
        return self.boot


# what the arm64 restore probe measured on the QEMU in use (snapshot.probe_restores)
QEMU_7_2 = "QEMU 7.2.22 lost the generic timers' deadlines in a snapshot round trip"


@pytest.fixture
def probe(monkeypatch):
    """The restore probe's answer (set `answer`) and the profiles it was asked about."""
    calls = []

    def fake(profile, make, workdir, record):
        calls.append(profile.name)
        return fake.answer
    fake.answer, fake.calls, fake.kept = QEMU_7_2, calls, {}
    monkeypatch.setattr(pool.snapshot, "probe_restores", fake)
    # the decision kept on disk per QEMU binary, shared by the run's workers
    monkeypatch.setattr(pool.snapshot, "kept_refusal", lambda p: fake.kept.get(p.name))
    monkeypatch.setattr(pool.snapshot, "refuse", lambda p, why: fake.kept.update({p.name: why}))
    monkeypatch.setattr(pool.snapshot, "restore_probe_file", lambda p: Path(f"/c/{p.name}.json"))
    return fake


@pytest.fixture
def snaps(tmp_path, monkeypatch, probe):
    monkeypatch.setattr(pool, "results_dir", lambda config: tmp_path)
    monkeypatch.setattr(pool.snapshot, "take", lambda m, path: dataclasses.make_dataclass(
        "S", ["boot", "write_s", "size"])(m.boot, 0.3, 1))
    config = type("Config", (), {"getoption": lambda self, name: "on"})()
    return pool.Snapshots(config, Target("debian:7.2", "x86_64"))


def _ready(snaps, tmp_path, n, **kw):
    return snaps.ready(FakeMachine(tmp_path, n, **kw)).events


def test_the_first_machine_of_a_configuration_boots_and_the_next_are_restored(snaps, tmp_path):
    assert _ready(snaps, tmp_path, 0) == ["booted"]
    assert _ready(snaps, tmp_path, 1) == ["restored"]
    assert _ready(snaps, tmp_path, 2, qemu_args=("-smp", "2,maxcpus=3")) == ["booted"]
    assert _ready(snaps, tmp_path, 3) == ["restored"]
    lines = (tmp_path / "boots.jsonl").read_text().splitlines()
    assert [line.count('"snapshot"') for line in lines].count(1) == 2


def test_what_must_boot_boots(snaps, tmp_path):
    disk = ("-drive", "if=none,id=swap,file=/t/swap.qcow2,format=qcow2")
    for n in range(2):
        assert _ready(snaps, tmp_path, n, qemu_args=disk) == ["booted"]
        assert _ready(snaps, tmp_path, 10 + n, profile=profiles.ARM64_VIRT) == ["booted"]
        assert snaps.ready(FakeMachine(tmp_path, 20 + n), "its boot loads the test's "
                           "modules").events == ["booted"]
    assert snaps.taken == {}


def test_a_failed_restore_boots_and_so_does_its_configuration_from_then_on(snaps, tmp_path):
    _ready(snaps, tmp_path, 0)
    with pytest.warns(pool.GuestpmWarning, match="boots from now on .*a restore failed"):
        assert _ready(snaps, tmp_path, 1, restore_fails=True) == ["killed", "booted"]
    assert _ready(snaps, tmp_path, 2) == ["booted"]


def test_a_restore_slower_than_its_boot_ends_the_restores(snaps, tmp_path):
    _ready(snaps, tmp_path, 0)
    with pytest.warns(pool.GuestpmWarning, match="a restore took 12.0 s, its boot 10.0 s"):
        assert _ready(snaps, tmp_path, 1, restore_s=12.0) == ["restored"]
    assert _ready(snaps, tmp_path, 2) == ["booted"]


def test_snapshots_off_boots_everything(snaps, tmp_path):
    snaps.enabled = False
    assert [_ready(snaps, tmp_path, n) for n in range(2)] == [["booted"], ["booted"]]


def test_a_pool_machine_is_restored_when_a_test_booted_its_configuration_first(snaps, tmp_path):
    assert snaps.restore(FakeMachine(tmp_path, 0)) is False      # nothing to restore yet
    _ready(snaps, tmp_path, 1)
    shared = FakeMachine(tmp_path, 2)
    assert snaps.restore(shared) is True and shared.events == ["restored"]
    arm64 = FakeMachine(tmp_path, 3, profile=profiles.ARM64_VIRT)
    assert snaps.restore(arm64) is False and arm64.events == []


def test_a_pool_machine_whose_restore_fails_is_left_to_boot(snaps, tmp_path):
    _ready(snaps, tmp_path, 0)
    m = FakeMachine(tmp_path, 1, restore_fails=True)
    with pytest.warns(pool.GuestpmWarning, match="a restore failed"):
        assert snaps.restore(m) is False
    assert m.events == ["killed"] and snaps.why_boot(m).startswith("a restore failed")


def test_arm64_restores_follow_what_the_probe_measured_on_this_qemu(snaps, tmp_path, probe):
    """The probe runs once per session and profile (its decision is cached per QEMU
    binary on disk); a QEMU that keeps the timers gets arm64 restores, x86 needs none."""
    assert [_ready(snaps, tmp_path, n, profile=profiles.ARM64_VIRT) for n in range(2)] == \
        [["booted"], ["booted"]]
    assert snaps.why_boot(FakeMachine(tmp_path, 9, profile=profiles.ARM64_VIRT)) == QEMU_7_2
    _ready(snaps, tmp_path, 5)
    assert probe.calls == ["arm64"]


def test_a_qemu_that_keeps_the_timers_restores_arm64(snaps, tmp_path, probe):
    probe.answer = None
    assert [_ready(snaps, tmp_path, n, profile=profiles.ARM64_VIRT) for n in range(2)] == \
        [["booted"], ["restored"]]
    assert probe.calls == ["arm64"]


def test_a_failed_arm64_restore_refuses_every_arm64_configuration_on_this_qemu(
        snaps, tmp_path, probe):
    """The probe passed (its rounds can all pass on QEMU 7.2, whose restores lose the EL2
    timers about half the time), yet a restore failed: no arm64 machine of any
    configuration is restored from then on, in this worker or another (the decision is
    kept per QEMU binary), and the warning says where it is kept."""
    probe.answer = None
    arm = profiles.ARM64_VIRT
    _ready(snaps, tmp_path, 0, profile=arm)
    with pytest.warns(pool.GuestpmWarning, match=r"no arm64 machine is restored from now on "
                                                 r"on this QEMU \(kept in /c/arm64.json"):
        assert _ready(snaps, tmp_path, 1, profile=arm, restore_fails=True) == \
            ["killed", "booted"]
    other = FakeMachine(tmp_path, 2, profile=arm, qemu_args=("-m", "1G"))
    assert snaps.why_boot(other).startswith("a restore of an arm64 machine failed in a run: "
                                            "the restored guest does not run")
    assert _ready(snaps, tmp_path, 3, profile=arm, qemu_args=("-m", "1G")) == ["booted"]
    assert "\n" not in probe.kept["arm64"]
    # another worker that probed (None) before the failure reads the kept decision
    config = type("Config", (), {"getoption": lambda self, name: "on"})()
    elsewhere = pool.Snapshots(config, Target("debian:6.1", "arm64"))
    elsewhere.probed["arm64"] = None
    assert elsewhere.why_boot(FakeMachine(tmp_path, 4, profile=arm)) == probe.kept["arm64"]
    assert probe.calls == ["arm64"]               # measured once; the failure is kept


def test_a_failed_arm64_restore_names_what_the_restored_guest_printed(snaps, tmp_path, probe):
    """The lost timers can show as a hard LOCKUP before the restore's check times out:
    the warning names it, and the boot that follows on the same machine object does not
    count it as its own boot splat (seen on QEMU 10.0.2, stop 36)."""
    probe.answer = None
    arm = profiles.ARM64_VIRT
    _ready(snaps, tmp_path, 0, profile=arm)
    m = FakeMachine(tmp_path, 1, profile=arm, restore_fails=True)
    lockup = SimpleNamespace(title="watchdog: CPU0: Watchdog detected hard LOCKUP on cpu 1")
    m.splats = SimpleNamespace(left=[lockup])
    m.splats.claim = lambda: [m.splats.left.pop()] if m.splats.left else []
    with pytest.warns(pool.GuestpmWarning, match="the restored guest printed watchdog: CPU0: "
                                                 "Watchdog detected hard LOCKUP on cpu 1; no "
                                                 "arm64 machine is restored"):
        assert snaps.ready(m).events == ["killed", "booted"]
    assert m.splats.left == []


def test_a_failed_x86_restore_leaves_the_profile_to_its_other_configurations(
        snaps, tmp_path, probe):
    _ready(snaps, tmp_path, 0)
    with pytest.warns(pool.GuestpmWarning, match="a restore failed"):
        _ready(snaps, tmp_path, 1, restore_fails=True)
    assert _ready(snaps, tmp_path, 2, qemu_args=("-m", "1G")) == ["booted"]   # the first
    assert _ready(snaps, tmp_path, 3, qemu_args=("-m", "1G")) == ["restored"]
    assert probe.kept == {}
