"""arm64 with ACPI: the virt machine booted through UEFI (the arm64-uefi profile).

QEMU's virt machine describes its power button in the ACPI tables as a Generic Event
Device (ACPI0013): `system_powerdown` raises the GED's interrupt, its _EVT method
does Notify(PWRB, 0x80), and the guest's ACPI button driver (PNP0C0C) reports it on
the acpi_event netlink family and as KEY_POWER.  Evidence on both sides: QMP
POWERDOWN, the GED's interrupt counter, the listener's record (harness/guest/acpi_events.py)."""

from __future__ import annotations

import re

import pytest

from harness import profiles
from harness.vm.guest_events import GuestEvents, press_power_button

pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64")]

KEY_POWER = 116


def _ged_irqs(m) -> int:
    out = m.ssh.run("grep 'ACPI:Ged' /proc/interrupts").output
    assert out.strip(), "no ACPI:Ged interrupt line in the guest's /proc/interrupts"
    return sum(int(n) for n in re.findall(r"\s(\d+)", out.split(":", 1)[1].split("GIC")[0]))


@pytest.fixture
def acpi_guest(machine_factory):
    m = machine_factory.booted(profile=profiles.get("arm64-uefi"))
    return m


def test_the_guest_runs_on_acpi_tables_from_uefi(acpi_guest):
    m = acpi_guest
    log = m.agent("dmesg", grep="ACPI")["lines"]
    assert any(re.search(r"ACPI: RSDP 0x[0-9A-F]+ 000024 \(v02 BOCHS", ln) for ln in log), \
        f"no RSDP from QEMU's tables in the kernel log: {log[:10]}"
    assert m.ssh.run("test -d /sys/firmware/devicetree/base").status != 0, \
        "the kernel also has a device tree: it did not take the ACPI path"
    ged = m.agent("acpi-device", hid="ACPI0013")["devices"]
    button = m.agent("acpi-device", hid="PNP0C0C")["devices"]
    assert [(d["name"], list(d["drivers"].values())) for d in ged] == \
        [("ACPI0013:00", ["acpi-ged"])], ged
    # the ACPI button driver: "button" on the ACPI device up to 6.12, "acpi-button" on
    # its platform node since it became a platform driver (7.2)
    assert [(d["name"], list(d["drivers"].values())) for d in button] in (
        [("PNP0C0C:00", ["button"])], [("PNP0C0C:00", ["acpi-button"])]), button


def test_power_button_arrives_through_the_ged(acpi_guest):
    m = acpi_guest
    ev = GuestEvents(m, inputs=("Power Button",))
    assert "Power Button" in ev.ready["inputs"].values(), \
        f"no 'Power Button' input device in the guest: {ev.ready}"
    before = _ged_irqs(m)
    netlink, keys = press_power_button(m, ev)
    assert netlink == [("button/power", "PNP0C0C:00", 0x80)], f"acpi_event log: {netlink}"
    assert keys == [(KEY_POWER, 1), (KEY_POWER, 0)], f"Power Button key events: {keys}"
    assert _ged_irqs(m) == before + 1, "the GED's interrupt did not fire exactly once"
