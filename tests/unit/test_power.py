"""harness.vm.power's decisions against a fake machine (no QEMU): the order of events."""

import pytest

from harness.vm import power


class FakeQmp:
    def __init__(self, events):
        self.events = events

    def wait_event(self, name, after, timeout, watchdog=None):
        for e in self.events:
            if e["event"] == name and e["host_time"] >= after:
                return e
        raise power.WaitTimeout(f"no QMP {name}")


class FakeRunning:
    command = "echo mem > /sys/power/state"

    def done(self):
        return False

    def wait(self, timeout):
        return type("R", (), {"status": 0, "stderr": ""})()


class FakeMachine:
    qmp_log = "qmp-events.jsonl"
    console_log = "console.log"
    proc = None         # no QEMU: it never exits

    def __init__(self, events):
        self.qmp = FakeQmp(events)
        self.ssh = type("S", (), {"start": lambda s, cmd: FakeRunning()})()
        self.console = type("C", (), {"tail": lambda s: ""})()

    def wait_event(self, name, after, timeout, also=None):
        return self.qmp.wait_event(name, after, timeout)

    def watch(self, also=None):
        return also or (lambda: None)

    def artifacts(self):
        return "artifacts"


def test_a_guest_that_wakes_before_the_action_is_not_woken_by_it(monkeypatch):
    """SUSPEND, then a WAKEUP nobody asked for, then the key press: the key press must
    not be credited with the wake."""
    now = [100.0]
    monkeypatch.setattr(power.time, "time", lambda: now[0])
    m = FakeMachine([{"event": "SUSPEND", "host_time": 100.1},
                     {"event": "WAKEUP", "host_time": 100.2}])
    pressed = []

    def press():
        pressed.append(True)
    with pytest.raises(power.WokeEarly, match="woke by itself"):
        power.suspend_to_ram(m, press)
    assert not pressed


def test_a_wake_after_the_action_counts(monkeypatch):
    clock = iter([100.0, 100.15, 100.3, 100.4, 100.5, 100.6])
    monkeypatch.setattr(power.time, "time", lambda: next(clock))
    m = FakeMachine([{"event": "SUSPEND", "host_time": 100.1}])

    def press():
        m.qmp.events.append({"event": "WAKEUP", "host_time": 100.35})
    c = power.suspend_to_ram(m, press)
    assert c.status == 0


class ResetAfterWake(FakeMachine):
    """A restored guest that resets right after QMP WAKEUP: QEMU (-no-reboot) exits 0,
    and the write's ssh connection dies with it."""

    def __init__(self, events):
        super().__init__(events)
        self.proc = type("P", (), {"wait": lambda s: 0})()
        self.console = type("C", (), {"tail": lambda s: "ACPI: PM: Waking up from system "
                                                        "sleep state S3\nreboot: machine restart"})()
        lost = type("R", (), {"command": "echo mem > /sys/power/state", "done": lambda s: False,
                              "wait": lambda s, t: (_ for _ in ()).throw(EOFError("ssh lost"))})
        self.ssh = type("S", (), {"start": lambda s, cmd: lost()})()

    def alive(self):
        return False


def test_a_guest_that_resets_during_s3_fails_saying_so_with_the_events(monkeypatch):
    clock = iter([100.0, 100.15, 100.3, 100.4, 100.5, 100.6, 100.7])
    monkeypatch.setattr(power.time, "time", lambda: next(clock))
    m = ResetAfterWake([{"event": "SUSPEND", "host_time": 100.1},
                        {"event": "WAKEUP", "host_time": 100.35},
                        {"event": "RESET", "host_time": 100.4, "data": {"guest": True,
                                                                     "reason": "guest-reset"}},
                        {"event": "SHUTDOWN", "host_time": 100.41,
                         "data": {"guest": True, "reason": "guest-reset"}}])
    with pytest.raises(power.EndedInReset) as e:
        power.suspend_to_ram(m, lambda: None, what="S3 (key)")
    msg = str(e.value)
    assert msg.startswith("S3 (key): the guest reset during the transition: QMP events "
                          "SUSPEND +0.10s, WAKEUP +0.35s, RESET")
    assert "'reason': 'guest-reset'" in msg and "QEMU exited (status 0)" in msg
    assert msg.endswith("console's last lines (console.log):\nACPI: PM: Waking up from system "
                        "sleep state S3\nreboot: machine restart")


def test_an_error_while_qemu_runs_is_not_taken_for_a_reset(monkeypatch):
    m = FakeMachine([])
    with pytest.raises(power.WaitTimeout, match="no QMP SUSPEND"):
        power.suspend_to_ram(m, lambda: None)
