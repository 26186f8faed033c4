"""Upstream history of a feature family against what a kernel's cases did.

A family merged upstream in release X is promised by every kernel from X on, stock or
not: when it SKIPs there, the probe that said "absent" has found a regression, and the
verdict is a FAIL naming the release, the merge and that probe.  The one exception is
the kernel's own config turning the feature off (`CONFIG_KVM is not set`): then it
SKIPs naming the option.  With no config to read, what the kernel shows stands in for
it (a /dev/kvm that opens means KVM is built).

Whose release applies is the caller's to say, and part of each `Feature`: the L1
host's for what KVM offers (a cap, the PSCI version of a new VM), the L2 guest's for
what the guest kernel calls (SYSTEM_OFF2 from psci_sys_hibernate), the crashing
kernel's for a known defect (harness.plugin.known_defects).

The other direction is asserted on stock Debian kernels only: a family that ran on a
release older than its merge is information on a developer's own kernel (path:,
build:), "SYSTEM_OFF2 ran on 6.12 (merged in 6.13): backported?", since a backport is
exactly what such a user tests.  An unmerged family (None) SKIPs on every stock kernel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from harness.guest.psci import floor_of
from harness.kernel.kernels import release_version

Version = tuple[int, int]


@dataclass(frozen=True)
class Feature:
    """A family as upstream merged it.  `options`: the config options whose absence
    turns the feature off in the kernel whose release applies (`whose`)."""
    family: str
    merged: Version | None
    merge: str                      # the merge, as a reader finds it in the kernel's log
    options: tuple[str, ...] = ()
    whose: str = "the L1 host's"    # whose release the promise is read from


FEATURES: dict[str, Feature] = {f.family: f for f in (
    Feature("system_suspend", (5, 19),
            "\"KVM: arm64: Implement PSCI SYSTEM_SUSPEND\" with KVM_CAP_ARM_SYSTEM_SUSPEND "
            "(kvmarm, 5.19)", ("CONFIG_KVM",)),
    Feature("system_off2", (6, 13),
            "\"KVM: arm64: Add support for PSCI v1.3 SYSTEM_OFF2\" (kvmarm, 6.13): PSCI 1.3 "
            "the default version of a new VM", ("CONFIG_KVM",)),
    # the L2 guest's side of the same series: the guest kernel calls SYSTEM_OFF2 from
    # psci_sys_hibernate(), which only a kernel with hibernation has
    Feature("system_off2_call", (6, 13),
            "\"arm64: Use SYSTEM_OFF2 PSCI call to power off for hibernate\" (6.13)",
            ("CONFIG_HIBERNATION",), whose="the L2 guest's"),
    # the L2 guest's SYSTEM_SUSPEND: KVM exits to the VMM only with the cap (host's release)
    Feature("l2_suspend", (5, 19),
            "\"KVM: arm64: Implement PSCI SYSTEM_SUSPEND\" with KVM_CAP_ARM_SYSTEM_SUSPEND "
            "(kvmarm, 5.19)", ("CONFIG_KVM",)),
    Feature("low_power", (6, 1),
            "\"vfio: Add the device features for the low power entry and exit\" "
            "(vfio, 6.1)", ("CONFIG_VFIO_PCI",)),
    Feature("acpi_notify", None, "the vfio ACPI-notify series (unmerged)"),
)}


def merged_of(*families: str) -> dict[str, Version | None]:
    """family -> the release it was merged in (None: unmerged), for a suite's MERGED."""
    return {f: FEATURES[f].merged for f in families}


def dotted(v: Version) -> str:
    return ".".join(map(str, v))


def promised(family: str, version: Version | None) -> bool:
    """Whether a kernel of `version` must have `family` (an unknown release, or an
    unmerged family, promises nothing)."""
    merged = FEATURES[family].merged
    return version is not None and merged is not None and version >= merged


# ---------------------------------------------------------------- one SKIP

@dataclass(frozen=True)
class Verdict:
    status: str         # "skip" | "fail"
    message: str


def config_says(options: tuple[str, ...], config: Mapping[str, str] | None,
                shown: Mapping[str, bool] | None = None) -> tuple[str | None, str]:
    """(the option that turns the feature off, or None; how that is known).  `config`:
    the kernel's CONFIG_ options (None: no config to read); `shown`: option -> what the
    running kernel shows of it, for when there is no config."""
    for opt in options:
        if config is not None:
            if config.get(opt) not in ("y", "m"):
                return opt, f"{opt} is not set"
        elif shown is not None and shown.get(opt) is False:
            return opt, f"no config to read, and the kernel shows no {opt.removeprefix('CONFIG_')}"
    known = "config read" if config is not None else \
        "no config to read; the kernel shows " + \
        (", ".join(o.removeprefix("CONFIG_") for o in options if (shown or {}).get(o))
         or "nothing either way")
    return None, known


def judge_skip(feature: Feature | str, release: str | None, probe: str,
               config: Mapping[str, str] | None, shown: Mapping[str, bool] | None = None
               ) -> Verdict:
    """What a SKIP of `feature` on the kernel whose release is `release` really is.
    `probe`: the reason the probe gave for "absent".  A SKIP stands below the merge,
    for an unmerged family, for a release that cannot be read, and where the config
    turns the feature off (then it names the option); otherwise it is a FAIL."""
    f = FEATURES[feature] if isinstance(feature, str) else feature
    version = release_version(release)
    if f.merged is None or version is None or version < f.merged:
        return Verdict("skip", probe)
    off, how = config_says(f.options, config, shown)
    if off:
        return Verdict("skip", f"{how}: {probe}")
    return Verdict("fail", (
        f"{f.family} is promised by {f.whose} release {release}: merged in "
        f"{dotted(f.merged)}, {f.merge}; yet the probe said absent: {probe} "
        f"({how}: nothing turns it off)"))


