""""Did not boot" means the target never booted (issue 32, part 2), checked on the pool
with fake machines: before the target's first boot in the run a failed shared machine
condemns the target (its later tests fail at once, pointing at the failure); after it,
a failed boot is the FAIL of the test that needed it, with what it waited for and the
console's tail, the broken machine is never handed out, and the next test boots afresh."""

import socket
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import BootError, SilentMachine, WaitTimeout
from harness.kernel.kernels import Kernel
from harness.plugin import pool
from harness.plugin.targets import RUN_DIR, Target
from harness.vm.boot import BootInfo
from harness.vm.console import Console
from harness.vm.machine import Machine

TARGET = Target("debian:bullseye", "arm64")
NOT_READY = ("timed out after 300s waiting for the guest's 'guestpm: ready' line; console "
             "tail (console.log):\nguestpm: ready uptime=8.55 release=5.10.0-32-arm64"
             "[    9.570005] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\n# ")


class Config:
    def __init__(self, results: Path):
        self.options = {"results": str(results), "boot_timeout": 300.0, "snapshots": "off",
                        "splats": "fail"}
        self.stash = {RUN_DIR: Path(results)}         # the run's own directory

    def getoption(self, name):
        return self.options[name]


class FakeMachine:
    """Boots as the next word of `script` says: "ok", "timeout" (no ready line),
    "silent" (the console never printed), "race" (ok, while another worker records the
    target as dead)."""
    script: list[str] = []
    made: list["FakeMachine"] = []

    config = None

    def __init__(self, profile, kernel, initrd, workdir, **kw):
        self.profile, self.kernel, self.initrd, self.workdir = profile, kernel, initrd, workdir
        self.append, self.extra_qemu_args, self.memory_mb = kw.get("append", ()), \
            kw.get("qemu_args", ()), None
        self.proc, self.snapshot, self.closed, self.boot = None, None, False, None
        self.on_silent = self.on_ready = self.retired = None
        self.splats = type("S", (), {"claim": lambda self: []})()
        FakeMachine.made.append(self)

    def launch(self):
        self.proc = "qemu"
        return self

    def wait_ready(self):
        how = FakeMachine.script.pop(0)
        if how == "silent":
            e = SilentMachine("the console stayed silent for 60s after QEMU started")
            self.on_silent(e)
            raise e
        if how == "timeout":
            raise WaitTimeout(NOT_READY)
        if how == "race":        # meanwhile another worker's machine stayed silent
            pool.DeadTargets(self.config).record(TARGET, SilentMachine("silent elsewhere"))
            with pytest.raises(BootError, match="target did not boot"):
                pool.DeadTargets(self.config).check(TARGET)
        self.boot = BootInfo(10.0, 8.5, "5.10.0-32-arm64")
        self.on_ready()
        return self.boot

    def close(self, graceful=True):
        self.closed = True


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run's results directory; `run(n)` is worker n's pool of the target."""
    monkeypatch.setattr(pool, "Machine", FakeMachine)
    FakeMachine.script, FakeMachine.made = [], []
    config = FakeMachine.config = Config(tmp_path)

    def worker(n: int = 0) -> pool.MachinePool:
        kernel = type("K", (), {"image": Path("/k/Image")})()
        return pool.MachinePool(config, TARGET, profiles.get("arm64"), kernel, Path("/i"))
    return worker


def shared(p: pool.MachinePool, test: str):
    return nvhe(p, test, ())


def nvhe(p: pool.MachinePool, test: str, append=("kvm-arm.mode=nvhe",)):
    pool.CURRENT_TEST[0] = test
    return p.get(append, tag="nvhe" if append else "shared")


def test_a_target_that_never_booted_fails_fast_after_its_first_failure(run):
    FakeMachine.script = ["timeout"]
    gw0, gw1 = run(0), run(1)
    with pytest.raises(WaitTimeout):
        shared(gw0, "test_a")
    # the other worker, and the same one, do not boot it again: they point at test_a
    for p, test in ((gw1, "test_b"), (gw0, "test_c"), (gw0, "test_d"), (gw1, "test_e")):
        with pytest.raises(BootError, match=r"target did not boot: see test_a \(timed out"):
            shared(p, test)
    assert len(FakeMachine.made) == 1 and FakeMachine.made[0].closed  # none made since


def test_a_silent_machine_condemns_a_target_that_never_booted(run):
    FakeMachine.script = ["silent"]
    with pytest.raises(SilentMachine):
        nvhe(run(0), "test_x")
    with pytest.raises(BootError, match="target did not boot: see test_x"):
        shared(run(1), "test_y")


def test_after_the_first_boot_a_failed_boot_is_the_test_s_failure_and_the_next_boots(run):
    FakeMachine.script = ["ok", "timeout", "ok"]
    gw0, gw1 = run(0), run(1)
    first = shared(gw0, "test_boot")                    # the target boots on gw0
    with pytest.raises(pool.BootFailed) as e:           # gw1's shared machine does not
        shared(gw1, "test_psci_1")
    msg = str(e.value)
    assert "booted earlier in this run" in msg and "waiting for the guest's 'guestpm: " \
        "ready' line" in msg and "console tail" in msg and "link becomes ready" in msg
    broken = FakeMachine.made[1]
    assert broken.closed
    again = shared(gw1, "test_psci_2")                  # boots afresh, not the broken one
    assert again is not broken and again is FakeMachine.made[2] and not again.closed
    assert shared(gw1, "test_psci_3") is again          # and is shared from then on
    assert shared(gw0, "test_boot_2") is first


def test_a_machine_that_keeps_failing_stops_being_booted(run):
    FakeMachine.script = ["ok", "timeout", "timeout"]
    p = run(0)
    shared(p, "test_boot")
    for test in ("test_1", "test_2"):
        with pytest.raises(pool.BootFailed, match="booted earlier in this run"):
            nvhe(p, test)
    with pytest.raises(pool.BootFailed, match=r"failed to boot 2 times in a row, not booted "
                                              r"again: test_1: .*; test_2: "):
        nvhe(p, "test_3")
    assert len(FakeMachine.made) == 3                   # the third test booted nothing
    assert shared(p, "test_4") is FakeMachine.made[0]   # the rest of the target goes on


def test_a_silent_machine_after_the_first_boot_condemns_nothing(run):
    FakeMachine.script = ["ok", "silent", "ok"]
    gw0, gw1 = run(0), run(1)
    shared(gw0, "test_a")
    with pytest.raises(pool.BootFailed, match="booted earlier.*stayed silent"):
        nvhe(gw1, "test_nvhe")
    assert shared(gw1, "test_b") is FakeMachine.made[2]


def test_a_boot_that_ends_while_another_worker_records_the_target_dead_revives_it(run):
    """Two workers boot at once: one machine stays silent (the target is recorded dead),
    then the other one's boot ends well: the target booted, nothing fails fast."""
    FakeMachine.script = ["race", "ok"]
    gw0, gw1 = run(0), run(1)
    shared(gw0, "test_a")
    assert shared(gw1, "test_b") is FakeMachine.made[1]


