"""harness.wait: the one bounded, watched wait."""

import time

import pytest

from harness.errors import WaitTimeout
from harness.wait import wait_until, within


def test_the_first_truthy_value_is_returned():
    tries = iter([None, [], {"event": "SUSPEND"}])
    assert wait_until(lambda: next(tries), 5, "x", interval=0) == {"event": "SUSPEND"}


def test_the_timeout_names_what_and_what_arrived():
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0s waiting for QMP WAKEUP"):
        wait_until(lambda: None, 0.2, "QMP WAKEUP", interval=0.05)
    with pytest.raises(WaitTimeout, match=r"^it received nothing$"):
        wait_until(lambda: None, 0.1, "x", interval=0.05, fail=lambda: "it received nothing")
    assert time.monotonic() - t < 2


def test_the_watchdog_runs_between_tries_and_its_error_ends_the_wait():
    calls = []

    class Dead(Exception):
        pass

    def watchdog():
        calls.append(1)
        if len(calls) == 3:
            raise Dead("QEMU exited")
    with pytest.raises(Dead):
        wait_until(lambda: None, 30, "x", watchdog, interval=0)
    assert len(calls) == 3


def test_a_value_that_arrived_before_the_thing_died_counts():
    def dead():
        raise AssertionError("not reached: the predicate held first")
    assert wait_until(lambda: "ready", 1, "x", dead) == "ready"


def test_within_answers_none_at_its_bound_and_uses_the_given_sleep():
    slept = []
    assert within(lambda: False, 0.2, interval=0.05, sleep=lambda s: slept.append(s) or
                  time.sleep(s)) is None
    assert slept and max(slept) <= 0.05
