"""vfio uAPI numbers, struct layouts and the raw ioctl call (include/uapi/linux/vfio.h,
and the unmerged ACPI-notify series' IRQ index).  Stdlib only; the device objects are
in vfio_device.py, the cases in vfio.py."""

from __future__ import annotations

import errno
import fcntl
import struct

# ---------------------------------------------------------------- uAPI (linux/vfio.h)
VFIO_TYPE, VFIO_BASE = ord(";"), 100


def _io(n: int) -> int:          # _IO(VFIO_TYPE, VFIO_BASE + n): vfio passes argsz in-band
    return (VFIO_TYPE << 8) | (VFIO_BASE + n)


VFIO_GET_API_VERSION = _io(0)
VFIO_CHECK_EXTENSION = _io(1)
VFIO_SET_IOMMU = _io(2)
VFIO_GROUP_GET_STATUS = _io(3)
VFIO_GROUP_SET_CONTAINER = _io(4)
VFIO_GROUP_GET_DEVICE_FD = _io(6)
VFIO_DEVICE_GET_INFO = _io(7)
VFIO_DEVICE_GET_REGION_INFO = _io(8)
VFIO_DEVICE_GET_IRQ_INFO = _io(9)
VFIO_DEVICE_SET_IRQS = _io(10)
VFIO_DEVICE_FEATURE = _io(17)

VFIO_API_VERSION = 0
VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU = 1, 3
VFIO_GROUP_FLAGS_VIABLE = 1 << 0

VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5              # mainline: the count, one past REQ
VFIO_PCI_ACPI_IRQ_INDEX = 5        # the ACPI-notify series puts its IRQ right there

VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
ACPI_NOTIFY_DEVICE_CHECK = 1
VFIO_IRQ_SET_DATA_NONE = 1 << 0

VFIO_DEVICE_FEATURE_GET = 1 << 16
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_PROBE = 1 << 18
LOW_POWER_ENTRY, LOW_POWER_ENTRY_WITH_WAKEUP, LOW_POWER_EXIT = 3, 4, 5
UNKNOWN_FEATURE = 0x7fff          # no kernel defines it

FEATURE = struct.Struct("<II")                 # argsz, flags (then data[])
WAKEUP_ENTRY = struct.Struct("<iI")            # wakeup_eventfd, reserved
GROUP_STATUS = struct.Struct("<II")            # argsz, flags
DEVICE_INFO = struct.Struct("<IIII")           # argsz, flags, num_regions, num_irqs
REGION_INFO = struct.Struct("<IIIIQQ")         # argsz, flags, index, cap_offset, size, offset
IRQ_INFO = struct.Struct("<IIII")              # argsz, flags, index, count
IRQ_SET = struct.Struct("<IIIII")              # argsz, flags, index, start, count (then data)

FEATURE_NAMES = {LOW_POWER_ENTRY: "LOW_POWER_ENTRY",
                 LOW_POWER_ENTRY_WITH_WAKEUP: "LOW_POWER_ENTRY_WITH_WAKEUP",
                 LOW_POWER_EXIT: "LOW_POWER_EXIT"}
PCI_D_STATES = ("D0", "D1", "D2", "D3hot")


def ioctl(fd: int, request: int, arg) -> tuple[int, bytes | None]:
    """(0 or -errno, the kernel's copy of a buffer argument)."""
    buf = bytearray(arg) if isinstance(arg, (bytes, bytearray)) else arg
    try:
        r = fcntl.ioctl(fd, request, buf, True) if isinstance(buf, bytearray) \
            else fcntl.ioctl(fd, request, buf)
    except OSError as e:
        return -(e.errno or errno.EIO), None
    return r, bytes(buf) if isinstance(buf, bytearray) else None


def errname(rc: int) -> str:
    return "0" if rc >= 0 else errno.errorcode.get(-rc, str(rc))


def feature(fd: int, flags: int, payload: bytes = b"") -> str:
    """VFIO_DEVICE_FEATURE: "0" or the errno's name."""
    rc, _ = ioctl(fd, VFIO_DEVICE_FEATURE, FEATURE.pack(FEATURE.size + len(payload), flags)
                  + payload)
    return errname(rc)


def wakeup_payload(efd: int) -> bytes:
    return WAKEUP_ENTRY.pack(efd, 0)
