"""The guest's acpi_event listener against generic-netlink bytes captured from a
debian:7.2 x86_64 guest (tests/unit/golden/acpi/*.hex): the family reply and the
power button's event after QMP system_powerdown."""

import struct
from pathlib import Path

from harness.guest import acpi_events as a

GOLDEN = Path(__file__).parent / "golden" / "acpi"


def _hex(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / name).read_text().strip())


def test_getfamily_request_layout():
    req = a.getfamily_request("acpi_event", seq=7)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, kind, flags, seq, pid) == (len(req), 0x10, 1, 7, 0)
    assert req[16:20] == bytes([3, 1, 0, 0])                  # CTRL_CMD_GETFAMILY, version 1
    assert a.parse_attrs(req[20:]) == {2: b"acpi_event\0"}


def test_family_reply_gives_the_id_and_the_multicast_group():
    [(kind, payload)] = list(a.messages(_hex("genl-newfamily-acpi_event.hex")))
    assert kind == 0x10
    assert a.parse_family(payload) == (30, {"acpi_mc_group": 10})


def test_power_button_event():
    [(kind, payload)] = list(a.messages(_hex("genl-acpi-event-power-button.hex")))
    assert kind == 30                                         # the family id
    assert a.parse_acpi_event(payload) == {"device_class": "button/power",
                                           "bus_id": "LNXPWRBN:00", "type": 0x80, "data": 1}


def test_struct_layouts_match_the_kernel():
    assert a.ACPI_EVENT.size == 44                # char[20], char[15], pad, u32, u32
    assert a.INPUT_EVENT.size == 24               # struct input_event on 64-bit
