"""Machine's lifecycle without a QEMU: launching twice, a failed launch, an unclean quit."""

import os
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import AbnormalShutdown, BootError
from harness.kernel.kernels import Kernel
from harness.vm import machine as machine_mod
from harness.vm.machine import Machine


@pytest.fixture
def m(tmp_path, monkeypatch):
    monkeypatch.setattr(Machine, "check_host", staticmethod(lambda profile: None))
    k = Kernel("path:/x/bzImage", "x86_64", Path("/x/bzImage"), "7.2.0", None, None, "/x")
    return Machine(profiles.get("x86_64"), k, Path("/x/initrd"), tmp_path)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_launch_that_fails_to_start_qemu_leaks_no_socket(m, monkeypatch):
    def no_qemu(*a, **kw):
        raise FileNotFoundError("qemu-system-x86_64")
    monkeypatch.setattr(machine_mod.subprocess, "Popen", no_qemu)
    before = _fds()
    with pytest.raises(FileNotFoundError):
        m.launch()
    assert _fds() == before and m.proc is None


def test_a_machine_launches_once(m):
    m.proc = object()                       # as launch() leaves it
    with pytest.raises(BootError, match="already launched.*relaunch"):
        m.launch()


class _Proc:
    """QEMU as close() sees it: `quits` on QMP quit with `status`, or runs on until killed."""

    def __init__(self, status: int, quits: bool = True):
        self.status, self.quits, self.killed, self.exited = status, quits, False, False

    def poll(self):
        return self.wait() if self.exited or self.killed else None

    def wait(self, timeout=None):
        if not self.quits and not self.killed:
            raise machine_mod.subprocess.TimeoutExpired("qemu", timeout)
        self.exited = True
        return -9 if self.killed else self.status

    def kill(self):
        self.killed = True


class _Qmp:
    def __init__(self, error=None):
        self.error, self.closed = error, False

    def execute(self, cmd, timeout=30, **args):
        if self.error:
            raise self.error

    def close(self):
        self.closed = True


@pytest.mark.parametrize("proc,error,reported", [
    (_Proc(0), None, None),                               # quit, exit 0
    (_Proc(0), EOFError("connection closed"), None),      # QEMU hung up first: clean
    (_Proc(1), None, "status 1 on QMP quit"),
    (_Proc(0, quits=False), None, "still ran 10 s after QMP quit"),
], ids=["clean", "hung-up-first", "status-1", "never-quits"])
def test_close_reports_an_unclean_quit_after_releasing_everything(m, proc, error, reported):
    m.proc, m.qmp = proc, _Qmp(error)
    if reported is None:
        m.close()
    else:
        with pytest.raises(AbnormalShutdown, match=reported):
            m.close()
    assert m.qmp.closed and not m.alive()
    assert proc.killed == (not proc.quits)    # the one still running was killed
