"""Kernel splats: WARNINGs, lockdep, KASAN/KFENCE/UBSAN reports, hung tasks, RCU
stalls and lockups, found in whatever kernel log the harness reads.

A splat is not a crash (console.FATAL is): the kernel goes on, so the machine keeps
answering, but the run is evidence of a kernel defect.  The test during which one is
printed FAILs, quoting it (pytest_plugin), and its machine serves no other test
(lockdep switches itself off after its first report).

Patterns are anchored on the kernel's record format, a printk timestamp and then the
title at the start of the message (`[   12.345678] WARNING: CPU: 0 PID: 1 at f.c:12`),
so a command's own output that merely contains "WARNING" never matches.  The titles
are the kernel's own strings (lib/bug.c, kernel/locking/lockdep.c, mm/kasan/report.c,
mm/kfence/report.c, lib/ubsan.c, kernel/hung_task.c, kernel/rcu/tree_stall.h,
kernel/watchdog.c, kernel/sched/core.c); they are the same from 5.10 to 7.2 apart
from the prefixes noted below.

Everything here is pure: a Scanner is fed lines and returns the splats it found; the
allowlist is data.  Pure logic, golden-tested in tests/unit/test_splats.py.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

# A printk record as console and dmesg print it: the timestamp (%5lu.%06lu), and on
# kernels with CONFIG_PRINTK_CALLER the caller id ([T123] / [C1]).  On the serial
# console a record can start after a shell prompt's "# ", on the same line.
RECORD = re.compile(r"^(?:.*?[^\w\]])?\[ *(\d+\.\d{6})\](?:\[ *[CT]\d+\])? (.*)$")

# (kind, title) in the order they are tried.  A title is matched at the start of a
# record's message.
KINDS: tuple[tuple[str, re.Pattern], ...] = tuple((k, re.compile(p)) for k, p in (
    # WARN_ON/WARN (kernel/panic.c __warn): "WARNING: CPU: %d PID: %d at %s:%d %pS" up
    # to 6.x; 7.2 says "WARNING: %s:%d at %pS, CPU#%d: %s/%d" (or "WARNING: at %pS, ...")
    ("warning", r"WARNING: (CPU: \d+ PID: \d+ at \S+|(\S+:\d+ )?at \S+.*, CPU#\d+: \S+/\d+)"),
    # lockdep's banners (kernel/locking/lockdep.c) and RCU's lockdep check
    ("lockdep", r"WARNING: (possible circular locking dependency detected|"
                r"possible recursive locking detected|inconsistent lock state|"
                r"possible irq lock inversion dependency detected|"
                r"\S+-safe -> \S+-unsafe lock order detected|bad unlock balance detected!|"
                r"held lock freed!|lock held when returning to user space!|"
                r"Nested lock was not taken|bad contention detected!|chain_key collision|"
                r"suspicious RCU usage|\S+/\d+ still has locks held!)"),
    ("lockdep", r"DEBUG_LOCKS_WARN_ON\("),
    ("kasan", r"BUG: KASAN: "),
    ("kfence", r"BUG: KFENCE: "),
    # 5.10's lib/ubsan.c said "UBSAN: Undefined behaviour in FILE"; 5.12 on "UBSAN: X in"
    ("ubsan", r"UBSAN: \S.* in \S+"),
    ("atomic", r"BUG: (sleeping function called from invalid context|"
               r"scheduling while atomic|using smp_processor_id\(\) in preemptible|"
               r"using __this_cpu_\w+\(\) in preemptible|workqueue leaked lock|"
               r"spinlock \w+ on CPU|rwlock \w+ on CPU|Bad page \w+|Bad rss-counter)"),
    ("hung-task", r"INFO: task \S+ blocked.* for more than \d+ seconds"),
    # 5.10: "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"; pr_fmt adds "rcu: "
    ("rcu-stall", r"(rcu: )?INFO: \w+ (detected stalls on CPUs/tasks|self-detected stall)"),
    # kernel/watchdog.c: "watchdog: " is its pr_fmt
    ("soft-lockup", r"(watchdog: )?BUG: soft lockup - CPU#\d+ stuck"),
    ("hard-lockup", r"(watchdog: |NMI watchdog: )?(CPU\d+: )?Watchdog detected hard LOCKUP"),
    ("workqueue-lockup", r"BUG: workqueue lockup"),
))
CUT_HERE = re.compile(r"-+\[ cut here \]-+")
BANNER = re.compile(r"^=+$")                   # lockdep, KASAN, KFENCE frame their reports
END_TRACE = re.compile(r"---\[ end trace")
CALL_TRACE = re.compile(r"^(Call [Tt]race:|Stack backtrace:)")
MAX_LINES = 120         # lines kept per splat (a lockdep report and its backtrace: ~95)
QUOTE_TRACE = 12        # call-trace lines quoted in a failure message
# the reporting machinery at the top of a trace (dump_stack and the checker that called
# it): left out of the quote, so the 12 lines are the code under test
REPORTER_FRAME = re.compile(r"(show_stack|dump_stack\w*|print_\w+|check_\w+|__lock_acquire|"
                            r"lock_acquire|kasan_report\w*|__asan_\w+|report_bug|__warn|"
                            r"ubsan_\w+|__ubsan_\w+)\+")
# lockdep: the lines that name the locks (each with the next line); KASAN/KFENCE: the
# access (its own line)
LOCK_CONTEXT = re.compile(r"is trying to acquire lock:|but task is already holding lock:")
ACCESS_CONTEXT = re.compile(r"^(Read|Write) of size \d+ at addr|^(Out-of-bounds|Use-after-free|"
                            r"Invalid) (read|write|free) at")


@dataclass
class Splat:
    kind: str
    title: str               # the message of the title record, without its timestamp
    timestamp: str
    source: str              # "console", "dmesg over ssh", "L2 console"
    log: str                 # the file it was read from
    line: int                # 1-based line of the title in that file
    lines: list[str] = field(default_factory=list)    # title and what followed, as read
    allowed: Allowance | None = None
    own: bool = True         # printed by the machine's own kernel (not its L2 guest's)

    @property
    def key(self) -> tuple[str, str]:
        """The same record seen twice (the console, then dmesg over ssh) is one splat."""
        return self.timestamp, self.title

    def trace(self) -> list[str]:
        """The call-trace lines (the first trace of the report)."""
        out, inside = [], False
        for text in self.lines[1:]:
            m = RECORD.match(text)
            msg = (m.group(2) if m else text).rstrip()
            if CALL_TRACE.match(msg.strip()):
                inside = True
                continue
            if inside:
                if not msg.startswith(" ") or END_TRACE.search(msg) or not msg.strip():
                    break
                out.append(msg.strip())
        return out

    def context(self) -> list[str]:
        """lockdep: which lock is taken while holding which (the line and the next);
        KASAN/KFENCE: the bad access."""
        msgs = [(m.group(2) if (m := RECORD.match(t)) else t).strip() for t in self.lines]
        out = []
        for i, msg in enumerate(msgs):
            if LOCK_CONTEXT.search(msg) and i + 1 < len(msgs):
                out += [msg, msgs[i + 1]]
            elif ACCESS_CONTEXT.match(msg):
                out.append(msg)
        return out

    def quote(self) -> str:
        trace = self.trace()
        while len(trace) > 1 and REPORTER_FRAME.match(trace[0]):
            trace = trace[1:]
        body = [f"  {self.title}"] + [f"  {c}" for c in self.context()]
        if trace:
            body += ["  Call trace:"] + [f"    {t}" for t in trace[:QUOTE_TRACE]]
            if len(trace) > QUOTE_TRACE:
                body.append(f"    ... ({len(trace) - QUOTE_TRACE} more)")
        else:
            body += [f"  {s}" for s in self.lines[1:8]]
        return (f"kernel splat ({self.kind}) at [{self.timestamp}] on the {self.source}, "
                f"{self.log}:{self.line}\n" + "\n".join(body))

    def record(self) -> dict:
        return {"kind": self.kind, "title": self.title, "timestamp": self.timestamp,
                "source": self.source, "log": self.log, "line": self.line,
                "allowed": self.allowed.reason if self.allowed else None}


def classify(message: str) -> tuple[str, str] | None:
    """(kind, title) when a record's message starts a splat."""
    for kind, pattern in KINDS:
        if pattern.match(message):
            return kind, message.rstrip()
    return None


