"""Snapshots without a QEMU: which configurations may be restored, the arguments that
restore one, what a restored machine's console log starts with, and its command line."""

import shlex
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import BootError
from harness.kernel.kernels import Kernel
from harness.vm import machine as machine_mod
from harness.vm.boot import BootInfo, Snapshot
from harness.vm.machine import Machine
from harness.vm.snapshot import restorable
from harness.vm.ssh import KeyPair

GOLDEN = Path(__file__).parent / "golden" / "snapshot"


@pytest.mark.parametrize("args, why", [
    ((), None),
    (("-acpitable", "file=/c/s2idle.aml", "-chardev", "file,id=gpmacpi,path=debugcon.log",
      "-device", "isa-debugcon,iobase=0x402,chardev=gpmacpi"), None),
    (("-smp", "2,maxcpus=3"), None),
    (("-drive", "if=none,id=l2k,file=/c/Image,format=raw,readonly=on"), None),
    (("-drive", "if=none,id=swap,file=/t/swap.qcow2,format=qcow2", "-device",
      "virtio-blk-pci,drive=swap"), "a writable disk (-drive if=none,id=swap,"
                                    "file=/t/swap.qcow2,format=qcow2) would be shared"),
    (("-blockdev", "node-name=d,driver=file,filename=/t/d"), "a writable disk (-blockdev"),
    (("-incoming", "defer"), "it is itself an incoming migration"),
])
def test_only_configurations_without_writable_disks_are_restored(args, why):
    got = restorable(args)
    assert got == why if why is None else got.startswith(why)


def _snapshot(tmp_path, keys=None) -> Snapshot:
    return Snapshot(tmp_path / "snap dir" / "m-0.vmstate", keys or KeyPair.generate(),
                    "ssh-ed25519 AAAAhost", BootInfo(9.5, 8.0, "6.12.117+deb13-amd64", ["kvm"]),
                    Path("/r/machines/m-0"), (GOLDEN / "boot-console.txt").read_bytes(),
                    0.5, 200 << 20)


def test_a_restore_reads_the_file_through_exec_quoted(tmp_path):
    snap = _snapshot(tmp_path)
    flag, uri = snap.incoming_args()
    assert flag == "-incoming" and uri.startswith("exec:")
    assert shlex.split(uri.removeprefix("exec:")) == ["cat", str(snap.path)]


def test_a_restored_console_log_starts_with_the_boot_and_says_where_it_took_over(tmp_path):
    history = _snapshot(tmp_path).console_history()
    assert history == (GOLDEN / "restored-console.txt").read_bytes()


def test_console_history_is_logged_and_tailed_but_not_scanned(tmp_path):
    import socket

    from harness.vm.console import Console
    history = b"[    1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\nguestpm: ready\n"
    ours, theirs = socket.socketpair()
    con = Console(ours, tmp_path / "console.log", history=history)
    try:
        theirs.sendall(b"# \n")
        con.expect("# ", 5, "the prompt")
        assert (tmp_path / "console.log").read_bytes().startswith(history)
        assert "guestpm: ready" in con.tail()
        assert con.splats.unclaimed() == [], "the snapshot's boot was judged when it booted"
    finally:
        theirs.close()
        con.close()


@pytest.fixture
def fake_qemu(tmp_path, monkeypatch):
    """Machine without QEMU: launch() records its command line, then fails."""
    monkeypatch.setattr(Machine, "check_host", staticmethod(lambda profile: None))

    def popen(args, **kw):
        raise FileNotFoundError(args[0])
    monkeypatch.setattr(machine_mod.subprocess, "Popen", popen)
    k = Kernel("path:/x/bzImage", "x86_64", Path("/x/bzImage"), "7.2.0", None, None, "/x")
    return lambda d: Machine(profiles.get("x86_64"), k, Path("/x/initrd"), tmp_path / d,
                             qemu_args=("-smp", "2,maxcpus=3"))


def test_a_restore_has_the_snapshot_command_line_with_its_keys_and_incoming(tmp_path,
                                                                              fake_qemu):
    booted = fake_qemu("a")
    snap = _snapshot(tmp_path, booted.keys)
    restored = fake_qemu("b").restore_from(snap)
    for m in (booted, restored):
        with pytest.raises(FileNotFoundError):
            m.launch()
    a, b = (shlex.split(m.cmdline_file.read_text()) for m in (booted, restored))
    assert b == a + list(snap.incoming_args())
    assert restored.keys is booted.keys


