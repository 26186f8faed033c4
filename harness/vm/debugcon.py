"""The channel the s2idle SSDT reports on: QEMU's isa-debugcon at I/O port 0xE9.

The SSDT's methods write one line per evaluation to the port, which QEMU serves into a
file chardev in the machine's directory; `DebugconTap` reads those lines as they
arrive, stamped with the host time it first saw them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.image.aml import ASL_DIR, compile_asl
from harness.wait import wait_until

DEBUGCON_LOG = "acpi-debugcon.log"
DEBUGCON_PORT = 0xE9


def s2idle_qemu_args(log_name: str = DEBUGCON_LOG) -> tuple[str, ...]:
    """QEMU arguments for the s2idle SSDT and its debug port (relative to the machine's
    directory, QEMU's working directory)."""
    aml = compile_asl(ASL_DIR / "s2idle.asl")
    return ("-acpitable", f"file={aml}",
            "-chardev", f"file,id=gpmacpi,path={log_name}",
            "-device", f"isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=gpmacpi")


@dataclass(frozen=True)
class Line:
    seen: float        # host time.time() when the tap first read it
    text: str


class DebugconTap:
    """The lines the guest's firmware wrote to the debug port, in order of arrival."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[Line] = []
        self._partial = ""
        self._offset = 0

    def poll(self) -> list[Line]:
        """Read what arrived since the last poll; returns the new lines."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        now = time.time()
        *complete, self._partial = (self._partial + data.decode(errors="replace")).split("\n")
        new = [Line(now, t.strip()) for t in complete if t.strip()]
        self.lines.extend(new)
        return new

    def texts(self, since: int = 0) -> list[str]:
        return [ln.text for ln in self.lines[since:]]

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float, what: str,
                 watchdog: Callable[[], None], since: int = 0) -> list[str]:
        """Poll until done(lines since `since`) holds; WaitTimeout names what is missing
        and quotes what did arrive.  `watchdog`: the writing machine's (Machine.watch())."""
        def arrived() -> tuple[list[str]] | None:      # a tuple: true even around []
            self.poll()
            texts = self.texts(since)
            return (texts,) if done(texts) else None
        return wait_until(arrived, timeout, what, watchdog, interval=0.05,
                          fail=lambda: f"{what} did not reach the host's debug port within "
                                       f"{timeout:.0f}s; it received "
                                       f"{self.texts(since) or 'nothing'} ({self.path})")[0]