class Scanner:
    """Finds splats in a kernel log fed line by line (a console, a dmesg output).

    A splat's lines run from its title to the end of its report: `---[ end trace`, the
    closing `====` banner of a KASAN/KFENCE/lockdep report, the next splat, or
    MAX_LINES.  Once the kernel crashed (`crashed()`), later splats belong to the
    crash's own report and are not counted on their own."""

    def __init__(self, source: str, log: str | Path, fatal: re.Pattern | None = None):
        self.source, self.log, self._fatal = source, str(log), fatal
        self._open: Splat | None = None
        self._crashed = False
        self._lineno = 0

    def crashed(self) -> None:
        self._crashed = True
        self._open = None

    def feed(self, line: str) -> Splat | None:
        """The new splat whose title is `line`, else None (the line may extend the open
        one)."""
        self._lineno += 1
        line = line.rstrip("\r\n")
        if self._fatal is not None and not self._crashed and self._fatal.search(line):
            self.crashed()
        if self._crashed:
            return None
        m = RECORD.match(line)
        found = classify(m.group(2)) if m else None
        if found is None:
            if self._open is not None:
                self._extend(line, m.group(2) if m else line)
            return None
        kind, title = found
        assert m is not None        # classify() found a splat in the record's message
        if self._open is not None and self._continues(kind):
            self._extend(line, m.group(2))
            return None
        self._open = Splat(kind, title, m.group(1), self.source, self.log, self._lineno,
                           [line])
        return self._open

    def _continues(self, kind: str) -> bool:
        """A DEBUG_LOCKS_WARN_ON() message is followed by its own WARNING line: one splat."""
        s = self._open
        assert s is not None
        return s.kind == "lockdep" and s.title.startswith("DEBUG_LOCKS_WARN_ON(") \
            and kind == "warning" and len(s.lines) <= 2

    def _extend(self, line: str, message: str) -> None:
        s = self._open
        assert s is not None
        s.lines.append(line)
        if END_TRACE.search(message) or len(s.lines) >= MAX_LINES or \
                (BANNER.match(message.strip()) and len(s.lines) > 3):
            self._open = None

    def scan(self, text: str) -> list[Splat]:
        return [s for s in map(self.feed, text.splitlines()) if s is not None]


