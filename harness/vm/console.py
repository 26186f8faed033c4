"""The guest's serial console.

A reader thread drains QEMU's side of the console socket continuously, so the
guest never stalls on a full buffer while nobody is expecting anything.  Every
byte goes to the console log as it came; the harness reads the lines mended
(LineMender: a kernel record that landed inside a line the shell was writing is
moved out in front of it), scans them for panics and oopses, and a pexpect spawn
reads them for the command runner.  An interactive terminal reads the bytes
unmended (raw_spawn), prompts included.
"""

from __future__ import annotations

import codecs
import queue
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
from pexpect.spawnbase import SpawnBase

from harness.errors import GuestMisbehaved, GuestPanic, WaitTimeout
from harness.signals import leave_signals_to_the_main_thread
from harness.vm.splats import Scanner, SplatLog
from harness.wait import wait_until, within

# Console lines that mean the kernel under test crashed.  The first such line makes
# every wait on this machine fail, quoting it and what follows.  The other "BUG: "
# titles (KASAN, sleeping in atomic context, soft lockup, ...) leave the kernel
# running: they are splats (harness/vm/splats.py), which fail the test, not the machine.
FATAL = re.compile(r"Kernel panic - not syncing|\bOops\b|Internal error: |"
                   r"^\s*(\[[ \d.]+\] )?(BUG: (unable to handle|kernel NULL pointer|"
                   r"kernel paging request)|kernel BUG at )|"
                   r"general protection fault|Unable to handle kernel")
CONTEXT_LINES = 40
# A kernel message as the console prints it (CONFIG_PRINTK_TIME).  printk writes
# whole records, but they can land in the middle of a shell's output line.
KERNEL_RECORD = re.compile(r"\[ *\d+\.\d{6}\] [^\n]*\n")


# Where a kernel record starts, wherever it landed on the line.
RECORD_START = re.compile(r"\[ *\d+\.\d{6}\] ")


class LineMender:
    """Console lines put back together after a kernel record tore them.

    printk writes each record whole, ending in its own newline, but on the serial line
    it can land inside a line the shell is writing (its bytes go out from the tty's
    buffer, the record's straight from printk), e.g. between /init's ready line and the
    line's newline:

        guestpm: ready uptime=8.55 release=5.10.0-32-arm64[    9.570005] IPv6: ...\r\n\r\n

    The mender holds the line being written until its newline; a record that arrives
    inside it is emitted at once, ahead of the line, which follows whole:

        [    9.570005] IPv6: ...\r\n
        guestpm: ready uptime=8.55 release=5.10.0-32-arm64\r\n

    Every pattern the harness waits for ends with a newline, so holding a line back
    delays no match.  Text that never ends (a prompt) stays held until `flush()`, or
    until `limit` characters pile up.  The same stream cut into any chunks mends the
    same.  A line that itself contains a record's timestamp after other text is taken
    for a torn one: user output does not print those mid-line."""

    def __init__(self, limit: int = 1 << 16):
        self.held = ""
        self.limit = limit

    def feed(self, text: str) -> str:
        """The mended text that is complete now (whole lines and records)."""
        held, out = self.held + text, []
        while True:
            nl = held.find("\n")
            if nl < 0:
                break
            record = RECORD_START.search(held, 0, nl)
            if record is None or record.start() == 0:     # a whole line, or a record
                out.append(held[:nl + 1])
                held = held[nl + 1:]
            else:                                         # a record inside a line
                out.append(held[record.start():nl + 1])
                held = held[:record.start()] + held[nl + 1:]
        if len(held) > self.limit:
            out.append(held)
            held = ""
        self.held = held
        return "".join(out)

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def mend(text: str) -> str:
    """`text` as the harness reads it (LineMender), the unfinished last line included."""
    m = LineMender()
    return m.feed(text) + m.flush()


def split_kernel_messages(text: str) -> tuple[str, list[str]]:
    """Separate kernel messages from a command's console output.

    The serial console carries both: a late probe or a clocksource warning printed
    while a command runs would otherwise become part of the command's output."""
    records = [m.group(0).rstrip("\n") for m in KERNEL_RECORD.finditer(text)]
    return KERNEL_RECORD.sub("", text), records


