"""An xdist worker dies with its controller, so its QEMUs do too (no QEMU here: the
worker's own pid is what a QEMU's PDEATHSIG hangs on).  Today execnet ends a worker
whose channel closed, a few seconds after the controller died; this guards that."""

import os
import signal
import subprocess
import sys
import textwrap
import time

SLEEPER = textwrap.dedent("""
    import os, time
    def test_sleeps(tmp_path_factory):
        with open(os.environ["GUESTPM_TEST_PIDFILE"], "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_controller_takes_its_workers_along(tmp_path):
    (tmp_path / "test_sleeper.py").write_text(SLEEPER)
    pidfile = tmp_path / "worker.pid"
    env = dict(os.environ, GUESTPM_TEST_PIDFILE=str(pidfile))
    ctl = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-n", "1", f"--results={tmp_path / 'r'}", "test_sleeper.py"],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()):
            assert ctl.poll() is None and time.monotonic() < deadline, "the worker never ran"
            time.sleep(0.2)
        worker = int(pidfile.read_text())
        assert worker != ctl.pid and _alive(worker)
        ctl.send_signal(signal.SIGKILL)       # no chance to tell its workers anything
        ctl.wait(10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), f"worker {worker} outlived its killed controller"
    finally:
        if ctl.poll() is None:
            ctl.kill()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)    # our own grandchild, by pid
