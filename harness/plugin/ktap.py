"""KTAP (kselftest format) output of a run's verdict record: one subtest level per
kernel x arch target."""

from __future__ import annotations

from harness.results.verdicts import Verdict

# the record's outcome -> (KTAP result, directive)
_MAP = {"PASS": ("ok", ""), "FAIL": ("not ok", ""), "ERROR": ("not ok", ""),
        "SKIP": ("ok", "SKIP"), "XFAIL": ("ok", "XFAIL"), "XPASS": ("not ok", "")}


def _clean(text: str, name: bool = False) -> str:
    """One line; '#' only matters in names (it would start a directive)."""
    text = " ".join(text.split())
    return text.replace("#", "%23") if name else text


def _line(indent: str, n: int, name: str, outcome: str, reason: str = "") -> str:
    status, directive = _MAP[outcome]
    line = f"{indent}{status} {n} {_clean(name, name=True)}"
    if directive:
        line += f" # {directive}" + (f" {_clean(reason)}" if reason else "")
    return line


def group_outcome(results: list[Verdict]) -> str:
    if any(_MAP[r.outcome][0] == "not ok" for r in results):
        return "FAIL"
    if results and all(r.outcome == "SKIP" for r in results):
        return "SKIP"
    return "PASS"


def render(groups: dict[str, list[Verdict]]) -> str:
    """`groups`: row -> its verdicts (verdicts.by_row)."""
    out = ["KTAP version 1", f"1..{len(groups)}"]
    for i, (name, results) in enumerate(groups.items(), 1):
        out += ["  KTAP version 1", f"  # Subtest: {_clean(name, name=True)}", f"  1..{len(results)}"]
        for j, r in enumerate(results, 1):
            if _MAP[r.outcome][0] == "not ok" and r.reason:
                out += [f"  # {_clean(line)}" for line in r.reason.splitlines()[:5]]
            out.append(_line("  ", j, r.test, r.outcome, r.reason))
        out.append(_line("", i, name, group_outcome(results)))
    return "\n".join(out) + "\n"