class ConsoleSpawn(SpawnBase):
    """pexpect over a queue of text fed by the console's reader thread (cf.
    PopenSpawn, but blocking on the queue instead of polling it)."""

    def __init__(self, console: Console, timeout: float = 30):
        super().__init__(timeout=timeout, encoding="utf-8", codec_errors="replace",
                         maxread=65536)
        self._console = console
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self._buf = ""

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> str:
        if timeout == -1:
            timeout = self.timeout
        buf = self._buf
        if not buf:
            if self._eof:
                self.flag_eof = True
                raise pexpect.EOF("console closed (QEMU exited)")
            try:
                chunk = self._queue.get(timeout=timeout if timeout is not None else 1e6)
            except queue.Empty:
                raise pexpect.TIMEOUT("no console output") from None
            if chunk is None:
                self._eof = True
                self.flag_eof = True
                raise pexpect.EOF("console closed (QEMU exited)")
            buf = chunk
            while True:          # take whatever else is already queued
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._eof = True
                    break
                buf += more
        r, self._buf = buf[:size], buf[size:]
        self._log(r, "read")
        return r

    def send(self, s: str | bytes) -> int:
        data = s.encode() if isinstance(s, str) else s
        self._log(s, "send")
        self._console.write(data)
        return len(data)

    def sendline(self, s: str = "") -> int:
        return self.send(s + "\n")


class CommandFailed(GuestMisbehaved):
    """A command in the guest that had to succeed exited non-zero (`CommandResult.check`)."""


@dataclass
class CommandResult:
    command: str
    status: int
    output: str
    stderr: str = ""     # separate only over ssh; the console merges it into output
    kernel: list[str] = field(default_factory=list)   # console only: kernel messages
                                                      # printed while it ran

    def check(self) -> CommandResult:
        if self.status != 0:
            raise CommandFailed(f"`{self.command}` exited {self.status}:\n{self.output}"
                                f"{self.stderr}")
        return self