class Report:
    def __init__(self, when, failed=True):
        self.when, self.failed = when, failed


class Call:
    def __init__(self, when, exc):
        self.when = when
        try:
            raise exc
        except type(exc):
            self.excinfo = pytest.ExceptionInfo.from_current()


@pytest.mark.parametrize("exc,verdict", [
    (pool.BootFailed("x booted earlier in this run, but ..."), "call"),   # FAIL
    (BootError("target did not boot: see test_a"), "setup"),             # ERROR, as before
    (WaitTimeout("timed out"), "setup"),
])
def test_a_boot_failure_after_the_first_boot_is_reported_as_a_fail(exc, verdict):
    r = Report("setup")
    pool.as_test_failure(r, Call("setup", exc))
    assert r.when == verdict


def test_a_machine_says_when_it_is_ready_even_when_a_record_tore_its_ready_line(
        tmp_path, monkeypatch):
    """Machine.wait_ready on the issue's console (no QEMU: a socket, a live process and
    a QMP that answers `info usernet`) calls on_ready, which records the first boot."""
    monkeypatch.setattr(Machine, "check_host", staticmethod(lambda profile: None))
    k = Kernel("debian:bullseye", "arm64", Path("/x/Image"), "5.10.0-32-arm64", None, None, "/x")
    m = Machine(profiles.get("arm64"), k, Path("/x/initrd"), tmp_path)
    ours, guest = socket.socketpair()
    m.console = Console(ours, tmp_path / "console.log")
    m.proc = type("P", (), {"poll": lambda self: None})()
    m.qmp = type("Q", (), {"hmp": lambda self, c: "TCP[HOST_FORWARD]  12  127.0.0.1 40022 "
                                                    "10.0.2.15 22  0  0"})()
    ready = []
    m.on_ready = lambda: ready.append(True)
    try:
        guest.sendall((Path(__file__).parent / "golden" / "console" /
                       "ready-torn-5.10-arm64.txt").read_bytes())
        boot = m.wait_ready(timeout=10)
        assert (boot.release, boot.guest_uptime_s, m.ssh_port) == ("5.10.0-32-arm64", 8.55,
                                                                   40022)
        assert ready == [True]
    finally:
        guest.close()
        m.console.close()
