"""kselftest-style cases for code that runs inside the kernel under test (stdlib only).

A case gathers evidence and records checks (what, expected, actual). The same
results are printed as KTAP by `python3 -m harness.guest.<module>` on a bare-metal
host, and travel as JSON to the host-side pytest tests, which assert each check
again so pytest shows expected vs actual.

Verdicts: skip when a precondition names what the kernel lacks; fail when any
check differs or the case recorded no check at all; error when it raised."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Skip(Exception):
    """The kernel under test lacks what the case is about: the message names it."""


class Stop(Exception):
    """A required check failed; later steps would only report consequences."""


@dataclass
class Case:
    name: str
    family: str
    fn: Callable[[T], None]
    doc: str
    requires: tuple[Callable[[Any], str | None], ...] = ()


class Registry:
    """The cases of one suite in definition order, registered by its `case` decorator
    (`requires`: precondition probes, each None or the reason to SKIP)."""

    def __init__(self, requires: tuple = ()):
        self.cases: list[Case] = []
        self.requires = tuple(requires)

    def case(self, family: str, requires: tuple | None = None):
        def wrap(fn):
            self.cases.append(Case(fn.__name__, family, fn, (fn.__doc__ or "").strip(),
                                   tuple(self.requires if requires is None else requires)))
            return fn
        return wrap


@dataclass
class T:
    """Per-case context handed to the case function."""
    env: Any
    checks: list[dict] = field(default_factory=list)
    observed: dict = field(default_factory=dict)

    def expect(self, what: str, actual: Any, expected: Any) -> bool:
        ok = actual == expected
        self.checks.append({"what": what, "expected": expected, "actual": actual, "ok": ok})
        return ok

    def require(self, what: str, actual: Any, expected: Any) -> None:
        if not self.expect(what, actual, expected):
            raise Stop(what)


def run_case(case: Case, env: Any) -> dict:
    t = T(env)
    res: dict = {"name": case.name, "family": case.family, "doc": case.doc}
    t0 = time.monotonic()
    try:
        for req in case.requires:
            reason = req(env)
            if reason:
                raise Skip(reason)
        case.fn(t)
    except Skip as e:
        bad = [c["what"] for c in t.checks if not c["ok"]]
        if bad:     # what was seen before the skip is evidence: a mismatch is a FAIL
            res.update(status="fail", reason=f"{'; '.join(bad)} (then skipped: {e})")
        else:
            res.update(status="skip", reason=str(e))
    except Stop as e:
        res.update(status="fail", reason=f"required check failed: {e}")
    except Exception as e:  # reported with its traceback
        state = getattr(e, "state", None)
        res.update(status="fail", reason=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc())
        if state is not None:
            res["vcpu_state"] = state
    else:
        if not t.checks:
            res.update(status="fail", reason="the case recorded no check")
        elif all(c["ok"] for c in t.checks):
            res.update(status="pass")
        else:
            bad = [c["what"] for c in t.checks if not c["ok"]]
            res.update(status="fail", reason="; ".join(bad))
    res.update(checks=t.checks, observed=t.observed,
               duration_s=round(time.monotonic() - t0, 4))
    return res


def ktap(results: list[dict], title: str) -> str:
    """KTAP v1: one test per case, its checks as diagnostic lines."""
    out = ["KTAP version 1", f"# {title}", f"1..{len(results)}"]
    for i, r in enumerate(results, 1):
        for c in r.get("checks", []):
            mark = "ok" if c["ok"] else "MISMATCH"
            line = f"# {r['name']}: {mark}: {c['what']}"
            if not c["ok"]:
                line += f": expected {json.dumps(c['expected'])}, actual {json.dumps(c['actual'])}"
            out.append(line)
        if r["status"] == "skip":
            out.append(f"ok {i} {r['name']} # SKIP {r['reason']}")
        elif r["status"] == "pass":
            out.append(f"ok {i} {r['name']}")
        else:
            out.append(f"# {r['name']}: {r.get('reason', '')}")
            if "vcpu_state" in r:
                out.append(f"# {r['name']}: vCPU state {json.dumps(r['vcpu_state'])}")
            out.append(f"not ok {i} {r['name']}")
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "skip")}
    out.append(f"# Totals: pass:{counts['pass']} fail:{counts['fail']} xfail:0 "
               f"xpass:0 skip:{counts['skip']} error:0")
    return "\n".join(out) + "\n"


def parse_ktap(text: str) -> dict[str, str]:
    """name -> pass|fail|skip from KTAP result lines (the host checks the bare entry)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("ok ", "not ok ")):
            head, _, directive = line.partition(" # ")
            name = head.split(" ", 3)[-1] if head.startswith("not ok") else head.split(" ", 2)[-1]
            if head.startswith("not ok"):
                out[name] = "fail"
            else:
                out[name] = "skip" if directive.upper().startswith("SKIP") else "pass"
    return out


def exit_status(results: list[dict]) -> int:
    """kselftest's convention: 1 when a case failed, 4 (KSFT_SKIP) when all skipped."""
    statuses = [r["status"] for r in results]
    if "fail" in statuses:
        return 1
    return 4 if statuses and all(s == "skip" for s in statuses) else 0


def main(argv: list[str], prog: str, cases: list[Case], run: Callable[[Any], dict],
         title: Callable[[dict, Any], str], arguments: Callable[[Any], None] = lambda ap: None
         ) -> int:
    """The command line of every in-guest suite (`python3 -m harness.guest.<suite>`):
    its own `arguments`, then --json (the agent's form), -k SUBSTRING and --list; KTAP
    on stdout and kselftest's exit status."""
    ap = argparse.ArgumentParser(prog=prog)
    arguments(ap)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("-k", dest="select", default="", help="only cases whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args(argv)
    if a.list:
        for c in cases:
            print(f"{c.family:15} {c.name}")
        return 0
    out = run(a)
    if a.json:
        print(json.dumps(out))
    else:
        sys.stdout.write(ktap(out["results"], title(out, a)))
    return exit_status(out["results"])