class Console:
    def __init__(self, sock: socket.socket, log_path: Path, splats: SplatLog | None = None,
                 history: bytes = b""):
        """`history`: what this guest printed before this QEMU ran (a restored snapshot's
        boot): it starts the log and the tail, and is neither scanned nor expected."""
        self._sock = sock
        self.log_path = log_path
        self.splats = splats if splats is not None else SplatLog()
        self._scanner = Scanner("console", log_path, FATAL)
        self._log = open(log_path, "wb", buffering=0)
        self._log.write(history)
        self._lock = threading.Lock()
        self._lines: list[str] = mend(history.decode(errors="replace")).replace("\r", "") \
            .splitlines()                    # complete lines, for tails and fatal context
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._mender = LineMender()
        self._raw_spawns: list[ConsoleSpawn] = []
        self.fatal_index: int | None = None
        self.closed = threading.Event()
        self.output_seen = threading.Event()     # the first byte arrived
        self.spawn = ConsoleSpawn(self)          # the mended lines
        self._thread = threading.Thread(target=self._reader, name="console-reader", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ reader thread
    def _reader(self) -> None:
        leave_signals_to_the_main_thread()
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                self._log.write(data)
                self.output_seen.set()
                text = self._decoder.decode(data)
                for raw in list(self._raw_spawns):
                    raw._queue.put(text)
                self._take(self._mender.feed(text))
        finally:
            self._take(self._mender.flush() + self._decoder.decode(b"", final=True))
            for spawn in [self.spawn, *self._raw_spawns]:
                spawn._queue.put(None)
            self.closed.set()

    def _take(self, mended: str) -> None:
        """Mended text (whole lines, but at the end) to the scanners and the spawn."""
        if not mended:
            return
        lines = mended.replace("\r", "").split("\n")
        if not lines[-1]:
            lines.pop()
        with self._lock:
            for line in lines:
                if self.fatal_index is None and FATAL.search(line):
                    self.fatal_index = len(self._lines)
                splat = self._scanner.feed(line)
                if splat is not None:
                    self.splats.add(splat)
                self._lines.append(line)
        self.spawn._queue.put(mended)

    # ------------------------------------------------------------ queries
    @property
    def size(self) -> int:
        """Bytes logged so far (an offset for slicing the log per test)."""
        return self.log_path.stat().st_size

    def tail(self, n: int = 25) -> str:
        with self._lock:
            held = self._mender.held.replace("\r", "")
            lines = self._lines[-n:] + ([held] if held else [])   # a prompt, or where
        return "\n".join(lines)                                     # a line stopped

    def has_line(self, text: str, last: int = 200) -> bool:
        """Whether one of the last `last` complete lines, already fed to the splat
        scanner, contains `text`."""
        with self._lock:
            return any(text in line for line in self._lines[-last:])

    def fatal(self) -> str | None:
        """The panic/oops lines if one was seen (waits briefly for the rest of the trace)."""
        if self.fatal_index is None:
            return None
        at = self.fatal_index

        def complete() -> bool:
            with self._lock:
                return self.closed.is_set() or len(self._lines) - at >= CONTEXT_LINES
        within(complete, 2, what="the rest of the crash's console lines")
        with self._lock:
            return "\n".join(self._lines[at:at + CONTEXT_LINES])

    def check_fatal(self) -> None:
        text = self.fatal()
        if text is not None:
            raise GuestPanic(f"the guest kernel crashed (console log {self.log_path}):\n{text}")

    def wait_output(self, timeout: float, watchdog=None, pattern: str | None = None) -> bool:
        """Whether the guest printed anything (or `pattern`) within `timeout` (the
        watchdog runs every half second, so a QEMU that exits is reported as such)."""
        watchdog = watchdog or self.check_fatal
        if pattern:
            try:
                self.expect(pattern, timeout, pattern, watchdog)
                return True
            except WaitTimeout:
                return False
        return bool(within(self.output_seen.is_set, timeout, watchdog, interval=0.5,
                           sleep=self.output_seen.wait, what="the console's first byte"))

    def raw_spawn(self) -> ConsoleSpawn:
        """A spawn of the console's text from now on as it comes, unmended: for a person
        at a terminal, who must see a prompt that has no newline yet."""
        spawn = ConsoleSpawn(self)
        self._raw_spawns.append(spawn)
        return spawn

    # ------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    # ------------------------------------------------------------ expecting
    def expect(self, pattern: str | re.Pattern, timeout: float, what: str,
               watchdog=None) -> re.Match:
        """Wait for `pattern` on the console.  `watchdog` (default: the panic check) runs
        every half second and raises when the guest or its QEMU is gone."""
        watchdog = watchdog or self.check_fatal
        watchdog()

        def matched() -> re.Match | None:
            try:
                self.spawn.expect(pattern, timeout=0.5)   # blocks: the poll's own sleep
                return self.spawn.match
            except pexpect.TIMEOUT:
                return None
            except pexpect.EOF:
                # QEMU closed its end; its exit status may lag a moment behind the EOF
                within(lambda: False, 5, watchdog,
                       what="QEMU's exit after its console closed (a grace: always used up)")
                raise WaitTimeout(f"console closed while waiting for {what}; console tail "
                                  f"({self.log_path}):\n{self.tail()}") from None
        return wait_until(matched, timeout, what, watchdog, interval=0, sleep=lambda s: None,
                          fail=lambda: f"timed out after {timeout:.0f}s waiting for {what}; "
                                       f"console tail ({self.log_path}):\n{self.tail()}")

    def run(self, command: str, timeout: float = 60, watchdog=None) -> CommandResult:
        """Run a shell command on the console; returns its exit status and output.

        The markers are split by quoting in the command line we send, so an echo
        of our own input can never be mistaken for them."""
        nonce = secrets.token_hex(6)
        self.spawn.sendline(f"echo '@@B'{nonce}; {command}; printf '@@E%s:%d\\n' {nonce} $?")
        self.expect(f"@@B{nonce}\r?\n", timeout, f"the console to start `{command}`", watchdog)
        m = self.expect(re.compile(rf"@@E{nonce}:(\d+)\r?\n"), timeout,
                        f"`{command}` to finish on the console", watchdog)
        output, kernel = split_kernel_messages(self.spawn.before.replace("\r\n", "\n"))
        return CommandResult(command, int(m.group(1)), output, kernel=kernel)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._sock.close()
        self._log.close()
