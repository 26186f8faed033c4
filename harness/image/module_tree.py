"""Kernel modules for the initramfs: find, decompress, order by dependency.

Debian's kernel packages ship no modules.dep (depmod runs at install time), and
running depmod would decompress all ~4,400 modules.  We need about ten, so we
read the `depends=` field of each needed module's .modinfo ELF section and
take the closure.  modules.builtin tells which names need no loading at all.
"""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import KernelError

_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def canonical(name: str) -> str:
    return name.replace("-", "_")


def decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        if not shutil.which("zstd"):
            raise KernelError(f"{path.name} is zstd-compressed: install the Debian package zstd")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """The key=value pairs of an ELF module's .modinfo section (64-bit LE or BE)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise ValueError("not a 64-bit ELF object")
    end = "<" if elf[5] == 1 else ">"
    shoff, = struct.unpack_from(end + "Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            end + "IIQQQQ", elf, shoff + i * shentsize)
        return name, off, size

    _, stroff, strsize = section(shstrndx)
    names = elf[stroff:stroff + strsize]
    for i in range(shnum):
        name_off, off, size = section(i)
        if names[name_off:names.index(b"\0", name_off)] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in elf[off:off + size].split(b"\0"):
                if b"=" in item:
                    k, v = item.decode(errors="replace").split("=", 1)
                    info.setdefault(k, []).append(v)
            return info
    raise ValueError("no .modinfo section")


@dataclass
class ModuleTree:
    """The modules directory of one kernel (…/lib/modules/VERSION)."""
    root: Path

    def __post_init__(self) -> None:
        self._index: dict[str, Path] | None = None

    @property
    def builtin(self) -> set[str]:
        path = self.root / "modules.builtin"
        if not path.exists():
            return set()
        return {canonical(Path(line.strip()).name.split(".ko")[0])
                for line in path.read_text().splitlines() if line.strip()}

    def index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for suffix in _SUFFIXES:
                for p in (self.root / "kernel").rglob("*" + suffix):
                    self._index.setdefault(canonical(p.name[: -len(suffix)]), p)
        return self._index

    def builtin_aliases(self) -> dict[str, list[str]]:
        """module -> its aliases, for built-in modules (modules.builtin.modinfo)."""
        path = self.root / "modules.builtin.modinfo"
        out: dict[str, list[str]] = {}
        if path.exists():
            for item in path.read_bytes().split(b"\0"):
                key, _, value = item.decode(errors="replace").partition("=")
                mod, _, field = key.partition(".")
                if field == "alias":
                    out.setdefault(canonical(mod), []).append(value)
        return out

    def aliases(self) -> dict[str, list[str]]:
        """module -> its aliases, for loadable modules, read from each module's
        .modinfo (Debian's packages ship no modules.alias).  About 20 s for a distro
        kernel's 4,000 modules, so it is cached beside guestpm's other entries."""
        from harness import cache
        stamp = cache.digest(str(self.root.resolve()), *(
            str(p.stat().st_mtime_ns) for p in (self.root, self.root / "kernel")
            if p.exists()))[:16]
        out = cache.cache_dir() / "module-aliases" / f"{self.root.name}-{stamp}.json"
        if out.exists():
            return json.loads(out.read_text())
        table = {name: modinfo(decompress(path)).get("alias", [])
                 for name, path in sorted(self.index().items())}
        cache.write_atomic(out, json.dumps(table).encode())
        return table

    def drivers_for(self, modalias_glob: str) -> tuple[list[str], list[str]]:
        """(built-in modules, loadable modules) whose alias is `modalias_glob`, as the
        kernel writes it (e.g. "acpi*:HYPE0001:*")."""
        builtin = [m for m, a in self.builtin_aliases().items() if modalias_glob in a]
        loadable = [m for m, a in self.aliases().items() if modalias_glob in a]
        return builtin, loadable

    def closure(self, wanted: list[str]) -> list[tuple[str, bytes]]:
        """(name, uncompressed .ko) for every wanted module that is not built in,
        dependencies first.  Names that are neither built in nor present are an error."""
        builtin = self.builtin
        index = self.index()
        order: list[tuple[str, bytes]] = []
        done: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            name = canonical(name)
            if name in done or name in builtin:
                return
            if name in chain:
                raise KernelError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
            if name not in index:
                raise KernelError(f"kernel module {name} is neither built in nor in {self.root}"
                                  + (f" (needed by {chain[-1]})" if chain else ""))
            data = decompress(index[name])
            for dep in modinfo(data).get("depends", [""])[0].split(","):
                if dep:
                    visit(dep, chain + (name,))
            done.add(name)
            order.append((name, data))

        for name in wanted:
            visit(name, ())
        return order
