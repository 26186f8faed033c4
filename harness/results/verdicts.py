"""The verdict record: results/RUN/verdicts.jsonl, and the only code that interprets it.

One JSON object per line.  The first is the header (what judged: the guestpm commit, the
QEMU version of each emulator used, the accelerator, the host); then one line per test x
target.  A verdict line names the test without its target, the target (kernel spec,
release, CPU arch, machine profile, the L2 guest kernel of a host x guest cell), the
outcome (PASS FAIL SKIP XFAIL XPASS ERROR), the reason (the SKIP reason, the assertion
message, the first failing check of an in-guest case), the kernel splats printed during
the test, its artifacts (relative to the run directory) and its duration.

Pure: no pytest, no QEMU.  The summary matrix, the KTAP file, bisect and compare read
verdicts through this module only; pytest's JUnit file stays pytest's own.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.errors import GuestpmError

FILE = "verdicts.jsonl"
SCHEMA = 1
# pytest's words -> the record's; the one label table of the project
LABEL = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP",
         "xfailed": "XFAIL", "xpassed": "XPASS"}
OUTCOMES = tuple(LABEL.values())
# worst first: a summary cell shows the first of these that it holds
SEVERITY = ("FAIL", "ERROR", "XPASS", "XFAIL", "SKIP", "PASS")
NOT_OK = frozenset({"FAIL", "ERROR", "XPASS"})      # KTAP "not ok", a cell's first failure
SELF_TEST = "guestpm self-tests"
STAND_IN = "stand-in"        # row prefix: our code playing an unmerged series


class RecordError(GuestpmError):
    """A verdict record that cannot be read (missing, truncated, another schema)."""


@dataclass(frozen=True)
class Header:
    guestpm: str = "unknown"                 # the commit (+ "-dirty") that judged
    qemu: dict = field(default_factory=dict)  # emulator binary -> its version line
    accel: str = "tcg"
    host: str = ""
    started: str = ""                        # UTC, ISO 8601
    schema: int = SCHEMA


@dataclass(frozen=True)
class Verdict:
    test: str                  # test_psci::test_psci[vhe-system_off2_features]: no target
    outcome: str               # one of OUTCOMES
    nodeid: str = ""           # pytest's id, target included
    file: str = ""             # tests/e2e/test_psci.py: what selects it again
    kernel: str = ""           # the spec; "" for tests of guestpm itself
    release: str = ""
    arch: str = ""             # CPU architecture: x86_64, arm64
    profile: str = ""          # machine profile: x86_64, x86_64-pc, arm64, arm64-uefi
    guest: str | None = None   # the L2 guest kernel's spec, for host x guest cells
    accel: str = ""            # the accelerator the target's L1 ran under: tcg, kvm
    family: str = ""
    kind: str = "kernel"       # kernel, self-test (guestpm's), stand-in (ours, not the kernel's)
    reason: str = ""
    splats: tuple = ()         # {kind, title, when, allowed} of splats printed during it
    artifacts: str | None = None
    duration: float = 0.0
    info: tuple = ()           # information about the target, not verdicts

    @property
    def target(self) -> str:
        return f"{self.kernel}/{self.profile}" if self.kernel else ""

    @property
    def row(self) -> str:
        """The summary row: the target; guestpm's own tests and stand-ins apart."""
        if not self.kernel or self.kind == "self-test":
            return SELF_TEST
        return f"{STAND_IN} {self.target}" if self.kind == "stand-in" else self.target

    @property
    def check(self) -> dict | None:
        return first_check(self.reason) if self.outcome in ("FAIL", "ERROR") else None


@dataclass
class Record:
    header: Header
    verdicts: list[Verdict]
    path: Path | None = None        # the run directory it was read from

    def kernels(self) -> list[str]:
        return list(dict.fromkeys(v.kernel for v in self.verdicts if v.kernel))


def label(pytest_outcome: str) -> str:
    return LABEL[pytest_outcome]


