"""What the guest's drivers emitted for host-forced ACPI events (stdlib only).

    python3 -m harness.guest.acpi_events listen OUT.jsonl [--input NAME]...

Subscribes to the kernel's "acpi_event" generic-netlink family (drivers/acpi/event.c:
device class, bus id, type, data per event, as acpid reads them) and, for each input
device NAME (e.g. "Power Button"), reads its evdev node; appends one JSON object per
event to OUT and flushes it, after a first {"ready": ...} line once subscribed.  The
host starts it in the background, waits for "ready", forces the event, and reads OUT.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
NLM_F_REQUEST = 1
NLMSG_ERROR = 2

ACPI_FAMILY = "acpi_event"
ACPI_GROUP = "acpi_mc_group"
ACPI_GENL_ATTR_EVENT = 1
# struct acpi_genl_event { char device_class[20]; char bus_id[15]; u32 type; u32 data; }
ACPI_EVENT = struct.Struct("=20s15sxII")

# struct input_event on 64-bit: struct timeval, u16 type, u16 code, s32 value
INPUT_EVENT = struct.Struct("=qqHHi")
EV_KEY = 1


# ---------------------------------------------------------------- netlink encoding

def nlattr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    attrs, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[off + 4: off + length]
        off += (length + 3) & ~3
    return attrs


def messages(data: bytes):
    """(type, payload after the 16-byte nlmsghdr) for each netlink message in data."""
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        yield kind, data[off + 16: off + length]
        off += (length + 3) & ~3


def getfamily_request(name: str, seq: int = 1) -> bytes:
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + \
        nlattr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
    return struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, NLM_F_REQUEST, seq, 0) + body


def parse_family(payload: bytes) -> tuple[int, dict[str, int]]:
    """(family id, {multicast group name: id}) from a CTRL_CMD_NEWFAMILY payload."""
    attrs = parse_attrs(payload[4:])                       # after the genlmsghdr
    fid = struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0]
    groups = {}
    for nested in parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, b"")).values():
        g = parse_attrs(nested)
        name = g[CTRL_ATTR_MCAST_GRP_NAME].rstrip(b"\0").decode()
        groups[name] = struct.unpack("=I", g[CTRL_ATTR_MCAST_GRP_ID][:4])[0]
    return fid, groups


def parse_acpi_event(payload: bytes) -> dict:
    """One acpi_event multicast message (after the nlmsghdr) as a dict."""
    attrs = parse_attrs(payload[4:])
    dev_class, bus_id, kind, data = ACPI_EVENT.unpack(attrs[ACPI_GENL_ATTR_EVENT][:ACPI_EVENT.size])
    return {"device_class": dev_class.split(b"\0")[0].decode(errors="replace"),
            "bus_id": bus_id.split(b"\0")[0].decode(errors="replace"),
            "type": kind, "data": data}


# ---------------------------------------------------------------- sockets and devices

def subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sock.bind((0, 0))
    sock.send(getfamily_request(ACPI_FAMILY))
    for kind, payload in messages(sock.recv(65536)):
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", payload)[0]
            raise OSError(err, f"generic netlink family {ACPI_FAMILY!r}: {os.strerror(err)}")
        _, groups = parse_family(payload)
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups[ACPI_GROUP])
        return sock
    raise OSError(f"no answer for generic netlink family {ACPI_FAMILY!r}")


def input_nodes(names: list[str]) -> dict[str, str]:
    """{/dev/input/eventN: device name} for the input devices called one of `names`."""
    found = {}
    base = "/sys/class/input"
    for ev in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if not ev.startswith("event"):
            continue
        try:
            with open(f"{base}/{ev}/device/name") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if name in names:
            found[f"/dev/input/{ev}"] = name
    return found


def listen(out_path: str, inputs: list[str]) -> None:
    sock = subscribe()
    fds: dict[int, tuple[str, str | None]] = {sock.fileno(): ("netlink", None)}
    nodes = input_nodes(inputs)
    for path, node in nodes.items():
        fds[os.open(path, os.O_RDONLY)] = ("input", node)
    with open(out_path, "a") as out:
        def emit(rec: dict) -> None:
            out.write(json.dumps({"t": round(time.time(), 3), **rec}) + "\n")
            out.flush()

        emit({"ready": {"netlink": ACPI_FAMILY, "inputs": nodes}})
        while True:
            for fd in select.select(list(fds), [], [])[0]:
                source, name = fds[fd]
                if source == "netlink":
                    for kind, payload in messages(sock.recv(65536)):
                        if kind != NLMSG_ERROR:
                            emit({"source": "netlink", **parse_acpi_event(payload)})
                else:
                    data = os.read(fd, INPUT_EVENT.size * 64)
                    for i in range(0, len(data) - INPUT_EVENT.size + 1, INPUT_EVENT.size):
                        _, _, etype, code, value = INPUT_EVENT.unpack_from(data, i)
                        if etype == EV_KEY:
                            emit({"source": "input", "device": name, "code": code,
                                  "value": value})


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "listen":
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "--input" and i + 1 < len(argv)]
    listen(argv[1], inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
