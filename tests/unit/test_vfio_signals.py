"""The stand-in's ACPI-notify cases on kernels whose eventfd_signal() adds 1: each read
is checked for exactly one signal on every kernel, the values only where the eventfd
counter can carry them (harness.guest.vfio.signals)."""

import pytest

from harness.guest import kselftest, vfio

VALUE_CASES = ("acpi_notify_values_arrive_in_order_one_at_a_time",
               "acpi_notify_queue_keeps_the_newest_20_and_warns",
               "acpi_notify_firmware_notify_on_d3hot_reaches_the_eventfd")
ADDS_ONE = "eventfd_signal() takes no count on this kernel (an inline that adds 1; ...)"


def _case(name):
    return next(c for c in vfio.CASES if c.name == name)


@pytest.mark.parametrize("name", VALUE_CASES)
def test_the_value_cases_run_where_eventfd_signal_adds_1(name):
    """They used to require the value counter, so they SKIPped on 6.8 and later."""
    assert vfio.needs_value_counter not in _case(name).requires


class _Notify:
    def __init__(self, t, d):
        self.efd = 7

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _run(reads, counter: str | None, monkeypatch):
    """The values case's body, its eventfd reads scripted; `counter`: what the probe of
    eventfd_signal() says (None: it carries the value)."""
    script = list(reads) + [None]
    monkeypatch.setattr(vfio, "Notify", _Notify)
    monkeypatch.setattr(vfio, "raise_notify", lambda bdf, *v: None)
    monkeypatch.setattr(vfio, "wait_value", lambda efd, timeout=0: script.pop(0))
    monkeypatch.setattr(vfio, "needs_value_counter", lambda env: counter)
    env = type("Env", (), {"device": object(), "bdf": "0000:00:09.0"})()
    c = _case(VALUE_CASES[0])
    return kselftest.run_case(kselftest.Case(c.name, c.family, c.fn, "", ()), env)


V = [vfio.FIRMWARE_NOTIFY + 1, vfio.FIRMWARE_NOTIFY + 2, vfio.FIRMWARE_NOTIFY + 3]


def test_one_signal_each_passes_where_the_counter_adds_1(monkeypatch):
    r = _run([1, 1, 1], ADDS_ONE, monkeypatch)
    assert r["status"] == "pass", r
    assert [c["what"] for c in r["checks"]] == ["one signal per read", "nothing more"]
    assert r["observed"]["eventfd counter"] == ADDS_ONE


def test_all_at_once_fails_where_the_counter_adds_1(monkeypatch):
    """Three notifies delivered together: one read of 3, then nothing."""
    r = _run([3, None, None], ADDS_ONE, monkeypatch)
    assert r["status"] == "fail", r
    bad = next(c for c in r["checks"] if not c["ok"])
    assert bad["actual"] == ["counter 3", "no signal", "no signal"], bad


def test_the_values_are_checked_where_the_counter_carries_them(monkeypatch):
    assert _run(V, None, monkeypatch)["status"] == "pass"
    r = _run([V[1], V[0], V[2]], None, monkeypatch)        # out of order: one signal each
    assert r["status"] == "fail" and r["reason"] == "the values read", r
    r = _run([V[0] + V[1], V[2], None], None, monkeypatch)  # two merged
    assert r["status"] == "fail" and "one signal per read" in r["reason"], r
