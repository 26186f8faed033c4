"""What a patch changed: two runs' verdict records side by side (pure; the command line
is `guestpm compare`, harness.cli).

Verdicts are paired by test, machine profile and, when both sides judged the same
kernels, kernel (otherwise each side judged one kernel: the base and the patched one).
Only outcomes count: a SKIP whose reason changed (say, by a release number) is not a
change, and its reason is shown.  Groups:

  regression    PASS (or SKIP, XFAIL, XPASS) -> FAIL or ERROR; any outcome -> a SKIP
                the base did not have
  fix           FAIL or ERROR -> PASS, XFAIL or XPASS
  skip -> pass  SKIP -> PASS, XFAIL or XPASS: a feature the patched kernel has
  other         the remaining changes: between PASS, XFAIL and XPASS (a known defect
                that appeared or went away), FAIL <-> ERROR
  one side      a test judged on one side only
  new splats    a kernel splat during a test on the patched side that the base's same
                test did not print

`--confirm N` re-runs every change N times on both kernels (`confirm`, with a runner
the command line provides): "confirmed" when every re-run gives the same two outcomes,
else "flaky" with the counts.  Flaky changes are listed apart and do not set the exit
status: 1 when a regression is left, else 0.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestpmError
from harness.results.verdicts import Record, Verdict, headline

BAD = frozenset({"FAIL", "ERROR"})
REGRESSION, FIX, SKIP_PASS, OTHER, ONE_SIDE, SPLATS = (
    "regressions", "fixes", "skip -> pass", "other changes", "one side only", "new splats")
GROUPS = (REGRESSION, FIX, SKIP_PASS, OTHER, ONE_SIDE, SPLATS)
CHANGES = (REGRESSION, FIX, SKIP_PASS, OTHER)        # what --confirm re-runs


class CompareError(GuestpmError):
    """Two records that cannot be compared (bad input: exit status 2)."""


def classify(base: str, patched: str) -> str | None:
    """The group of an outcome change (None: no change)."""
    if base == patched:
        return None
    if patched == "SKIP":
        return REGRESSION
    if patched in BAD:
        return OTHER if base in BAD else REGRESSION
    if base in BAD:
        return FIX
    if base == "SKIP":
        return SKIP_PASS
    return OTHER


@dataclass
class Row:
    group: str
    test: str
    where: str                        # profile (and kernel, when both sides judged it)
    base: Verdict | None
    patched: Verdict | None
    splats: list[dict] = field(default_factory=list)    # new on the patched side
    status: str = ""                  # after --confirm: confirmed | flaky
    counts: str = ""

    def sides(self) -> tuple[Verdict, Verdict]:
        """(base, patched) of a change: every group but ONE_SIDE has both."""
        assert self.base is not None and self.patched is not None, self.group
        return self.base, self.patched


@dataclass
class Comparison:
    base: Record
    patched: Record
    rows: list[Row]
    base_name: str = "base"
    patched_name: str = "patched"

    def group(self, name: str, flaky: bool = False) -> list[Row]:
        return [r for r in self.rows if r.group == name and (r.status == "flaky") == flaky]

    def flaky(self) -> list[Row]:
        return [r for r in self.rows if r.status == "flaky"]

    def regressions(self) -> list[Row]:
        return self.group(REGRESSION)

    def exit_status(self) -> int:
        return 1 if self.regressions() else 0


def _key(v: Verdict, with_kernel: bool) -> tuple:
    return (v.kernel if with_kernel else "", v.profile, v.test)


def pairing(base: Record, patched: Record) -> bool:
    """Whether verdicts pair by kernel too (both sides judged the same kernels); False:
    each side judged one kernel.  CompareError otherwise."""
    kb, kp = base.kernels(), patched.kernels()
    if not kb or not kp:
        empty = "base" if not kb else "patched"
        raise CompareError(f"the {empty} side judged no kernel (its record holds only "
                           "guestpm's own tests, or nothing)")
    if sorted(kb) == sorted(kp) and len(kb) > 1:
        return True
    if len(kb) == 1 and len(kp) == 1:
        return kb == kp        # same kernel twice: pair by kernel all the same
    raise CompareError(f"the base judged {', '.join(kb)} and the patched side "
                       f"{', '.join(kp)}: compare needs the same kernels on both sides, or "
                       "one kernel on each")


_NOISE = [(re.compile(r"CPU: \d+ (UID: \d+ )?PID: \d+"), "CPU: N PID: N"),
          (re.compile(r"\+0x[0-9a-f]+/0x[0-9a-f]+"), "+OFF"),
          (re.compile(r"\.(c|h|S):\d+"), r".\1:N"),
          (re.compile(r"\b\d+\.\d+\.\d+\S*"), "RELEASE")]


def splat_key(s: dict) -> tuple[str, str]:
    """A splat's identity across kernels: its kind and title without CPU, PID, code
    offsets, line numbers and releases (they move between builds)."""
    title = s.get("title") or ""
    for pat, rep in _NOISE:
        title = pat.sub(rep, title)
    return (s.get("kind") or "", title)


def compare(base: Record, patched: Record, profiles: list[str] | None = None,
            base_name: str = "base", patched_name: str = "patched") -> Comparison:
    with_kernel = pairing(base, patched)

    def index(rec: Record) -> dict[tuple, Verdict]:
        return {_key(v, with_kernel): v for v in rec.verdicts
                if v.kernel and (not profiles or v.profile in profiles)}
    b, p = index(base), index(patched)
    rows = []
    for key in sorted(set(b) | set(p), key=lambda k: (k[1], k[0], k[2])):
        vb, vp = b.get(key), p.get(key)
        where = key[1] + (f" {key[0]}" if key[0] else "")
        if vb is None or vp is None:
            rows.append(Row(ONE_SIDE, key[2], where, vb, vp))
            continue
        group = classify(vb.outcome, vp.outcome)
        if group:
            rows.append(Row(group, key[2], where, vb, vp))
        old = {splat_key(s) for s in vb.splats}
        new = [s for s in vp.splats if splat_key(s) not in old]
        if new:
            rows.append(Row(SPLATS, key[2], where, vb, vp, splats=new))
    return Comparison(base, patched, rows, base_name, patched_name)


# ------------------------------------------------------------------ flake or change

Runner = Callable[[list[Row], int], tuple[list[Verdict], list[Verdict]]]


def confirm(cmp: Comparison, runner: Runner, n: int) -> None:
    """Re-run every change `n` times; `runner(rows, i)` runs the rows' tests on both
    kernels (in one run, so that both share the machine's noise) and returns (base
    verdicts, patched verdicts).  A change is confirmed when every re-run gives both of
    its outcomes again; else flaky, with the counts."""
    rows = [r for r in cmp.rows if r.group in CHANGES]
    if not rows or n <= 0:
        return
    with_kernel = pairing(cmp.base, cmp.patched)
    seen: dict[int, tuple[Counter, Counter, int]] = {id(r): (Counter(), Counter(), 0)
                                                     for r in rows}
    for i in range(n):
        vb, vp = runner(rows, i)
        b = {_key(v, with_kernel): v.outcome for v in vb}
        p = {_key(v, with_kernel): v.outcome for v in vp}
        for r in rows:
            was_b, was_p = r.sides()
            key = _key(was_b, with_kernel)
            ob, op = b.get(key, "missing"), p.get(key, "missing")
            cb, cp, held = seen[id(r)]
            cb[ob] += 1
            cp[op] += 1
            seen[id(r)] = (cb, cp, held + (ob == was_b.outcome and op == was_p.outcome))
    for r in rows:
        cb, cp, held = seen[id(r)]
        r.status = "confirmed" if held == n else "flaky"
        r.counts = (f"held {held}/{n}; base " + ", ".join(f"{o} {c}" for o, c in cb.most_common())
                    + "; patched " + ", ".join(f"{o} {c}" for o, c in cp.most_common()))


# ------------------------------------------------------------------ the table

def _cell(text: str, width: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def _side(v: Verdict | None, rec: Record, out_dir: Path | None) -> tuple[str, str]:
    """(outcome and reason, artifacts link) of one side of a row."""
    if v is None:
        return "-", ""
    why = headline(v)
    text = f"**{v.outcome}**" + (f" {_cell(why)}" if why and v.outcome != "PASS" else "")
    link = ""
    if v.artifacts and rec.path is not None:
        full = rec.path / v.artifacts
        target = os.path.relpath(full, out_dir) if out_dir else str(full)
        link = f"[{Path(v.artifacts).name[:40]}]({target})"
    return text, link


def markdown(cmp: Comparison, out_dir: Path | None = None, seconds: float | None = None) -> str:
    """The table of `cmp`, grouped; links relative to `out_dir` (where the file goes)."""
    def head(rec: Record, name: str) -> str:
        h = rec.header
        qemu = "; ".join(sorted(set(h.qemu.values()))) or "?"
        where = os.path.relpath(rec.path, out_dir) if rec.path and out_dir else rec.path
        return (f"- {name}: `{', '.join(rec.kernels())}` ({where or '?'}; guestpm "
                f"{h.guestpm}, {qemu}, {h.accel}, {h.host})")

    regs = cmp.regressions()
    verdict = f"**{len(regs)} regression{'s' if len(regs) != 1 else ''}**" if regs else \
        "**no regression**"
    out = [f"# guestpm compare: {cmp.base_name} -> {cmp.patched_name}", "",
           head(cmp.base, cmp.base_name), head(cmp.patched, cmp.patched_name), "",
           verdict + (f" ({len(cmp.flaky())} flaky change(s) listed apart)" if cmp.flaky()
                      else "") + (f"; {seconds:.0f} s" if seconds is not None else "")]
    out.append("")
    sections = [(g, cmp.group(g)) for g in GROUPS] + [("flaky (not in the exit status)",
                                                      cmp.flaky())]
    for title, rows in sections:
        if not rows:
            continue
        out += [f"## {title} ({len(rows)})", ""]
        if title == SPLATS:
            out += ["| test | where | splat (patched) | artifacts |", "|---|---|---|---|"]
            for r in rows:
                _, link = _side(r.patched, cmp.patched, out_dir)
                for s in r.splats:
                    out.append(f"| `{r.test}` | {r.where} | ({s.get('kind')}) "
                               f"{_cell(s.get('title') or '')} | {link} |")
            out.append("")
            continue
        confirmed = any(r.status for r in rows)
        out += ["| test | where | base | patched | artifacts (base / patched) |"
                + (" re-runs |" if confirmed else ""),
                "|---|---|---|---|---|" + ("---|" if confirmed else "")]
        for r in rows:
            tb, lb = _side(r.base, cmp.base, out_dir)
            tp, lp = _side(r.patched, cmp.patched, out_dir)
            line = f"| `{r.test}` | {r.where} | {tb} | {tp} | {lb or '-'} / {lp or '-'} |"
            if confirmed:
                line += f" {r.status}: {r.counts} |" if r.status else " |"
            out.append(line)
        out.append("")
    if not cmp.rows:
        out += ["Nothing changed.", ""]
    return "\n".join(out).rstrip() + "\n"
