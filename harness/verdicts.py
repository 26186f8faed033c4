"""Host-side verdicts for in-guest kselftest-style cases (harness.guest.ktest results).

The guest gathers evidence and records checks; here each check is asserted again,
so a FAIL in pytest shows the check, expected and actual, and the case's account."""

from __future__ import annotations

import json

import pytest


def _show(v) -> str:
    return json.dumps(v, sort_keys=True)


def assert_case(result: dict) -> None:
    """FAIL on the first differing check (expected vs actual), even in a case that
    then skipped; SKIP with the guest's reason; FAIL on an error or a hang (with the
    vCPU state) and on a case that checked nothing; otherwise PASS on evidence."""
    name = result["name"]
    checks = result.get("checks", [])
    # a check recorded before the case skipped is evidence too: a mismatch FAILs even
    # when the case then said the feature is absent
    for c in checks:
        assert c["actual"] == c["expected"], (
            f"{name}: {c['what']}\n  expected {_show(c['expected'])}\n"
            f"  actual   {_show(c['actual'])}\n  ({result.get('doc', '')})")
    if result["status"] == "skip":
        pytest.skip(result["reason"])
    if result["status"] != "pass":
        detail = [f"{name}: {result.get('reason', result['status'])}"]
        if "vcpu_state" in result:
            detail.append(f"vCPU state: {_show(result['vcpu_state'])}")
        if "traceback" in result:
            detail.append(result["traceback"])
        pytest.fail("\n".join(detail), pytrace=False)
    assert checks, f"{name}: the case recorded no check"