def skip_or_fail(feature: Feature | str, release: str | None, probe: str,
                 config: Mapping[str, str] | None,
                 shown: Mapping[str, bool] | None = None) -> None:
    """Instead of pytest.skip(probe) in a test whose feature has a merge release: SKIP
    only where `judge_skip` lets it stand, else FAIL.  For the L2 tests: the VMM's exit
    4 ("KVM lacks what the policy asks") on a host >= 5.19 is a FAIL."""
    import pytest
    v = judge_skip(feature, release, probe, config, shown)
    if v.status == "skip":
        pytest.skip(v.message)
    pytest.fail(v.message, pytrace=False)


def judge_case(result: dict, merged: Mapping[str, Version | None], release: str | None,
               config: Callable[[], Mapping[str, str] | None],
               shown: Mapping[str, bool] | None = None) -> Verdict | None:
    """For an in-guest case that SKIPped: None when its family has no merge release in
    `merged` (nothing promised), else `judge_skip`'s verdict.  `config` is called only
    when a promise is at stake (reading it may cost a command in the guest)."""
    fam = result["family"]
    if result["status"] != "skip" or fam not in merged:
        return None
    f = FEATURES.get(fam) or Feature(fam, merged[fam], f"{fam} (merged in {merged[fam]})")
    version = release_version(release)
    if f.merged is None or version is None or version < f.merged:
        return Verdict("skip", result["reason"])
    return judge_skip(f, release, f"{result['name']}: {result['reason']}", config(), shown)


# ---------------------------------------------------------------- a whole family

def family_outcomes(results: list[dict]) -> dict[str, str]:
    """family -> "ran" | "skipped" | "partly skipped: [...]" from in-guest case results."""
    out: dict[str, list[str]] = {}
    for r in results:
        out.setdefault(r["family"], []).append(r["status"])
    return {fam: "skipped" if set(st) == {"skip"} else
            "ran" if "skip" not in st else f"partly skipped: {st}"
            for fam, st in out.items()}


def expected(merged: Mapping[str, Version | None], version: Version,
             turned_off: frozenset[str] = frozenset()) -> dict[str, str]:
    return {fam: "ran" if m is not None and version >= m and fam not in turned_off
            else "skipped" for fam, m in merged.items()}


def differences(merged: Mapping[str, Version | None], version: Version,
                results: list[dict], turned_off: frozenset[str] = frozenset()) -> list[str]:
    """One sentence per family whose outcome differs from its upstream history (a
    family in `turned_off` is expected to SKIP: the kernel's config turns it off)."""
    got, want = family_outcomes(results), expected(merged, version, turned_off)
    out = []
    for fam, w in want.items():
        g = got.get(fam, "absent")
        if g == w:
            continue
        at = merged[fam]
        when = f"merged in {dotted(at)}" if at else "unmerged"
        guess = "" if g != "ran" else " backported?" if merged[fam] else " the series applied?"
        out.append(f"{fam} {g} on {dotted(version)} ({when}), expected "
                   f"{w}:{guess}".rstrip(":"))
    return out


def regressions(merged: Mapping[str, Version | None], version: Version,
                results: list[dict], turned_off: frozenset[str] = frozenset()) -> list[str]:
    """The differences that FAIL on every kernel: a promised family that did not run."""
    want = expected(merged, version, turned_off)
    return [d for d in differences(merged, version, results, turned_off)
            if want[d.split(" ", 1)[0]] == "ran"]


def turned_off(merged: Mapping[str, Version | None], config: Mapping[str, str] | None,
               shown: Mapping[str, bool] | None = None) -> frozenset[str]:
    """The families of `merged` that the kernel's config (or what it shows) turns off."""
    return frozenset(fam for fam in merged if fam in FEATURES and
                     config_says(FEATURES[fam].options, config, shown)[0])


def information(kernel, merged: Mapping[str, Version | None],
                results: list[dict], release: str | None = None) -> list[str]:
    """The differences worth telling a developer about their own kernel (path:, build:)
    that are not FAILs: a family that ran before its merge.  None for a stock Debian
    kernel, where the history is asserted instead."""
    version = release_version(release or kernel.release)
    if kernel.debian is not None or version is None:
        return []
    want = expected(merged, version)
    return [d for d in differences(merged, version, results)
            if want[d.split(" ", 1)[0]] == "skipped"]


# ---------------------------------------------------------------- the reference VMM

def vmm_refusal_broken(why: str, host_release: str | None) -> str | None:
    """Why the VMM's "the host KVM lacks it" (exit 4) is a FAIL, not a SKIP: the host
    kernel's release promises the capability or the PSCI version it refused (pure)."""
    version = release_version(host_release)
    if "KVM_CAP_ARM_SYSTEM_SUSPEND absent" in why and \
            promised("l2_suspend", version):
        at = FEATURES["l2_suspend"].merged
        assert at is not None, "promised() holds only for a merged feature"
        return f"host {host_release} is >= {dotted(at)}" \
               f", where KVM_CAP_ARM_SYSTEM_SUSPEND was merged, but KVM_CHECK_EXTENSION " \
               f"said absent (the reference VMM: {why})"
    m = re.search(r"refuses PSCI version (\d+)\.(\d+)", why)
    if m and version is not None:
        asked, floor = (int(m[1]), int(m[2])), floor_of(version)
        if asked <= floor:
            return f"host {host_release} promises PSCI {dotted(floor)} to a new " \
                   f"VM, but KVM refused {dotted(asked)} (the reference VMM: {why})"
    return None
