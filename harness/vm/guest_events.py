"""What the guest's drivers emitted, read from the guest agent's record: acpi_event
netlink messages and input key events (harness/guest/acpi_events.py runs the listener);
and the ACPI power button pressed from the host."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable

from harness.errors import GuestMisbehaved
from harness.wait import wait_until


class ListenerDied(GuestMisbehaved):
    """The guest's acpi_event listener exited while its record was awaited."""


class GuestEvents:
    """The guest agent's record of what its drivers emitted (harness/guest/acpi_events.py):
    acpi_event netlink messages and key events of the named input devices."""

    LOG = "/run/guestpm-acpi-events.jsonl"

    def __init__(self, m, inputs: tuple[str, ...] = ()):
        self.m = m
        args = " ".join(f"--input {shlex.quote(i)}" for i in inputs)
        self.proc = m.ssh.start(f"cd /opt/guestpm && exec python3 -m harness.guest.acpi_events "
                                f"listen {self.LOG} {args}")
        self.ready = self.wait_for(lambda recs: True, 60, "the guest's acpi_event listener",
                                   ready=True)[0]["ready"]

    def records(self) -> list[dict]:
        out = self.m.ssh.run(f"cat {self.LOG} 2>/dev/null").output
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def wait_for(self, done: Callable[[list[dict]], bool], timeout: float, what: str,
                 ready: bool = False) -> list[dict]:
        """Poll the record until done(events) holds; the timeout quotes what the guest's
        drivers did emit."""
        got: list[dict] = []

        def emitted() -> list[dict] | None:
            nonlocal got
            got = [r for r in self.records() if ("ready" in r) == ready]
            return got if got and done(got) else None

        def listening() -> None:
            if self.proc.done():
                r = self.proc.wait(1)
                raise ListenerDied(f"the guest's acpi_event listener exited {r.status}: "
                                   f"{r.stderr.strip() or r.output.strip()}")
        return wait_until(emitted, timeout, what, listening, interval=0.3,
                          fail=lambda: f"{what}: not in the guest's acpi_event log within "
                                       f"{timeout:.0f}s; it holds {got or 'no events'}")


def press_power_button(m, ev: GuestEvents, timeout: float = 30) -> tuple[list, list]:
    """`system_powerdown` (QEMU acknowledges it with POWERDOWN), then what the guest's
    drivers emitted for it: the acpi_event triples (class, bus id, type) and the
    (code, value) input events of the listener's input devices."""
    t0 = time.time()
    m.qmp.execute("system_powerdown")
    m.wait_event("POWERDOWN", after=t0, timeout=10)
    got = ev.wait_for(lambda r: any(e["source"] == "netlink" for e in r) and
                      any(e["source"] == "input" and e["value"] == 0 for e in r), timeout,
                      "system_powerdown: the button's acpi_event and KEY_POWER press/release")
    return ([(e["device_class"], e["bus_id"], e["type"]) for e in got if e["source"] == "netlink"],
            [(e["code"], e["value"]) for e in got if e["source"] == "input"])
