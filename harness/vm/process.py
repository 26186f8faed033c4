"""QEMU's process, started so that it dies with whoever started it:
  * PR_SET_PDEATHSIG=SIGKILL, so it dies even if the harness is SIGKILLed (the kernel
    does it; nothing has to run in Python);
  * its own process group, so Ctrl-C on the terminal goes to the harness, which then
    kills it;
  * an atexit hook kills every one still running, and Machine.close() (`with
    Machine(...)`) kills its own on exceptions, Ctrl-C (KeyboardInterrupt) and
    pytest-timeout's signal method;
  * only our own child is ever signalled, by pid."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import weakref
from pathlib import Path

from harness.vm.qmp import QMP

_LIVE: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:   # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)   # Ctrl-C on the terminal goes to the harness, which then kills us


@atexit.register
def _kill_all() -> None:
    for proc in list(_LIVE):
        kill(proc)


def start(args: list[str], log: Path, cwd: Path, pass_fds: tuple[int, ...]) -> subprocess.Popen:
    """QEMU with `args`, its stdout and stderr in `log`, holding `pass_fds`."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                pass_fds=pass_fds, preexec_fn=_die_with_parent, cwd=cwd)
    _LIVE.add(proc)
    return proc


def kill(proc: subprocess.Popen | None) -> None:
    """Kill `proc` (by pid) now.  Safe to call more than once, from any thread."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def quit_over_qmp(qmp: QMP, proc: subprocess.Popen) -> str | None:
    """QMP `quit`; what went wrong, if anything (still running 10 s later, or a non-zero
    status)."""
    error: str | None = None
    try:
        qmp.execute("quit", timeout=5)
    except Exception as e:        # QEMU may drop the connection before it replies:
        error = f"{type(e).__name__}: {e}"  # that is normal if it then exits 0
    try:
        status = proc.wait(10)
    except subprocess.TimeoutExpired:
        return f"QEMU still ran 10 s after QMP quit ({error or 'quit acknowledged'})"
    if status != 0:
        return f"QEMU exited with status {status} on QMP quit" + \
            (f" ({error})" if error else "")
    return None