def test_restore_from_is_refused_after_launch(tmp_path, fake_qemu):
    m = fake_qemu("a")
    m.proc = object()
    with pytest.raises(BootError, match="already launched"):
        m.restore_from(_snapshot(tmp_path))


class ProbeMachine:
    """A machine of the restore probe: boots, runs commands, is snapshotted; restored, its
    per-CPU sleep hangs when `timers_lost`."""

    def __init__(self, tag, timers_lost, log):
        self.tag, self.timers_lost, self.log = tag, timers_lost, log
        self.profile, self.workdir = profiles.ARM64_VIRT, Path(f"/r/machines/{tag}")
        self.boot = BootInfo(9.0, 8.0, "7.2.13+deb14-arm64")
        self.ssh = self
        self.snap = None

    def restore_from(self, snap):
        self.snap = snap
        return self

    def launch(self):
        self.log.append(f"{self.tag} launch")

    def wait_ready(self):
        if self.snap and self.timers_lost:
            raise BootError("the restored guest does not run as a booted one would: "
                            "timed out waiting for sleep on cpu1")

    def run(self, cmd, timeout=60):
        self.log.append(f"{self.tag} run {cmd.split()[0]}")
        return type("R", (), {"check": lambda r: r})()

    def close(self, graceful=True):
        self.log.append(f"{self.tag} close")


@pytest.mark.parametrize("lost", [True, False])
def test_the_restore_probe_decides_once_per_qemu_binary(tmp_path, monkeypatch, lost):
    from harness.vm import cmdline, snapshot
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cmdline, "qemu_identity", lambda p: "10.0.2-0123abcd")
    monkeypatch.setattr(cmdline, "qemu_version", lambda p: "10.0.2 (Debian)")
    monkeypatch.setattr(snapshot, "take", lambda m, path: Snapshot(
        path, None, "k", m.boot, m.workdir, b"", 0.1, 1))
    log = []
    make = lambda tag: ProbeMachine(tag, lost, log)
    first = snapshot.probe_restores(profiles.ARM64_VIRT, make, tmp_path)
    # every CPU's timer armed before the snapshot; the restored one checked, then closed
    assert log[:3] == ["restore-probe launch", "restore-probe run for",
                       "restore-probe close"]
    assert log[3] == "restore-probe-restored-0 launch"
    restores = [e for e in log if e.endswith("launch")][1:]
    # a QEMU that keeps the timers must do so in every one of the probe's restores
    assert len(restores) == (1 if lost else snapshot.PROBE_ROUNDS)
    if lost:
        assert first.startswith("QEMU 10.0.2 (Debian) lost the generic timers' deadlines "
                                "in a snapshot round trip (restore 1 of 5)")
        assert first.endswith("timed out waiting for sleep on cpu1")
    else:
        assert first is None
    n = len(log)
    assert snapshot.probe_restores(profiles.ARM64_VIRT, make, tmp_path) == first
    assert len(log) == n                 # the cached decision: no machine started
    assert snapshot.restore_probe_file(profiles.ARM64_VIRT).name == \
        "restore-arm64-10.0.2-0123abcd.json"


def test_a_refusal_is_kept_beside_the_probe_s_decision(tmp_path, monkeypatch):
    from harness.vm import cmdline, snapshot
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    monkeypatch.setattr(cmdline, "qemu_identity", lambda p: "7.2.22-abc")
    monkeypatch.setattr(cmdline, "qemu_version", lambda p: "7.2.22 (Debian)")
    arm = profiles.get("arm64")
    assert snapshot.kept_refusal(arm) is None                  # nothing measured yet
    f = snapshot.restore_probe_file(arm)
    f.parent.mkdir(parents=True)
    f.write_text('{"qemu": "q", "version": "7.2.22 (Debian)", "kernel": "7.2.13+", '
                 '"refused": null}')
    assert snapshot.kept_refusal(arm) is None                  # the probe passed
    snapshot.refuse(arm, "a restore failed (timed out)")
    assert snapshot.kept_refusal(arm) == "a restore failed (timed out)"
    assert '"kernel": "7.2.13+"' in f.read_text()              # the probe's record stays