def scan(text: str, source: str, log: str | Path,
         fatal: re.Pattern | None = None) -> list[Splat]:
    return Scanner(source, log, fatal).scan(text)


# ------------------------------------------------------------------ the allowlist

@dataclass(frozen=True)
class Allowance:
    """A splat that does not fail a test: shown in the summary as a warning.  Each entry
    names the symptom it matches and why it is not the kernel's defect (or is a known
    one, listed in docs/known-defects.md)."""
    kind: str
    title: str              # regex, searched in the title
    release: str            # regex, matched against the kernel release
    profile: str            # regex, matched against the profile name
    symptom: str
    reason: str
    cmdline: str = ""       # regex, searched in the machine's extra kernel arguments
    accel: str | None = None    # only under this accelerator (tcg, kvm; None: any)

    def matches(self, splat: Splat, release: str, profile: str, cmdline: str = "",
                accel: str = "tcg") -> bool:
        return splat.kind == self.kind and re.search(self.title, splat.title) is not None \
            and re.match(self.release, release or "") is not None \
            and re.match(self.profile, profile or "") is not None \
            and re.search(self.cmdline, cmdline or "") is not None \
            and self.accel in (None, accel)


# Short because default runs' consoles hold no other splat (docs/splats.md, "The allowlist").
# An entry needs the evidence: the run, the symptom, and the write-up in
# docs/known-defects.md.
ALLOWED: tuple[Allowance, ...] = (
    # The debian:6.12 arm64 L1 host in nVHE mode under TCG WARNs inside KVM_RUN
    # (docs/known-defects.md, "Debian 6.12 arm64 KVM in nVHE mode under TCG"): the L2
    # verdicts stay right; the host's KVM or QEMU's EL2 emulation is wrong.
    Allowance(
        kind="warning",
        title=r" at arch/arm64/kvm/\S+ (mark_page_dirty_in_slot|kvm_arch_timer_get_input_level)\+",
        release=r"6\.12\.", profile=r"arm64$", cmdline=r"\bkvm-arm\.mode=nvhe\b",
        symptom="WARNING in mark_page_dirty_in_slot / kvm_arch_timer_get_input_level "
                "('No vcpu context') from kvm_handle_guest_abort under KVM_RUN",
        reason="known defect: debian 6.12 nVHE KVM under TCG loses its running vCPU "
               "(docs/known-defects.md)",
        accel="tcg"),
)


def allowance(splat: Splat, release: str, profile: str,
              allowed: tuple[Allowance, ...] | None = None,
              cmdline: str = "", accel: str = "tcg") -> Allowance | None:
    for a in ALLOWED if allowed is None else allowed:
        if a.matches(splat, release, profile, cmdline, accel):
            return a
    return None


class SplatLog:
    """The splats of one machine, from all the logs read from it, each once.  Consoles
    feed it from their reader threads; the test plugin claims them per test."""

    def __init__(self, release: str = "", profile: str = "",
                 allowed: tuple[Allowance, ...] | None = None, cmdline: str = "",
                 accel: str = "tcg"):
        self.release, self.profile, self.allowed = release, profile, allowed
        self.cmdline = cmdline      # the machine's extra kernel arguments
        self.accel = accel          # the machine's accelerator (Allowance.accel)
        self._lock = threading.Lock()
        self._splats: list[Splat] = []
        self._keys: set[tuple[str, str]] = set()
        self._claimed = 0

    def add(self, splat: Splat, release: str | None = None) -> bool:
        splat.allowed = allowance(splat, release or self.release, self.profile, self.allowed,
                                  self.cmdline, self.accel)
        with self._lock:
            if splat.key in self._keys:
                return False
            self._keys.add(splat.key)
            self._splats.append(splat)
            return True

    def scan(self, text: str, source: str, log: str | Path, own: bool = True,
             release: str | None = None, fatal: re.Pattern | None = None) -> list[Splat]:
        """Add the splats of a whole log (dmesg over ssh, an L2 console); the new ones.
        With `fatal` (console.FATAL), what follows a crash is the crash's report."""
        new = []
        for s in scan(text, source, log, fatal):
            s.own = own
            if self.add(s, release):
                new.append(s)
        return new

    def claim(self) -> list[Splat]:
        """The splats not claimed before, now claimed by the caller."""
        with self._lock:
            out = self._splats[self._claimed:]
            self._claimed = len(self._splats)
            return out

    def since(self, n: int) -> list[Splat]:
        """The splats added after the first `n` (n: an earlier len())."""
        with self._lock:
            return self._splats[n:]

    def unclaimed(self) -> list[Splat]:
        with self._lock:
            return self._splats[self._claimed:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._splats)
