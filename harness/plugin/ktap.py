"""KTAP (kselftest format) output: one subtest level per kernel x arch target."""

from __future__ import annotations

from dataclasses import dataclass

# pytest outcome -> (KTAP result, directive)
_MAP = {"passed": ("ok", ""), "failed": ("not ok", ""), "error": ("not ok", ""),
        "skipped": ("ok", "SKIP"), "xfailed": ("ok", "XFAIL"), "xpassed": ("not ok", "")}


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str          # passed / failed / error / skipped / xfailed / xpassed
    reason: str = ""


def _clean(text: str, name: bool = False) -> str:
    """One line; '#' only matters in names (it would start a directive)."""
    text = " ".join(text.split())
    return text.replace("#", "%23") if name else text


def _line(indent: str, n: int, r: Result) -> str:
    status, directive = _MAP[r.outcome]
    line = f"{indent}{status} {n} {_clean(r.name, name=True)}"
    if directive:
        line += f" # {directive}" + (f" {_clean(r.reason)}" if r.reason else "")
    return line


def group_outcome(results: list[Result]) -> str:
    if any(_MAP[r.outcome][0] == "not ok" for r in results):
        return "failed"
    if results and all(r.outcome == "skipped" for r in results):
        return "skipped"
    return "passed"


def render(groups: dict[str, list[Result]]) -> str:
    out = ["KTAP version 1", f"1..{len(groups)}"]
    for i, (name, results) in enumerate(groups.items(), 1):
        out += ["  KTAP version 1", f"  # Subtest: {_clean(name, name=True)}", f"  1..{len(results)}"]
        for j, r in enumerate(results, 1):
            if _MAP[r.outcome][0] == "not ok" and r.reason:
                out += [f"  # {_clean(line)}" for line in r.reason.splitlines()[:5]]
            out.append(_line("  ", j, r))
        out.append(_line("", i, Result(name, group_outcome(results))))
    return "\n".join(out) + "\n"
