"""Kconfig fragments: which ones a build asks for, and which of their options survived.

The merge itself is the kernel's scripts/kconfig/merge_config.sh (harness.kernel.build runs
it); this module knows what was *requested* (the fragments, later ones overriding
earlier ones, as merge_config.sh does) and checks the final .config against it.  An
option that did not survive is explained from the tree's own Kconfig files: unknown
symbol, unmet `depends on` (naming the dependencies that are off), no prompt (only
`select` can set it), or forced on by a `select`.

Fragments live in kernel-configs/: common/ROLE.config for every architecture plus
ARCH/ROLE.config for one; a role is one of ROLES, or a path to your own fragment.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestpmError

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
                r.overridden.append(f"CONFIG_{sym}: {r.values[sym]} ({fragment_name(r.origin[sym])}) "
                                    f"-> {val} ({fragment_name(str(p))})")
            r.values[sym] = val
            r.origin[sym] = str(p)
    return r


def fragment_name(path: str) -> str:
    """A fragment's path as the user names it: relative to configs/ when it is ours."""
    try:
        return str(Path(path).relative_to(CONFIG_DIR))
    except ValueError:
        return path


# ---------------------------------------------------------------- Kconfig database

@dataclass
class Definition:
    where: str                  # file:line
    type: str                   # bool, tristate, int, hex, string or '' (unknown)
    prompt: bool
    depends: list[str]          # expressions, all must hold (if/menu/depends on)


@dataclass
class KconfigDb:
    defs: dict[str, list[Definition]] = field(default_factory=dict)
    selects: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # sym -> (by, if)


_ENTRY = re.compile(r"^(config|menuconfig)\s+(\w+)")
_TYPE = re.compile(r"^(bool|tristate|int|hex|string|def_bool|def_tristate)\b\s*(.*)$")
_BLOCK_WORDS = ("config", "menuconfig", "menu", "endmenu", "if", "endif", "choice",
                "endchoice", "comment", "source", "rsource", "osource", "orsource",
                "mainmenu")


def _logical_lines(path: Path):
    """(line number, text) with backslash continuations joined."""
    buf, start = "", 0
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield start, buf + line
        buf = ""
    if buf:
        yield start, buf


def _strip_cond(text: str) -> tuple[str, str]:
    """'"prompt" if EXPR' / 'FOO if EXPR' -> (head, EXPR or '')."""
    m = re.match(r'^(".*?"|\S+)\s+if\s+(.*)$', text.strip())
    return (m[1], m[2].strip()) if m else (text.strip(), "")


