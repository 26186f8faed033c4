"""Verdict diff: junit id -> outcome, between two runs.

The yardstick for a change that must keep (or explain) every verdict: two junit.xml files
(a run directory, or its junit.xml) are read into {id: outcome}, and every id whose outcome
differs, or that only one side has, is printed, one per line, then a count.

    .venv/bin/python benchmarks/vdiff.py BEFORE AFTER [--ignore REGEX]

The id is pytest's node id as junit spells it (classname + name); the outcome is PASS, FAIL,
ERROR, SKIP or XFAIL (pytest writes an xfail as a skip of type pytest.xfail).  Exit status:
0 when no id differs, 1 otherwise, 2 for unreadable input.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def junit_path(arg: str) -> Path:
    p = Path(arg)
    if p.is_dir():
        for cand in (p / "junit.xml", p / "latest" / "junit.xml"):
            if cand.is_file():
                return cand
    return p


def outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag == "failure":
            return "FAIL"
        if child.tag == "error":
            return "ERROR"
        if child.tag == "skipped":
            return "XFAIL" if child.get("type") == "pytest.xfail" else "SKIP"
    return "PASS"


def verdicts(path: Path) -> dict[str, str]:
    """{id: outcome}.  A test that both failed and errored (an error in its teardown)
    appears twice in junit: the worse outcome wins."""
    worse = {"ERROR": 4, "FAIL": 3, "XFAIL": 2, "SKIP": 1, "PASS": 0}
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        o = outcome(case)
        if tid not in out or worse[o] > worse[out[tid]]:
            out[tid] = o
    return out


def diff(before: dict[str, str], after: dict[str, str],
         ignore: re.Pattern | None = None) -> list[tuple[str, str, str]]:
    """(id, before, after) for every id whose outcome differs; '-' for a missing side."""
    rows = []
    for tid in sorted(set(before) | set(after)):
        if ignore and ignore.search(tid):
            continue
        b, a = before.get(tid, "-"), after.get(tid, "-")
        if a != b:
            rows.append((tid, b, a))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--ignore", help="skip ids matching this regular expression")
    args = ap.parse_args(argv)
    try:
        before = verdicts(junit_path(args.before))
        after = verdicts(junit_path(args.after))
    except (OSError, ET.ParseError) as e:
        print(f"vdiff: {e}", file=sys.stderr)
        return 2
    rows = diff(before, after, re.compile(args.ignore) if args.ignore else None)
    for tid, b, a in rows:
        print(f"{b:6} -> {a:6} {tid}")
    common = len(set(before) & set(after))
    print(f"{common} common ids, {len(rows)} differ "
          f"({len(before)} before, {len(after)} after)")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
