"""What the harness tells its user while it works: one `guestpm: ...` line at a time on
the real stderr, which pytest's capture does not swallow."""

from __future__ import annotations

import sys


def progress(msg: str) -> None:
    print(f"guestpm: {msg}", file=sys.__stderr__, flush=True)
