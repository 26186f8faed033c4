"""A flattened device tree writer (Devicetree Specification v0.4, chapter 5): enough to
describe a small arm64 machine to Linux.  Stdlib only; runs in the L1 host.

    root = Node("")
    root.prop("#address-cells", 2)
    cpus = root.child("cpus") ...
    blob = to_dtb(root, boot_cpuid=0)

Property values: int (one u32 cell), a list of ints (u32 cells), `U64(v)` pairs of cells
(a list of them for reg = <hi lo hi lo>), str (NUL-terminated), list of str (a string
list), bytes (raw), None (an empty property).  tests/unit/test_fdt.py holds the output
against `dtc -I dtb -O dts`."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_END = 1, 2, 3, 9
VERSION, LAST_COMP_VERSION = 17, 16
HEADER = struct.Struct(">10I")


@dataclass(frozen=True)
class U64:
    """A 64-bit value as two big-endian cells (what #address-cells = 2 expects)."""
    value: int


def encode(value) -> bytes:
    """A property value's bytes (pure)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, bool):
        raise TypeError("a bool property: use None (present) or leave it out")
    if isinstance(value, int):
        return struct.pack(">I", value & 0xFFFFFFFF)
    if isinstance(value, U64):
        return struct.pack(">Q", value.value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return b"".join(v.encode() + b"\0" for v in value)
        return b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {value!r} as a property")


@dataclass
class Node:
    name: str
    props: list[tuple[str, bytes]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    def prop(self, name: str, value=None) -> Node:
        if any(n == name for n, _ in self.props):
            raise ValueError(f"{self.name or '/'}: property {name} set twice")
        self.props.append((name, encode(value)))
        return self

    def child(self, name: str) -> Node:
        if any(c.name == name for c in self.children):
            raise ValueError(f"{self.name or '/'}: node {name} added twice")
        node = Node(name)
        self.children.append(node)
        return node


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def to_dtb(root: Node, boot_cpuid: int = 0, reserve: Sequence[tuple[int, int]] = ()) -> bytes:
    """The blob: header, memory reservation block, structure block, strings block, in the
    order and alignment dtc uses (strings are shared by name, first use first)."""
    strings = bytearray()
    offsets: dict[str, int] = {}

    def name_off(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    struct_block = bytearray()

    def walk(node: Node) -> None:
        struct_block.extend(struct.pack(">I", FDT_BEGIN_NODE) + _pad4(node.name.encode() + b"\0"))
        for name, value in node.props:
            struct_block.extend(struct.pack(">III", FDT_PROP, len(value), name_off(name)))
            struct_block.extend(_pad4(value))
        for c in node.children:
            walk(c)
        struct_block.extend(struct.pack(">I", FDT_END_NODE))

    walk(root)
    struct_block.extend(struct.pack(">I", FDT_END))
    rsv = b"".join(struct.pack(">QQ", a, s) for a, s in reserve) + b"\0" * 16
    off_rsv = HEADER.size                       # 40: already 8-byte aligned
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(struct_block)
    total = off_strings + len(strings)
    header = HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsv, VERSION,
                         LAST_COMP_VERSION, boot_cpuid, len(strings), len(struct_block))
    return header + rsv + bytes(struct_block) + bytes(strings)
