"""Child processes that die with the harness: each leads its own process group, its
output goes to a log (and to `on_line`), and any exception, Ctrl-C included, ends the
whole group before the harness goes on."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None,
               nice: int = 0, on_line: Callable[[str], None] | None = None,
               grace: float = 0) -> int:
    """Run CMD with its output appended to LOG (after a `$ CMD` line); its exit status.
    On an exception the group gets SIGTERM and, after `grace` seconds, SIGKILL (at once
    with no grace)."""
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        try:
            assert proc.stdout
            line = "\n"
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                if on_line:
                    on_line(line)
            if not line.endswith("\n"):          # git's last message has no newline
                fh.write("\n")
                if on_line:
                    on_line("\n")
            return proc.wait()
        finally:
            stop(proc, grace)


def stop(proc: subprocess.Popen, grace: float = 0) -> None:
    """End a child's process group (it leads one): SIGTERM, then SIGKILL after GRACE
    seconds (SIGKILL at once with no grace).  Nothing if it has exited."""
    if proc.poll() is not None:
        return
    try:
        if grace:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
