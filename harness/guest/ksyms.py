"""Name kernel addresses with the running kernel's /proc/kallsyms (stdlib only).

A hung L2 guest's vCPUs report where they stood as link-time addresses (the reference
VMM boots x86 L2 kernels with `nokaslr`; harness/guest/vmm/x86_64/backend.py).  When the
L2 kernel is the L1 host's own kernel, L1's /proc/kallsyms names them: the same text,
moved by L1's own KASLR offset, which `_text` gives.  Debian ships no System.map (its
file only points at the -dbg package), so this is the one symbol table at hand.

    python3 -m harness.guest.ksyms ADDRESS...    # one line per address: SYMBOL+0xOFF
"""

from __future__ import annotations

import bisect
import os
import sys

KALLSYMS = "/proc/kallsyms"
# The link address of _text, per arch (x86_64: Documentation/arch/x86/x86_64/mm.rst's
# kernel text mapping plus the default 16 MiB physical start)
LINK_TEXT = {"x86_64": 0xFFFF_FFFF_8100_0000}


class Symbols:
    """The text symbols of one kallsyms listing, sorted by address (pure)."""

    def __init__(self, kallsyms: str):
        pairs = []
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("t", "T"):
                pairs.append((int(parts[0], 16), parts[2]))
        pairs.sort()
        self.addresses = [a for a, _ in pairs]
        self.names = [n for _, n in pairs]
        self.text = next((a for a, n in pairs if n == "_text"), None)

    def name(self, address: int) -> str | None:
        """SYMBOL+0xOFF for an address in the listing's own space, None below its first."""
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0 or not self.addresses[i]:
            return None
        return f"{self.names[i]}+{address - self.addresses[i]:#x}"

    def name_linked(self, address: int, link_text: int) -> str | None:
        """The same for a link-time address (a `nokaslr` kernel's): moved by this
        kernel's own offset, _text's place against its link address."""
        if not self.text:       # None, or 0 under kptr_restrict
            return None
        return self.name(address - link_text + self.text)


def main(argv: list[str]) -> int:
    arch = os.uname().machine
    if arch not in LINK_TEXT:
        print(f"ksyms: no link address of _text known for {arch}", file=sys.stderr)
        return 2
    with open(KALLSYMS) as fh:
        syms = Symbols(fh.read())
    for a in argv:
        print(f"{a} {syms.name_linked(int(a, 16), LINK_TEXT[arch]) or '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
