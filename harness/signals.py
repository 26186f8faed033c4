"""How the harness's threads and processes take signals: Ctrl-C, a CI timeout's SIGTERM
and a closed terminal's SIGHUP unwind the main thread, so every `finally` (which ends
the QEMUs the harness started) runs."""

from __future__ import annotations

import signal
import threading


def leave_signals_to_the_main_thread() -> None:
    """Call first in a helper thread: block SIGINT and SIGTERM there, so the kernel
    delivers them to the main thread.  Python runs handlers only in the main thread,
    and a signal that lands on a helper thread does not interrupt the main thread's
    sleep: a SIGTERM'd harness would sleep on (docs/figures.md, "Figures behind code
    comments")."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGHUP unwind like Ctrl-C so every `finally` runs (CLI use).

    SIGINT is set too: a process started in the background by a non-interactive
    shell (a CI runner's `cmd &`, nohup) inherits SIGINT ignored, and Python then
    leaves it ignored, so an interrupt would leave the harness and its QEMU running."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)
