"""The x86 L2 s2idle judges (harness/plugin/l2_judge.py) against the VMM's exit log of a
real run (tests/unit/golden/l2/x86-s2idle-standin-6.12.json: debian:6.12 under a
debian:6.12 L1 host, the HYPE0001 stand-in loaded) and against that log with each
self-test fault of the VMM applied as the VMM applies it (harness/guest/vmm/policy.py
FAULTS; x86_64/s2idle.py): each judge passes the real log and FAILs its fault."""

import copy
import json
from pathlib import Path

import pytest

from harness.guest.vmm.x86_64 import acpi, s2idle
from harness.plugin import l2_judge

GOLDEN = json.loads((Path(__file__).parent / "golden" / "l2" /
                     "x86-s2idle-standin-6.12.json").read_text())


def exits():
    return copy.deepcopy(GOLDEN["exits"])


def order(log, vcpus=1):
    l2_judge.lps0_around_the_wake(log, vcpus, s2idle.ENTRY, s2idle.EXIT, acpi.WAKE_GPE, "here")


def notify(log):
    l2_judge.notify_between(log, s2idle.ENTRY, 3, "here")


def test_the_recorded_run_passes_both_judges():
    order(exits())
    notify(exits())
    assert l2_judge.lps0_order(exits()) == "3 7 5 6 8 4"


def test_the_order_within_a_phase_is_the_kernels():
    """6.1 calls 3, 5, 7 and 8, 6, 4 (its drivers/acpi/x86/s2idle.c); 6.12 calls 3, 7, 5."""
    log = exits()
    calls = [e for e in log if e["event"] == "lps0"]
    for e, fn in zip(calls, (3, 5, 7, 8, 6, 4)):
        e["fn"] = fn
    order(log)
    assert l2_judge.lps0_order(log) == "3 5 7 8 6 4"


def test_a_lost_lps0_call_fails_the_order():                 # fault lose-lps0-call
    log = [e for e in exits() if not (e["event"] == "lps0" and e["fn"] == 7)]
    with pytest.raises(AssertionError,
                       match=r"before the idle: \[3, 5\], expected each of \[3, 5, 7\] once"):
        order(log)


def test_a_misread_notify_fails_the_notify():                # fault misread-notify
    log = exits()
    next(e for e in log if e["event"] == "vpmc")["value"] += 1
    with pytest.raises(AssertionError, match="stored 4 at offset 0, expected 3"):
        notify(log)


def test_an_early_wake_fails_the_order():                    # fault early-wake
    log = exits()
    first = next(e for e in log if e["event"] == "lps0")
    at = first["t"] + 0.0005
    log += [{"t": at, "event": "idle-check", "states": [{"vcpu": 0, "mp_state": "RUNNABLE"}]},
            {"t": at, "event": "raise", "what": "gpe0", "sci": True}]
    log.sort(key=lambda e: e["t"])
    with pytest.raises(AssertionError,
                       match=r"before the idle: \[3\], expected each of \[3, 5, 7\] once"):
        order(log)


def test_a_guest_that_did_not_idle_or_enable_the_gpe_fails():
    log = exits()
    check = next(e for e in log if e["event"] == "idle-check")
    check["states"] = [{"vcpu": 0, "mp_state": "RUNNABLE"}]
    with pytest.raises(AssertionError, match="expected all HALTED: the guest did not idle"):
        order(log)
    log = exits()
    next(e for e in log if e["event"] == "raise")["sci"] = False
    with pytest.raises(AssertionError, match="raised no SCI"):
        order(log)
    with pytest.raises(AssertionError, match=r"\{0: 'HALTED'\}, expected all HALTED"):
        order(exits(), vcpus=2)


def test_no_wake_and_a_notify_outside_the_window_fail():
    log = [e for e in exits() if e["event"] not in ("idle-check", "raise")]
    with pytest.raises(AssertionError, match="never woke the guest"):
        order(log)
    log = exits()
    next(e for e in log if e["event"] == "vpmc")["t"] = 0.1
    with pytest.raises(AssertionError, match="is not between the last LPS0 entry call"):
        notify(log)
    with pytest.raises(AssertionError, match="0 MMIO exits, expected 1"):
        notify([e for e in exits() if e["event"] != "vpmc"])