def load_kconfig(srctree: Path, srcarch: str) -> KconfigDb:
    """Every config symbol the tree defines for SRCARCH, with its dependencies."""
    db = KconfigDb()
    seen: set[Path] = set()

    def expand(p: str) -> str:
        return p.replace("$(SRCARCH)", srcarch).replace("$SRCARCH", srcarch) \
                .replace("$(HEADER_ARCH)", srcarch)

    def parse(path: Path, inherited: list[str]) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        rel = os.path.relpath(path, srctree)
        stack: list[tuple[str, list[str]]] = []       # (kind, deps added by the block)
        entry: Definition | None = None
        entry_sym = ""
        menu_open = False                              # depends on lines belong to a menu
        help_indent: int | None = None

        def deps() -> list[str]:
            return inherited + [d for _, ds in stack for d in ds]

        for n, line in _logical_lines(path):
            if help_indent is not None:
                if not line.strip():
                    continue
                indent = len(line.expandtabs()) - len(line.expandtabs().lstrip())
                if help_indent < 0:
                    help_indent = indent
                if indent >= help_indent and help_indent > 0:
                    continue
                help_indent = None
            text = line.split("#", 1)[0].strip() if '"' not in line else line.strip()
            if not text or text.startswith("#"):
                continue
            word = text.split()[0]
            if word in _BLOCK_WORDS:
                entry = None
                menu_open = False
            if m := _ENTRY.match(text):
                entry_sym = m[2]
                entry = Definition(f"{rel}:{n}", "", False, deps())
                db.defs.setdefault(entry_sym, []).append(entry)
            elif word in ("source", "rsource", "osource", "orsource"):
                arg = expand(text.split(None, 1)[1].strip().strip('"'))
                base = path.parent if word.startswith(("rs", "ors")) else srctree
                for p in sorted(glob.glob(str(base / arg))):
                    parse(Path(p), deps())
            elif word == "if":
                stack.append(("if", [" ".join(text[2:].split())]))
            elif word in ("menu", "choice"):
                stack.append((word, []))
                menu_open = True
            elif word in ("endif", "endmenu", "endchoice"):
                want = {"endif": "if", "endmenu": "menu", "endchoice": "choice"}[word]
                while stack:
                    kind, _ = stack.pop()
                    if kind == want:
                        break
            elif word == "comment":
                pass
            elif word == "depends" and text.startswith("depends on"):
                expr = " ".join(text[len("depends on"):].split())
                if entry is not None:
                    entry.depends.append(expr)
                elif menu_open and stack:
                    stack[-1][1].append(expr)
            elif entry is not None and (m := _TYPE.match(text)):
                entry.type = m[1].replace("def_", "")
                head, _cond = _strip_cond(m[2]) if m[2] else ("", "")
                if m[1] in ("bool", "tristate", "int", "hex", "string") and head.startswith('"'):
                    entry.prompt = True
            elif entry is not None and word == "prompt":
                entry.prompt = True
            elif entry is not None and word == "select":
                target, cond = _strip_cond(text.split(None, 1)[1])
                db.selects.setdefault(target, []).append((entry_sym, cond))
            elif word in ("help", "---help---"):
                help_indent = -1
    parse(srctree / "Kconfig", [])
    return db


# ---------------------------------------------------------------- expressions

_TOKEN = re.compile(r'\s*(\|\||&&|!=|<=|>=|[()!=<>]|"[^"]*"|\$\([^)]*\)|[\w.-]+)')


def _tristate(v: str) -> int:
    return {"y": 2, "m": 1}.get(v, 0)


def evaluate(expr: str, config: dict[str, str]) -> int:
    """Kconfig tristate value (0 n, 1 m, 2 y) of a dependency expression."""
    tokens = [t for t in _TOKEN.findall(expr)]
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value(tok: str) -> str:
        if tok.startswith('"'):
            return tok.strip('"')
        if tok in ("y", "m", "n"):
            return tok
        if tok.startswith("$("):
            return "n"
        return config.get(tok, "n" if not re.fullmatch(r"-?\d+|0x[0-9a-fA-F]+", tok) else tok)

    def atom() -> int:
        tok = take()
        if tok == "!":
            return 2 - atom()
        if tok == "(":
            v = disj()
            if peek() == ")":
                take()
            return v
        if peek() in ("=", "!=", "<", ">", "<=", ">="):
            op, rhs = take(), value(take())
            lhs = value(tok)
            try:
                a, b = int(lhs, 0), int(rhs, 0)
            except ValueError:
                a, b = lhs, rhs
            ok = {"=": a == b, "!=": a != b, "<": a < b, ">": a > b,
                  "<=": a <= b, ">=": a >= b}[op]
            return 2 if ok else 0
        return _tristate(value(tok))

    def conj() -> int:
        v = atom()
        while peek() == "&&":
            take()
            v = min(v, atom())
        return v

    def disj() -> int:
        v = conj()
        while peek() == "||":
            take()
            v = max(v, conj())
        return v

    return disj() if tokens else 2


def symbols_in(expr: str) -> list[str]:
    out = []
    for t in _TOKEN.findall(expr):
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*", t) and t not in out:
            out.append(t)
    return out


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
                    if _tristate(final.get(by, "n")) and (not cond or evaluate(cond, final))]
    if want == "n":
        if on_selectors:
            return f"forced on: selected by {', '.join(on_selectors)}"
        return f"forced to {got} by Kconfig (a default without a prompt, or a choice)"
    need = _tristate(want) or 2
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
