"""Kconfig fragments: which ones a build asks for, and which of their options survived.

The merge itself is the kernel's scripts/kconfig/merge_config.sh (harness.kernel.build
runs it); this module knows what was *requested* (the fragments, later ones overriding
earlier ones, as merge_config.sh does) and checks the final .config against it.  An
option that did not survive is explained from the tree's own Kconfig files (read by
kconfig_db): unknown symbol, unmet `depends on` (naming the dependencies that are
off), no prompt (only `select` can set it), or forced on by a `select`.

Fragments live in kernel-configs/: common/ROLE.config for every architecture plus
ARCH/ROLE.config for one; a role is one of ROLES, or a path to your own fragment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestpmError
from harness.kernel.kconfig_db import (
    Definition,
    KconfigDb,
    evaluate,
    symbols_in,
    tristate,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "kernel-configs"
ROLES = ("base", "kvm-host", "guest-pm", "acpi", "vfio", "debug", "kasan")
DEFAULT_ROLES = ("base", "kvm-host", "guest-pm", "acpi", "vfio")

_SET = re.compile(r"^CONFIG_(\w+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_(\w+) is not set$")


class FragmentError(GuestpmError):
    pass


def parse_config(text: str, origin: str = "<config>", strict: bool = True) -> dict[str, str]:
    """SYMBOL -> value ('y', 'm', 'n' for "is not set", or the literal) in file order.
    Strict (a fragment): any other line than a comment is a FragmentError; not strict (a
    kernel's .config or /proc/config.gz as a tool printed it): other lines are skipped."""
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _SET.match(line):
            values[m[1]] = m[2]
        elif m := _UNSET.match(line):
            values[m[1]] = "n"
        elif strict and line and not line.startswith("#"):
            raise FragmentError(f"{origin}:{n}: not a Kconfig line: {raw!r} "
                                "(expected CONFIG_FOO=value or '# CONFIG_FOO is not set')")
    return values


def roles(extra: list[str], defaults: bool = True) -> list[str]:
    """The roles a build merges: the defaults (unless turned off), then EXTRA in order."""
    return (list(DEFAULT_ROLES) if defaults else []) + list(extra)


def fragment_paths(arch: str, roles: list[str] | tuple[str, ...]) -> list[Path]:
    """Files for these roles (names or paths), in merge order."""
    out: list[Path] = []
    for role in roles:
        if role in ROLES:
            found = [p for p in (CONFIG_DIR / "common" / f"{role}.config",
                                 CONFIG_DIR / arch / f"{role}.config") if p.is_file()]
            if not found:
                raise FragmentError(f"role {role!r} has no fragment for {arch} in {CONFIG_DIR}")
            out += found
        else:
            p = Path(role).expanduser()
            if not p.is_file():
                raise FragmentError(f"fragment {role!r}: not a role ({', '.join(ROLES)}) "
                                    "and no such file")
            out.append(p.resolve())
    return out


@dataclass
class Requested:
    values: dict[str, str]                       # SYMBOL -> final requested value
    origin: dict[str, str]                       # SYMBOL -> fragment that set it last
    overridden: list[str] = field(default_factory=list)   # human notes, as merge_config warns


def requested(paths: list[Path]) -> Requested:
    """Merge fragments the way merge_config.sh does: a later value replaces an earlier one."""
    r = Requested({}, {})
    for p in paths:
        for sym, val in parse_config(p.read_text(), str(p)).items():
            if sym in r.values and r.values[sym] != val:
                r.overridden.append(f"CONFIG_{sym}: {r.values[sym]} "
                                    f"({fragment_name(r.origin[sym])}) -> {val} "
                                    f"({fragment_name(str(p))})")
            r.values[sym] = val
            r.origin[sym] = str(p)
    return r


def fragment_name(path: str) -> str:
    """A fragment's path as the user names it: relative to configs/ when it is ours."""
    try:
        return str(Path(path).relative_to(CONFIG_DIR))
    except ValueError:
        return path


# ---------------------------------------------------------------- survival check

@dataclass(frozen=True)
class Lost:
    symbol: str
    requested: str
    actual: str
    reason: str
    fragment: str

    def __str__(self) -> str:
        return (f"CONFIG_{self.symbol}={self.requested} (from {fragment_name(self.fragment)}) "
                f"is {'not set' if self.actual == 'n' else self.actual}: {self.reason}")


def same_value(req: str, act: str) -> bool:
    """Whether a requested value holds in a .config (n is also an absent symbol)."""
    return req == act or (req == "n" and act in ("n", ""))


def check(req: Requested, final: dict[str, str], db: KconfigDb, arch: str) -> list[Lost]:
    """Requested options whose value is not in the final .config, each with a reason."""
    lost = []
    for sym, want in req.values.items():
        got = final.get(sym, "n")
        if same_value(want, got):
            continue
        lost.append(Lost(sym, want, got, explain(sym, want, got, final, db, arch),
                         req.origin[sym]))
    return lost


def _deps_text(d: Definition, final: dict[str, str], need: int) -> str:
    unmet = [e for e in d.depends if evaluate(e, final) < need]
    syms = []
    for e in unmet:
        for s in symbols_in(e):
            v = final.get(s, "n")
            if f"{s}={v}" not in syms:
                syms.append(f"{s}={v}")
    return f"unmet dependency ({d.where}: depends on {' && '.join(unmet)}; here " \
           f"{', '.join(syms) or 'the expression is false'})"


def explain(sym: str, want: str, got: str, final: dict[str, str], db: KconfigDb,
            arch: str) -> str:
    defs = db.defs.get(sym)
    if not defs:
        return (f"unknown option: no `config {sym}` in this tree's Kconfig for ARCH={arch} "
                "(a typo, another architecture's option, or renamed/removed upstream)")
    on_selectors = [by for by, cond in db.selects.get(sym, [])
                    if tristate(final.get(by, "n")) and (not cond or evaluate(cond, final))]
    if want == "n":
        if on_selectors:
            return f"forced on: selected by {', '.join(on_selectors)}"
        return f"forced to {got} by Kconfig (a default without a prompt, or a choice)"
    need = tristate(want) or 2
    for d in defs:
        if evaluate(" && ".join(f"({e})" for e in d.depends) or "y", final) < need:
            continue
        if not d.prompt:
            by = [b for b, _ in db.selects.get(sym, [])]
            return (f"has no prompt ({d.where}): only `select` sets it"
                    + (f", from {', '.join(sorted(set(by))[:6])}" if by else ", and nothing does"))
        if want == "m" and got == "y" and on_selectors:
            return f"built in: selected =y by {', '.join(on_selectors)}"
        if want not in ("y", "m"):
            return f"value {got!r} after olddefconfig (out of range, or a different type)"
        if want == "m" and final.get("MODULES", "n") != "y":
            return "modules are disabled: CONFIG_MODULES is not set"
        return f"set to {got} by Kconfig ({d.where})"
    return _deps_text(defs[0], final, need) if len(defs) == 1 else \
        "; ".join(_deps_text(d, final, need) for d in defs)
