"""The host side's one bounded, watched wait (harness/guest keeps its own, stdlib-only).

Every wait in the harness polls a predicate until it holds, runs a watchdog between tries
(which raises when what is waited on is gone: a crashed guest, an exited QEMU, a dead
listener) and gives up after a timeout with a message that says what was waited for and
what did arrive.  `wait_until` raises then; `within` answers False, for the waits whose
timeout is an answer (did the console print anything, did QEMU exit in its grace time).

A wait that used more than half of its bound is a line of the file `record_close_calls`
names (the test plugin: results/waits.jsonl): what it waited for, how long, its bound and
whether it got there, so a bound that comes close under load shows before it fails
(benchmarks/load.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from harness.errors import WaitTimeout

T = TypeVar("T")

CLOSE = 0.5                     # the share of its bound from which a wait is recorded
WAITS_ENV = "GUESTPM_WAITS"     # the file, for processes started later (xdist workers)


def record_close_calls(path: os.PathLike | str | None) -> None:
    """Append the waits that use more than CLOSE of their bound to `path` (None: stop),
    in this process and in those it starts from now on."""
    if path is None:
        os.environ.pop(WAITS_ENV, None)
    else:
        os.environ[WAITS_ENV] = str(path)


# Functions that only pass a wait on (Machine.wait_until, Console.expect, ...): the
# place to name is their caller's.
_PASSING_ON = {"wait_until", "within", "expect", "wait_event", "wait_output", "wait_for",
               "_poll", "_record", "_caller"}


def _caller() -> str:
    """Where the wait was asked for: the first frame that does not just pass it on."""
    f: FrameType | None = sys._getframe(1)
    while f is not None and (f.f_code.co_filename == __file__ or
                             f.f_code.co_name in _PASSING_ON):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} {f.f_code.co_name}"


def _record(what: str | None, used: float, timeout: float, met: bool) -> None:
    path = os.environ.get(WAITS_ENV)
    if not path or timeout <= 0 or used <= CLOSE * timeout:
        return
    rec = {"what": what or _caller(), "where": _caller(), "used_s": round(used, 2),
           "bound_s": timeout, "share": round(used / timeout, 2), "met": met,
           "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or None}
    try:
        with open(path, "a") as fh:      # one short line: appends from xdist workers interleave
            fh.write(json.dumps(rec) + "\n")          # whole
    except OSError:
        pass                                # a missing results dir must not fail a wait


def _poll(predicate: Callable[[], T | None], timeout: float, watchdog: Callable[[], None] | None,
          interval: float, sleep: Callable[[float], object] | None,
          what: str | None = None) -> T | None:
    start = time.monotonic()
    deadline = start + timeout
    got = None
    try:
        while True:
            got = predicate()
            if got:
                return got
            if watchdog is not None:
                watchdog()      # after the try: what arrived before the thing died counts
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            (sleep or time.sleep)(min(interval, remaining))
    finally:
        _record(what, time.monotonic() - start, timeout, bool(got))


def within(predicate: Callable[[], T], timeout: float, watchdog: Callable[[], None] | None = None,
           interval: float = 0.1, sleep: Callable[[float], object] | None = None,
           what: str | None = None) -> T | None:
    """predicate()'s first truthy value within `timeout` seconds, else None.  `sleep`
    (default time.sleep) may block on the thing itself, say an Event's wait.  `what`
    names the wait in results/waits.jsonl (default: where it was asked for)."""
    return _poll(predicate, timeout, watchdog, interval, sleep, what)


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str,
               watchdog: Callable[[], None] | None = None, interval: float = 0.1,
               sleep: Callable[[float], object] | None = None,
               fail: Callable[[], str] | None = None) -> T:
    """predicate()'s first truthy value; after `timeout` seconds WaitTimeout, whose
    message fail() writes (it says what did arrive) or else names `what`."""
    out = _poll(predicate, timeout, watchdog, interval, sleep, what)
    if not out:
        raise WaitTimeout(fail() if fail is not None else
                          f"timed out after {timeout:.0f}s waiting for {what}")
    return out
