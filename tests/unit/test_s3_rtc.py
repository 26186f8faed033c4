"""test_s3.py's RTC wake: judged by QMP SUSPEND -> WAKEUP against the alarm's deadline,
not by the time since the write (which counts S3 entry as sleep)."""

import importlib.util
import sys
from pathlib import Path

import pytest


def _s3():
    spec = importlib.util.spec_from_file_location(
        "e2e_test_s3", Path(__file__).parents[1] / "e2e" / "test_s3.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # its dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod


S3 = _s3()
T = 1000.0          # host time the alarm write was sent: the alarm is due from T + 4


def _events(suspend: float, wakeup: float) -> list[dict]:
    return [{"event": "SUSPEND", "host_time": T + 0.1}, {"event": "WAKEUP", "host_time": T + 0.3},
            {"event": "SUSPEND", "host_time": T + suspend},
            {"event": "WAKEUP", "host_time": T + wakeup}]


def test_a_wake_at_the_alarm_passes():
    assert S3.woke_by_the_alarm(_events(1.5, 4.6), S3.Alarm(T + 5)) is None
    assert S3.woke_by_the_alarm(_events(1.5, 4.0), S3.Alarm(T + 5)) is None


def test_a_spurious_wake_after_a_slow_s3_entry_fails():
    """S3 entry took 2.5 s, the guest woke 1 s later by itself: 3.5 s after the write,
    which the old check (write -> WAKEUP >= 3 s) took for the alarm."""
    why = S3.woke_by_the_alarm(_events(2.5, 3.5), S3.Alarm(T + 5))
    assert why and why.startswith("woke 0.50 s before the RTC alarm fell due"), why


def test_a_suspend_after_the_alarm_fell_due_proves_nothing():
    why = S3.woke_by_the_alarm(_events(4.2, 4.4), S3.Alarm(T + 5))
    assert why and "suspended only after the alarm fell due" in why, why


@pytest.mark.parametrize("events,why", [([], "no QMP SUSPEND"),
                                        ([{"event": "SUSPEND", "host_time": T + 1}],
                                         "no QMP WAKEUP after")])
def test_missing_events_are_named(events, why):
    assert why in S3.woke_by_the_alarm(events, S3.Alarm(T + 5))
