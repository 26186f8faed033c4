"""Collection: the parametrization of the tests over the run's targets and L2 guest
kernels, and the rules that decide whether a collected test applies to this run (one
small function per marker or option), with the lines the summary shows about those that
do not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from harness import profiles
from harness.errors import GuestpmError
from harness.plan.targets import Target
from harness.plugin import summary
from harness.plugin.targets import NOTES, target_of, targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        ts = targets(metafunc.config)
        if metafunc.definition.get_closest_marker("harness_selftest"):
            # the first target the test can run on (an arch-specific self-test must
            # not land on a target of another arch and skip everywhere)
            arch = metafunc.definition.get_closest_marker("arch")
            ts = [t for t in ts if not arch or t.arch in arch.args][:1] or ts[:1]
        metafunc.parametrize("target", ts, ids=[t.id for t in ts], scope="session")
    if "guest_spec" in metafunc.fixturenames:
        # host x guest cells of the L2 tests: every --guest-kernel; without the option,
        # the kernel under test as its own guest plus the cells a test's cross_guest mark
        # names (collected only on their host kernel)
        specs: list[str | None] = list(metafunc.config.getoption("guest_kernel"))
        if not specs:
            m = metafunc.definition.get_closest_marker("cross_guest")
            specs = [None] + [guest for _, guest in m.args] if m else []
        if specs:
            metafunc.parametrize("guest_spec", specs,
                                 ids=[f"guest={s}" if s else "guest=same" for s in specs])


# ------------------------------------------------------------------ the rules

@dataclass
class Candidate:
    """A collected test as the rules see it."""
    config: pytest.Config
    item: pytest.Item
    target: Target | None
    tools: dict = field(default_factory=dict)    # arch -> why guestpm build cannot (None: can)

    def mark(self, name: str):
        return self.item.get_closest_marker(name)

    @property
    def params(self) -> dict:
        return getattr(getattr(self.item, "callspec", None), "params", {})


Rule = Callable[[Candidate], "str | None"]


def opt_in_slow(c: Candidate) -> str | None:
    if c.mark("slow") and not c.config.getoption("slow"):
        return "opt-in with --slow"
    return None


def self_tests_asked(c: Candidate) -> str | None:
    if c.mark("harness_selftest") and not c.config.getoption("self_test"):
        return "guestpm self-tests: run with --self-test (./guestpm.sh test does)"
    return None


def build_tools_present(c: Candidate) -> str | None:
    m = c.mark("needs_build_tools")
    if not m:
        return None
    for arch in m.args:
        if arch not in c.tools:
            from harness.kernel import build
            try:
                build.toolchain(arch)
                c.tools[arch] = None
            except GuestpmError as e:
                c.tools[arch] = str(e)
        if c.tools[arch]:
            return f"self-tests that build kernels: {c.tools[arch]}"
    chosen = c.config.getoption("arch")
    if chosen and not set(m.args) & set(chosen):
        return f"self-tests that build and boot {'/'.join(m.args)}, not selected by --arch"
    return None


def arch_marked(c: Candidate) -> str | None:
    m = c.mark("arch")
    if m and c.target.arch not in m.args:
        return f"tests do not apply to {c.target.arch}"
    return None


def stock_kernel(c: Candidate) -> str | None:
    if c.mark("stock_kernel_only") and not c.target.kernel.startswith("debian:"):
        return f"tests do not apply to {summary.short_spec(c.target.kernel)} (upstream " \
               "history is asserted on stock Debian kernels; on others it is reported as " \
               "information)"
    return None


def cross_guest_cell(c: Candidate) -> str | None:
    m, guest = c.mark("cross_guest"), c.params.get("guest_spec")
    if not (m and guest and not c.config.getoption("guest_kernel")):
        return None
    if (c.target.kernel, guest) not in [tuple(a) for a in m.args]:
        return "cross cells (host x guest kernel) of other host kernels"
    if c.params.get("l2_mode", "vhe") != "vhe":
        return "cross cells in nVHE (the guest's side does not depend on the host's mode)"
    return None


def l2_mode_host(c: Candidate) -> str | None:
    """A mode's L2 cells on the stock hosts the mark names (CI time); a kernel of your
    own (path:, build:) is judged in every mode, as with --all-l2-modes."""
    m = c.mark("l2_mode_hosts")
    if m and c.params.get("l2_mode") == m.args[0] and c.target.kernel not in m.args[1:] \
            and c.target.kernel.startswith("debian:") \
            and not c.config.getoption("all_l2_modes"):
        return f"L2 {m.args[0]} cells of stock hosts other than {', '.join(m.args[1:])} " \
               "(opt-in: --all-l2-modes; your own kernel gets them)"
    return None


def profile_has(c: Candidate) -> str | None:
    m = c.mark("profile_has")
    if not m:
        return None
    p = profiles.get(c.target.arch)
    lacking = [f for f in m.args if not getattr(p, f)]
    if lacking:
        return f"tests do not apply to {c.target.arch} (its {p.machine} machine has no " \
               f"{', '.join(lacking)})"
    return None


# in this order: a test is counted under the first rule that drops it
RULES: tuple[Rule, ...] = (opt_in_slow, self_tests_asked, build_tools_present)
TARGET_RULES: tuple[Rule, ...] = (arch_marked, stock_kernel, cross_guest_cell, l2_mode_host,
                                  profile_has)


def why_not_collected(c: Candidate) -> str | None:
    """Why the test does not apply to this run (None: it does).  Such tests are
    deselected, never SKIPped: a SKIP line says the kernel under test lacks something."""
    rules = RULES + (TARGET_RULES if c.target is not None else ())
    return next((why for why in (rule(c) for rule in rules) if why), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, dropped, why, tools = [], [], {}, {}
    for item in items:
        c = Candidate(config, item, target_of(item), tools)
        reason = why_not_collected(c)
        if reason:
            dropped.append(item)
            why[reason] = why.get(reason, 0) + 1
            continue
        keep.append(item)
        label(c)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[NOTES] = [f"{n} {'test' if n == 1 else 'tests'} not collected: {r}"
                           if not r.startswith("tests do not apply") else
                           f"{n} {r if n > 1 else r.replace('tests do', 'test does')}"
                           for r, n in why.items()]


def label(c: Candidate) -> None:
    """The properties the report groups a collected test by: its family, L2 guest, kind
    and target."""
    item, t = c.item, c.target
    family = summary.family_of(item.nodeid.split("::")[0])
    guest = c.params.get("guest_spec")
    if guest:                       # a host x guest cell of the L2 families
        family += f" (guest {summary.short_spec(guest)})"
    item.user_properties.append(("family", family))
    if t is not None and "guest_spec" in c.params:
        item.user_properties.append(("guest", guest or t.kernel))   # L2: the guest kernel
    if c.mark("harness_selftest"):
        item.user_properties.append(("kind", "self-test"))
    elif c.mark("standin"):
        item.user_properties.append(("kind", "stand-in"))
    if t is None:
        return
    item.add_marker(pytest.mark.xdist_group(t.id))
    item.user_properties.append(("target", t.id))