def dumps(header: Header, verdicts: list[Verdict]) -> str:
    lines = [json.dumps({"header": asdict(header)}, sort_keys=True)]
    for v in verdicts:
        d = asdict(v)
        d["splats"], d["info"] = list(v.splats), list(v.info)
        d["check"] = v.check        # derived from the reason; written for other readers
        lines.append(json.dumps(d, sort_keys=True))
    return "\n".join(lines) + "\n"


_FIELDS = {f.name for f in fields(Verdict)}


def loads(text: str, where: str = "verdicts") -> Record:
    """The record in `text`; RecordError naming `where` and the line when it is not one."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise RecordError(f"{where} is empty (a run that ended before its first test?)")
    try:
        objs = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as e:
        raise RecordError(f"{where} is not a verdict record: {e}") from None
    head = objs[0].get("header") if isinstance(objs[0], dict) else None
    if not isinstance(head, dict):
        raise RecordError(f"{where} has no header line: not a guestpm verdict record")
    if head.get("schema") != SCHEMA:
        raise RecordError(f"{where} is schema {head.get('schema')}, this guestpm reads "
                          f"schema {SCHEMA}")
    out = []
    for n, o in enumerate(objs[1:], 2):
        if not isinstance(o, dict) or o.get("outcome") not in OUTCOMES or "test" not in o:
            raise RecordError(f"{where}:{n}: not a verdict line")
        o = {k: v for k, v in o.items() if k in _FIELDS}
        o["splats"] = tuple(o.get("splats") or ())
        o["info"] = tuple(o.get("info") or ())
        out.append(Verdict(**o))
    return Record(Header(**{k: v for k, v in head.items()
                            if k in {f.name for f in fields(Header)}}), out)


def read(run_dir: Path) -> Record:
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise RecordError(f"{run_dir} has no {FILE}: not a guestpm run directory (or a "
                          "run that stopped before its first test)")
    rec = loads(path.read_text(), str(path))
    rec.path = Path(run_dir)
    return rec


def durations(run_dir: Path | None) -> dict[str, float]:
    """Each test's seconds in a finished run (node id -> duration): what the next run's
    scheduler orders its work units by.  {} without a readable record (no earlier run, a
    run that judged nothing, another schema)."""
    if run_dir is None:
        return {}
    try:
        rec = read(run_dir)
    except RecordError:
        return {}
    return {v.nodeid: v.duration for v in rec.verdicts if v.nodeid and v.duration > 0}


# ------------------------------------------------------------------ in-guest checks

# harness.plugin.suite.assert_case: "CASE: WHAT\n  expected E\n  actual   A\n  (doc)"
_CHECK = re.compile(r"(?:AssertionError: )?(?P<case>[\w.-]+): (?P<what>[^\n]+)\n"
                    r"\s+expected (?P<expected>[^\n]*)\n\s+actual\s+(?P<actual>[^\n]*)")


def first_check(reason: str) -> dict | None:
    """The first failing check of an in-guest suite case, from its assertion message:
    {case, what, expected, actual}; None for any other failure."""
    m = _CHECK.search(reason or "")
    return {k: m.group(k).strip() for k in ("case", "what", "expected", "actual")} if m else None


def headline(v: Verdict) -> str:
    """One line for a table: the check (what: expected E, actual A), else the reason's
    first line."""
    c = v.check
    if c:
        return f"{c['case']}: {c['what']}: expected {c['expected']}, actual {c['actual']}"
    line = (v.reason or "").strip().splitlines()[:1]
    return line[0] if line else ""


def by_row(verdicts: list[Verdict]) -> dict[str, list[Verdict]]:
    """Rows (targets; self-tests and stand-ins apart) in a stable order, whatever xdist did."""
    out: dict[str, list[Verdict]] = {}
    for v in sorted(verdicts, key=lambda v: v.nodeid or v.test):
        out.setdefault(v.row, []).append(v)
    return out
