"""Upstream history of a feature family against what a kernel's cases did.

A family merged upstream in release X must run (no case SKIPs) on every stock kernel
from X on and SKIP on every older one; an unmerged family (None) SKIPs on every stock
kernel.  That is asserted for stock Debian kernels only: on a developer's own kernel
(path:, build:) a difference is information ("SYSTEM_OFF2 ran on 6.12 (merged in
6.13): backported?"), never a FAIL: a backport is exactly what such a user tests.
"""

from __future__ import annotations


def family_outcomes(results: list[dict]) -> dict[str, str]:
    """family -> "ran" | "skipped" | "partly skipped: [...]" from in-guest case results."""
    out: dict[str, list[str]] = {}
    for r in results:
        out.setdefault(r["family"], []).append(r["status"])
    return {fam: "skipped" if set(st) == {"skip"} else
            "ran" if "skip" not in st else f"partly skipped: {st}"
            for fam, st in out.items()}


def expected(merged: dict[str, tuple[int, int] | None],
             version: tuple[int, int]) -> dict[str, str]:
    return {fam: "ran" if m is not None and version >= m else "skipped"
            for fam, m in merged.items()}


def differences(merged: dict[str, tuple[int, int] | None], version: tuple[int, int],
                results: list[dict]) -> list[str]:
    """One sentence per family whose outcome differs from its upstream history."""
    got, want = family_outcomes(results), expected(merged, version)
    out = []
    for fam, w in want.items():
        g = got.get(fam, "absent")
        if g == w:
            continue
        when = f"merged in {'.'.join(map(str, merged[fam]))}" if merged[fam] else "unmerged"
        guess = "" if g != "ran" else " backported?" if merged[fam] else " the series applied?"
        out.append(f"{fam} {g} on {'.'.join(map(str, version))} ({when}), expected "
                   f"{w}:{guess}".rstrip(":"))
    return out


def information(kernel, merged: dict[str, tuple[int, int] | None],
                results: list[dict]) -> list[str]:
    """The differences worth telling a developer about their own kernel (path:, build:);
    none for a stock Debian kernel, where the history is asserted instead."""
    from harness.kernel.kernels import release_version
    version = release_version(kernel.release)
    if kernel.debian is not None or version is None:
        return []
    return differences(merged, version, results)
