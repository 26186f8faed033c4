"""Firmware tables the harness adds to x86 guests, and the channel they report on.

ASL sources live in guest-rootfs/acpi/ and are compiled with iasl (Debian's
acpica-tools) at build time, cached by source digest.  The s2idle SSDT's methods write
one line per evaluation to I/O port 0xE9, served by QEMU's isa-debugcon into a file
chardev in the machine's directory; `DebugconTap` reads those lines as they arrive,
stamped with the host time it first saw them."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import cache
from .errors import SetupError
from .wait import wait_until

ASL_DIR = Path(__file__).resolve().parent.parent / "guest-rootfs" / "acpi"
DEBUGCON_LOG = "acpi-debugcon.log"
DEBUGCON_PORT = 0xE9


class AslError(SetupError):
    """iasl rejected an ASL source; the message carries iasl's own error lines."""


def iasl() -> str:
    path = shutil.which("iasl")
    if not path:
        raise SetupError("iasl not found: apt-get install acpica-tools (or run `guestpm setup`), "
                         "needed to compile the guest's ACPI tables from guest-rootfs/acpi/")
    return path


def compile_asl(source: Path) -> Path:
    """The AML for `source`, compiled once per source text and iasl binary."""
    compiler = iasl()
    text = source.read_bytes()
    key = cache.digest(text, Path(compiler).read_bytes())[:16]
    aml = cache.cache_dir() / "acpi" / f"{source.stem}-{key}.aml"
    if aml.exists():
        return aml
    with tempfile.TemporaryDirectory(prefix="guestpm-iasl-") as tmp:
        src = Path(tmp) / source.name
        src.write_bytes(text)
        proc = subprocess.run([compiler, "-p", str(Path(tmp) / source.stem), "-vi", str(src)],
                              capture_output=True, text=True, cwd=tmp)
        out = Path(tmp) / f"{source.stem}.aml"
        if proc.returncode != 0 or not out.exists():
            raise AslError(f"iasl could not compile {source}:\n"
                           + asl_errors(proc.stdout + proc.stderr).replace(str(src), str(source)))
        cache.write_atomic(aml, out.read_bytes())
    return aml


def asl_errors(output: str) -> str:
    """iasl's diagnostics without its banner: the lines a developer needs."""
    keep = [ln for ln in output.splitlines()
            if ln.strip() and not re.match(r"\s*(Intel ACPI Component|ASL\+ Optimizing|"
                                            r"Copyright|Compiler aborting|ASL Input:|"
                                            r"AML Output:|Compilation complete)", ln)]
    return "\n".join(keep) or output.strip() or "(iasl printed nothing)"


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


class GuestEvents:
    """The guest agent's record of what its drivers emitted (harness/guest/acpi_events.py):
    acpi_event netlink messages and key events of the named input devices."""

    LOG = "/run/guestpm-acpi-events.jsonl"

    def __init__(self, m, inputs: tuple[str, ...] = ()):
        self.m = m
        args = " ".join(f"--input {shlex.quote(i)}" for i in inputs)
        self.proc = m.ssh.start(f"cd /opt/guestpm && exec python3 -m harness.guest.acpi_events "
                                f"listen {self.LOG} {args}")
        self.ready = self.wait_for(lambda recs: True, 60, "the guest's acpi_event listener",
                                   ready=True)[0]["ready"]

    def records(self) -> list[dict]:
        out = self.m.ssh.run(f"cat {self.LOG} 2>/dev/null").output
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def wait_for(self, done: Callable[[list[dict]], bool], timeout: float, what: str,
                 ready: bool = False) -> list[dict]:
        """Poll the record until done(events) holds; the timeout quotes what the guest's
        drivers did emit."""
        got: list[dict] = []

        def emitted() -> list[dict] | None:
            nonlocal got
            got = [r for r in self.records() if ("ready" in r) == ready]
            return got if got and done(got) else None

        def listening() -> None:
            if self.proc.done():
                r = self.proc.wait(1)
                raise AssertionError(f"the guest's acpi_event listener exited {r.status}: "
                                     f"{r.stderr.strip() or r.output.strip()}")
        return wait_until(emitted, timeout, what, listening, interval=0.3,
                          fail=lambda: f"{what}: not in the guest's acpi_event log within "
                                       f"{timeout:.0f}s; it holds {got or 'no events'}")


def press_power_button(m, ev: "GuestEvents", timeout: float = 30) -> tuple[list, list]:
    """`system_powerdown` (QEMU acknowledges it with POWERDOWN), then what the guest's
    drivers emitted for it: the acpi_event triples (class, bus id, type) and the
    (code, value) input events of the listener's input devices."""
    t0 = time.time()
    m.qmp.execute("system_powerdown")
    m.wait_event("POWERDOWN", after=t0, timeout=10)
    got = ev.wait_for(lambda r: any(e["source"] == "netlink" for e in r) and
                      any(e["source"] == "input" and e["value"] == 0 for e in r), timeout,
                      "system_powerdown: the button's acpi_event and KEY_POWER press/release")
    return ([(e["device_class"], e["bus_id"], e["type"]) for e in got if e["source"] == "netlink"],
            [(e["code"], e["value"]) for e in got if e["source"] == "input"])

