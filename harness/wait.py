"""The host side's one bounded, watched wait (harness/guest keeps its own, stdlib-only).

Every wait in the harness polls a predicate until it holds, runs a watchdog between tries
(which raises when what is waited on is gone: a crashed guest, an exited QEMU, a dead
listener) and gives up after a timeout with a message that says what was waited for and
what did arrive.  `wait_until` raises then; `within` answers False, for the waits whose
timeout is an answer (did the console print anything, did QEMU exit in its grace time).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from harness.errors import WaitTimeout

T = TypeVar("T")


def _poll(predicate: Callable[[], T], timeout: float, watchdog: Callable[[], None] | None,
          interval: float, sleep: Callable[[float], object] | None) -> T | None:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if watchdog is not None:
            watchdog()          # after the try: what arrived before the thing died counts
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        (sleep or time.sleep)(min(interval, remaining))


def within(predicate: Callable[[], T], timeout: float, watchdog: Callable[[], None] | None = None,
           interval: float = 0.1, sleep: Callable[[float], object] | None = None) -> T | None:
    """predicate()'s first truthy value within `timeout` seconds, else None.  `sleep`
    (default time.sleep) may block on the thing itself, say an Event's wait."""
    return _poll(predicate, timeout, watchdog, interval, sleep)


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               watchdog: Callable[[], None] | None = None, interval: float = 0.1,
               sleep: Callable[[float], object] | None = None,
               fail: Callable[[], str] | None = None) -> T:
    """predicate()'s first truthy value; after `timeout` seconds WaitTimeout, whose
    message fail() writes (it says what did arrive) or else names `what`."""
    out = _poll(predicate, timeout, watchdog, interval, sleep)
    if not out:
        raise WaitTimeout(fail() if fail is not None else
                          f"timed out after {timeout:.0f}s waiting for {what}")
    return out
