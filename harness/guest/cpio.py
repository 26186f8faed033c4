"""A deterministic cpio "newc" writer for initramfs layers.

Written here (not `cpio -o`) because an initramfs needs entries an
unprivileged user cannot create on disk (/dev/console), and because the
archive must be byte-identical for identical input so that layers can be
cached by content hash: mtimes, owners and inode numbers are normalised.
The kernel accepts several such archives concatenated (each padded to 4).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"070701"
S_IFCHR = stat.S_IFCHR
TRAILER = "TRAILER!!!"


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


class CpioWriter:
    def __init__(self, out: BinaryIO):
        self._out = out
        self._ino = 0x4000   # arbitrary but fixed start: output depends only on input
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = name.lstrip("/")
        if name in self._seen:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._seen.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        """Add a directory and any missing parents; adding one twice is a no-op."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self._seen:
                self._entry(path, stat.S_IFDIR | (perm if i == len(parts) else 0o755), nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, S_IFCHR | perm, rdev=(major, minor))

    def tree(self, root: Path, prefix: str = "") -> None:
        """Add a directory tree (sorted, so the archive is reproducible)."""
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            base = prefix if rel == "." else os.path.join(prefix, rel)
            if base:
                self.directory(base, os.lstat(dirpath).st_mode & 0o7777)
            for entry in sorted(filenames + [d for d in dirnames
                                             if os.path.islink(os.path.join(dirpath, d))]):
                path = os.path.join(dirpath, entry)
                st = os.lstat(path)
                name = os.path.join(base, entry)
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(name, os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    self.file(name, Path(path).read_bytes(), st.st_mode & 0o7777)
                # sockets, fifos and device nodes from a host tree are not wanted
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]

    def close(self) -> None:
        self._entry(TRAILER, 0, nlink=1)


def read_names(data: bytes) -> list[str]:
    """Names in one or more concatenated newc archives (for tests and `guestpm` debugging)."""
    names, off = [], 0
    while off + 110 <= len(data):
        if data[off:off + 6] != _MAGIC:
            if data[off:off + 4] == b"\0\0\0\0":
                off += 4
                continue
            raise ValueError(f"bad cpio magic at offset {off}")
        fields = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name_start = off + 110
        name = data[name_start:name_start + namesize - 1].decode()
        off = name_start + namesize
        off += (4 - off % 4) % 4
        off += filesize
        off += (4 - off % 4) % 4
        if name != TRAILER:
            names.append(name)
    return names
