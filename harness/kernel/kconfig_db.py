"""The kernel's Kconfig language, as far as explaining a lost option needs it: each
symbol's type and dependencies read from the tree's Kconfig files, and the value of a
dependency expression under a .config."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _expand_arch(path: str, srcarch: str) -> str:
    """A `source` line's path with the arch variables the kernel's Kconfig uses."""
    return path.replace("$(SRCARCH)", srcarch).replace("$SRCARCH", srcarch) \
               .replace("$(HEADER_ARCH)", srcarch)


def load_kconfig(srctree: Path, srcarch: str) -> KconfigDb:
    """Every config symbol the tree defines for SRCARCH, with its dependencies."""
    db = KconfigDb()
    seen: set[Path] = set()

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
                if indent >= help_indent > 0:
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
                arg = _expand_arch(text.split(None, 1)[1].strip().strip('"'), srcarch)
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


def tristate(v: str) -> int:
    """n, m, y as 0, 1, 2 (anything else is n)."""
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
            a: Any      # both ints or both strings: Kconfig compares numbers as numbers
            b: Any
            try:
                a, b = int(lhs, 0), int(rhs, 0)
            except ValueError:
                a, b = lhs, rhs
            ok = {"=": a == b, "!=": a != b, "<": a < b, ">": a > b,
                  "<=": a <= b, ">=": a >= b}[op]
            return 2 if ok else 0
        return tristate(value(tok))

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
