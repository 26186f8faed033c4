"""The terminal bridged to a guest's serial console (`guestpm boot`): raw keys in, the
console's bytes out, until Ctrl-] or QEMU exits."""

from __future__ import annotations

import os
import sys
import termios
import threading
import tty

from harness.vm.machine import Machine


def attach(m: Machine) -> None:
    """Bridge the terminal to the guest console until Ctrl-] or QEMU exits."""
    stop = threading.Event()
    console = m.console
    assert console is not None  # a launched machine has its console
    screen = console.raw_spawn()      # unmended: the prompt shows before its newline

    def pump() -> None:
        while not stop.is_set():
            try:
                sys.stdout.write(screen.read_nonblocking(65536, timeout=0.2))
                sys.stdout.flush()
            except Exception as e:
                if type(e).__name__ == "EOF":
                    stop.set()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    console.write(b"\n")
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if old:
            tty.setraw(fd)
        while not stop.is_set() and m.alive():
            data = os.read(fd, 1024)
            if not data or b"\x1d" in data:
                break
            console.write(data.replace(b"\r", b"\n") if not old else data)
    finally:
        stop.set()
        if old:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        print()
