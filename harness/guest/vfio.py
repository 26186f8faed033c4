"""vfio-pci power uAPI cases, run in the kernel under test as a host (stdlib only).

The device is a PCI function of this machine bound to vfio-pci; its DMA must be
translated by an IOMMU (QEMU's intel-iommu on x86_64, SMMUv3 on arm64): Debian's
kernels are built without CONFIG_VFIO_NOIOMMU, so there is no noiommu mode to
fall back on.  The cases drive the device through the legacy container/group
interface (/dev/vfio/vfio + /dev/vfio/N), which every kernel from 6.1 to 7.2 has.

Families:
  low_power    VFIO_DEVICE_FEATURE LOW_POWER_ENTRY / _WITH_WAKEUP / _EXIT (merged 6.1):
               the device's own PMCSR, the PCI core's power_state and the runtime-PM
               status are read after each call.
  acpi_notify  the unmerged vfio ACPI-notify series (v5): IRQ index 5
               (VFIO_PCI_ACPI_IRQ_INDEX).  Stock kernels answer that index 5 is
               VFIO_PCI_NUM_IRQS.  The positive path runs against guestpm's
               stand-in for the series (tests/fixtures/vfio_acpi_standin, a vfio-pci
               variant driver: --driver guestpm_vfio_acpi_standin), or against a
               kernel that carries the series (the default driver, vfio-pci).
               Notify values other than the loopback's are raised through the
               firmware: guestpm's SSDT (guest-rootfs/acpi/vfio_notify.asl) gives
               the device's companion a _PS3 that notifies 0x80 and a GPMN(v)
               method, which the stand-in module's test hook evaluates.

    python3 -m harness.guest.vfio 0000:00:09.0 [--driver D] [--no-companion BDF]
                                  [--json] [-k NAME]
prints KTAP (or JSON) on any machine with such a device, bare metal included."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import sys
import time
from pathlib import Path

from . import kselftest
from .agent import kmsg_records

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

# the stand-in for the ACPI-notify series and guestpm's firmware (vfio_notify.asl)
STANDIN_DRIVER = "guestpm_vfio_acpi_standin"
RAISE_HOOK = Path("/sys/kernel/debug/guestpm_vfio_acpi_standin/raise")
FIRMWARE_NOTIFY = 0x80           # what the SSDT's _PS3 notifies
NOTIFY_QUEUE = 20                # values the series keeps for a VMM that has not read
NOTIFY_WAIT = 5.0                # s: a notify reaches the eventfd through a workqueue
NOTIFY_SETTLE = 0.5              # s: ACPICA dispatches Notify from a workqueue and no
                                 # interface says it has drained; let raised values land

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
        return -e.errno, None
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


# ---------------------------------------------------------------- the device in sysfs
class PciDevice:
    def __init__(self, bdf: str):
        self.bdf = bdf
        self.path = Path("/sys/bus/pci/devices") / bdf

    def _read(self, rel: str) -> str | None:
        try:
            return (self.path / rel).read_text().strip()
        except OSError:
            return None

    @property
    def driver(self) -> str | None:
        link = self.path / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    @property
    def iommu_group(self) -> str | None:
        link = self.path / "iommu_group"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def config(self) -> bytes:
        """Config space as sysfs gives it (does not resume a runtime-suspended device
        unless it is in D3cold)."""
        return (self.path / "config").read_bytes()

    def pm_cap(self) -> int | None:
        cfg = self.config()
        if not cfg[0x06] & 0x10:                       # status: capability list
            return None
        off, seen = cfg[0x34] & ~3, set()
        while off and off not in seen and off + 1 < len(cfg):
            seen.add(off)
            if cfg[off] == 0x01:
                return off
            off = cfg[off + 1] & ~3
        return None

    def power(self) -> dict:
        """The device's state from three sides: its PMCSR (what the hardware says), the
        PCI core's power_state, and runtime PM's status."""
        cap = self.pm_cap()
        pmcsr = None
        if cap is not None:
            cfg = self.config()
            pmcsr = PCI_D_STATES[struct.unpack_from("<H", cfg, cap + 4)[0] & 3]
        return {"pmcsr": pmcsr, "power_state": self._read("power_state"),
                "runtime_status": self._read("power/runtime_status")}

    def wait_power(self, want: dict, timeout: float = 5.0) -> dict:
        """Runtime suspend is asynchronous (an idle work item): poll, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.power()
            if all(now[k] == v for k, v in want.items()) or time.monotonic() > deadline:
                return now
            time.sleep(0.05)


D0 = {"pmcsr": "D0", "power_state": "D0", "runtime_status": "active"}
D3HOT = {"pmcsr": "D3hot", "power_state": "D3hot", "runtime_status": "suspended"}


def no_group_reason(dev: PciDevice) -> str:
    noiommu = Path("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
    return (f"{dev.bdf} has no IOMMU group: no IOMMU translates its DMA, and "
            + ("noiommu mode is off (vfio.enable_unsafe_noiommu_mode)" if noiommu.exists()
               else "this kernel has no noiommu mode (CONFIG_VFIO_NOIOMMU)"))


def why_unbindable(dev: PciDevice, driver: str = "vfio-pci") -> str | None:
    """Why `dev` cannot be handed to `driver` (vfio-pci or a variant driver) here, or
    None.  The IOMMU group is not among the preconditions: with a device-tree SMMU
    (arm64 on 6.1) a device gets its group only when a driver probes it, so the bind
    itself decides."""
    if not dev.path.exists():
        return f"no PCI device {dev.bdf}"
    if not Path("/sys/bus/pci/drivers", driver).is_dir():
        return ("driver missing: vfio-pci is neither built in nor loaded (CONFIG_VFIO_PCI)"
                if driver == "vfio-pci" else f"driver missing: {driver} is not loaded")
    if not Path("/dev/vfio/vfio").exists():
        return "/dev/vfio/vfio missing: the kernel has no vfio container (CONFIG_VFIO_CONTAINER)"
    if dev.pm_cap() is None:
        return f"{dev.bdf} has no PCI power-management capability: nothing to put in D3hot"
    return None


def bind(dev: PciDevice, driver: str = "vfio-pci") -> None:
    """driver_override + drivers_probe, the way libvirt and driverctl do it."""
    if dev.driver == driver:
        return
    (dev.path / "driver_override").write_text(driver)
    if dev.driver:
        (dev.path / "driver" / "unbind").write_text(dev.bdf)
    error = None
    try:
        Path("/sys/bus/pci/drivers_probe").write_text(dev.bdf)
    except OSError as e:
        error = os.strerror(e.errno)
    if dev.driver != driver:
        if dev.iommu_group is None:       # vfio-pci's probe refuses a device without one
            raise kselftest.Skip(no_group_reason(dev))
        raise kselftest.Skip(f"{dev.bdf} did not bind to {driver} ({error or 'no error'}; "
                         f"driver: {dev.driver})")


# ---------------------------------------------------------------- the opened device
class VfioDevice:
    """Container, group and device fd of one PCI function; the device is in D0 while
    it is open (vfio-pci resumes it on open)."""

    def __init__(self, bdf: str, driver: str = "vfio-pci"):
        self.dev = PciDevice(bdf)
        reason = why_unbindable(self.dev, driver)
        if reason:
            raise kselftest.Skip(reason)
        bind(self.dev, driver)
        try:
            self._open(bdf)
        except BaseException:
            self.close()          # no fd outlives a failed open
            raise

    def _open(self, bdf: str) -> None:
        self.container = os.open("/dev/vfio/vfio", os.O_RDWR)
        version = fcntl.ioctl(self.container, VFIO_GET_API_VERSION)
        if version != VFIO_API_VERSION:
            raise OSError(errno.EPROTO, f"VFIO_GET_API_VERSION says {version}, "
                                        f"this client speaks {VFIO_API_VERSION}")
        self.group = os.open(f"/dev/vfio/{self.dev.iommu_group}", os.O_RDWR)
        _, out = ioctl(self.group, VFIO_GROUP_GET_STATUS, GROUP_STATUS.pack(GROUP_STATUS.size, 0))
        if not GROUP_STATUS.unpack(out)[1] & VFIO_GROUP_FLAGS_VIABLE:
            others = sorted(p.name for p in (Path("/sys/kernel/iommu_groups")
                                             / self.dev.iommu_group / "devices").iterdir())
            raise kselftest.Skip(f"IOMMU group {self.dev.iommu_group} is not viable: its other "
                             f"devices must be bound to vfio-pci too ({', '.join(others)})")
        self._check(ioctl(self.group, VFIO_GROUP_SET_CONTAINER,
                          struct.pack("<i", self.container))[0], "GROUP_SET_CONTAINER")
        iommu = VFIO_TYPE1v2_IOMMU if fcntl.ioctl(self.container, VFIO_CHECK_EXTENSION,
                                                  VFIO_TYPE1v2_IOMMU) else VFIO_TYPE1_IOMMU
        self._check(ioctl(self.container, VFIO_SET_IOMMU, iommu)[0], "SET_IOMMU")
        fd, _ = ioctl(self.group, VFIO_GROUP_GET_DEVICE_FD, bdf.encode() + b"\0")
        self._check(fd, "GROUP_GET_DEVICE_FD")
        self.fd = fd
        _, out = ioctl(self.fd, VFIO_DEVICE_GET_INFO, DEVICE_INFO.pack(DEVICE_INFO.size, 0, 0, 0))
        _, _, self.num_regions, self.num_irqs = DEVICE_INFO.unpack(out)
        _, out = ioctl(self.fd, VFIO_DEVICE_GET_REGION_INFO,
                       REGION_INFO.pack(REGION_INFO.size, 0, VFIO_PCI_CONFIG_REGION_INDEX, 0, 0, 0))
        self.config_offset = REGION_INFO.unpack(out)[5]

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, f"VFIO_{what}: {os.strerror(-rc)}")

    def touch(self) -> int:
        """Read the vendor/device id through the device fd: a user access, which resumes
        a device in low-power mode."""
        return int.from_bytes(os.pread(self.fd, 4, self.config_offset), "little")

    def irq_info(self, index: int) -> tuple[str, dict | None]:
        rc, out = ioctl(self.fd, VFIO_DEVICE_GET_IRQ_INFO, IRQ_INFO.pack(IRQ_INFO.size, 0, index, 0))
        if rc < 0:
            return errname(rc), None
        _, flags, idx, count = IRQ_INFO.unpack(out)
        return "0", {"flags": flags, "index": idx, "count": count}

    def set_irqs(self, flags: int, index: int, data: bytes, count: int = 1) -> str:
        rc, _ = ioctl(self.fd, VFIO_DEVICE_SET_IRQS,
                      IRQ_SET.pack(IRQ_SET.size + len(data), flags, index, 0, count) + data)
        return errname(rc)

    def close(self) -> None:
        for name in ("fd", "group", "container"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def eventfd_value(efd: int) -> int | None:
    """The counter (read resets it), or None when nothing was signalled."""
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return None


# ---------------------------------------------------------------- cases
class Env:
    def __init__(self, bdf: str, driver: str = "vfio-pci", no_companion: str | None = None):
        self.bdf = bdf
        self.driver = driver
        self.no_companion = no_companion    # a second device, without an ACPI companion
        self._device: VfioDevice | None = None
        self._error: str | None = None

    @property
    def device(self) -> VfioDevice:
        if self._device is None:
            if self._error:
                raise kselftest.Skip(self._error)
            try:
                self._device = VfioDevice(self.bdf, self.driver)
            except kselftest.Skip as e:
                self._error = str(e)
                raise
        return self._device

    def reopen(self) -> VfioDevice:
        """Close the device fd, group and container, and open them again."""
        self.close()
        self._device = VfioDevice(self.bdf, self.driver)
        return self._device

    def close(self) -> None:
        if self._device:
            self._device.close()
            self._device = None


def needs_low_power(env: Env) -> str | None:
    """Absent only when the kernel says it does not know the feature (ENOTTY, what a
    kernel before 6.1 answers); any other refusal is left to the cases to FAIL on."""
    d = env.device
    rc = feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY)
    if rc == "ENOTTY":
        return f"VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY absent (PROBE answers {rc})"
    return None


SUITE = kselftest.Registry(requires=(needs_low_power,))
CASES, case = SUITE.cases, SUITE.case


def _back_to_d0(d: VfioDevice) -> None:
    feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_EXIT)


@case("low_power")
def low_power_features_are_probed(t):
    """PROBE|SET answers 0 for ENTRY, ENTRY_WITH_WAKEUP and EXIT on an open device in D0."""
    d = t.env.device
    t.expect("device power after open", d.dev.power(), D0)
    for f, name in FEATURE_NAMES.items():
        t.expect(f"PROBE|SET {name}",
                 feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | f), "0")


@case("low_power")
def low_power_get_is_einval(t):
    """The low-power features are SET-only: GET is EINVAL, as a PROBE of GET is."""
    d = t.env.device
    for f, name in FEATURE_NAMES.items():
        t.expect(f"GET {name}", feature(d.fd, VFIO_DEVICE_FEATURE_GET | f), "EINVAL")
    t.expect("PROBE|GET LOW_POWER_ENTRY",
             feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | LOW_POWER_ENTRY),
             "EINVAL")


@case("low_power")
def low_power_entry_suspends_and_exit_resumes(t):
    """LOW_POWER_ENTRY: runtime-suspended in D3hot (PMCSR and power_state agree);
    LOW_POWER_EXIT: active in D0 again."""
    d = t.env.device
    try:
        t.require("LOW_POWER_ENTRY", feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
        t.expect("after ENTRY", d.dev.wait_power(D3HOT), D3HOT)
        t.expect("LOW_POWER_EXIT", feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_EXIT), "0")
        t.expect("after EXIT", d.dev.wait_power(D0), D0)
    finally:
        _back_to_d0(d)


@case("low_power")
def low_power_entry_twice_is_einval(t):
    """A second ENTRY while the first holds is EINVAL and leaves the device suspended."""
    d = t.env.device
    try:
        t.require("first LOW_POWER_ENTRY",
                  feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
        t.expect("second LOW_POWER_ENTRY",
                 feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "EINVAL")
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("LOW_POWER_ENTRY_WITH_WAKEUP on top",
                     feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                             wakeup_payload(efd)), "EINVAL")
        finally:
            os.close(efd)
        t.expect("device power", d.dev.wait_power(D3HOT), D3HOT)
    finally:
        _back_to_d0(d)
    t.expect("after EXIT", d.dev.wait_power(D0), D0)


@case("low_power")
def low_power_wakeup_eventfd_is_signalled_when_the_device_is_touched(t):
    """ENTRY_WITH_WAKEUP: suspended and the eventfd quiet; a config read through the
    device fd resumes the device, signals the eventfd once and ends low-power mode."""
    d = t.env.device
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        t.require("LOW_POWER_ENTRY_WITH_WAKEUP",
                  feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                          wakeup_payload(efd)), "0")
        t.expect("after ENTRY_WITH_WAKEUP", d.dev.wait_power(D3HOT), D3HOT)
        t.expect("eventfd before the touch", eventfd_value(efd), None)
        ids = d.touch()
        t.observed["vendor_device"] = f"{ids & 0xffff:04x}:{ids >> 16:04x}"
        t.expect("config read through the device fd works", ids & 0xffff != 0xffff, True)
        t.expect("eventfd after the touch", eventfd_value(efd), 1)
        t.expect("device power after the touch", d.dev.wait_power(D0), D0)
        t.expect("eventfd stays quiet afterwards", eventfd_value(efd), None)
        t.expect("ENTRY again after the wakeup (low-power mode had ended)",
                 feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
    finally:
        _back_to_d0(d)
        os.close(efd)


@case("low_power")
def low_power_negative_eventfd_is_einval(t):
    """ENTRY_WITH_WAKEUP with wakeup_eventfd = -1 is EINVAL and the device stays in D0."""
    d = t.env.device
    t.expect("ENTRY_WITH_WAKEUP fd -1",
             feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                     wakeup_payload(-1)), "EINVAL")
    t.expect("device power", d.dev.power(), D0)


@case("low_power")
def unknown_feature_is_enotty(t):
    """A feature number no kernel defines is ENOTTY, for SET and for PROBE."""
    d = t.env.device
    t.expect("SET 0x7fff", feature(d.fd, VFIO_DEVICE_FEATURE_SET | UNKNOWN_FEATURE), "ENOTTY")
    t.expect("PROBE|SET 0x7fff",
             feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | UNKNOWN_FEATURE),
             "ENOTTY")


def needs_acpi_notify(env: Env) -> str | None:
    """Decided by the kernel's own answers: the device's IRQ count and index 5."""
    d = env.device
    rc, _ = d.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
    if d.num_irqs <= VFIO_PCI_ACPI_IRQ_INDEX and rc == "EINVAL":
        return (f"index 5 is VFIO_PCI_NUM_IRQS: ACPI notify forwarding absent "
                f"(num_irqs {d.num_irqs}, GET_IRQ_INFO(5) {rc})")
    return None


def needs_companion(env: Env) -> str | None:
    if not (env.device.dev.path / "firmware_node").exists():
        return f"{env.bdf} has no ACPI companion (firmware_node): nothing can notify it"
    return None


def needs_value_counter(env: Env) -> str | None:
    """The series passes the notify value as the eventfd counter, through
    eventfd_signal(ctx, n).  Kernels where eventfd_signal() is no longer a function
    (an inline that adds 1, since "eventfd: simplify eventfd_signal()") cannot."""
    try:
        with open("/proc/kallsyms") as fh:
            exported = any(line.split()[2:3] == ["eventfd_signal"] for line in fh)
    except OSError as e:
        return f"cannot read /proc/kallsyms to tell how eventfd_signal() works ({e})"
    if not exported:
        return ("eventfd_signal() takes no count on this kernel (an inline that adds 1; "
                "no eventfd_signal symbol): the series' notify value cannot travel as "
                "the eventfd counter")
    return None


def needs_raise_hook(env: Env) -> str | None:
    if not RAISE_HOOK.exists():
        return (f"nothing to raise a chosen notify value with: {RAISE_HOOK} (the test "
                f"hook of guestpm's {STANDIN_DRIVER} module) is not there")
    return None


ACPI_NOTIFY = (needs_acpi_notify, needs_companion)
ACPI_NOTIFY_VALUES = ACPI_NOTIFY + (needs_value_counter, needs_raise_hook)


def wait_value(efd: int, timeout: float = NOTIFY_WAIT) -> int | None:
    """The eventfd's counter once it is signalled (read, so the next value may come),
    or None after `timeout`."""
    p = select.poll()
    p.register(efd, select.POLLIN)
    if not p.poll(timeout * 1000):
        return None
    return eventfd_value(efd)


def raise_notify(bdf: str, *values: int) -> None:
    """Have the firmware notify `bdf`'s companion with each value, through the SSDT's
    GPMN method (evaluated by the stand-in's test hook)."""
    for v in values:
        RAISE_HOOK.write_text(f"{bdf} {v:#x}")
    time.sleep(NOTIFY_SETTLE)


class Notify:
    """An eventfd registered as the trigger of IRQ index 5; unregistered on exit."""

    def __init__(self, t, d: VfioDevice):
        self.t, self.d = t, d
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def __enter__(self) -> "Notify":
        self.t.require("SET_IRQS(5) eventfd", self.register(self.efd), "0")
        return self

    def register(self, efd: int) -> str:
        return self.d.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
                               VFIO_PCI_ACPI_IRQ_INDEX, struct.pack("<i", efd))

    def loopback(self) -> str:
        return self.d.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
                               VFIO_PCI_ACPI_IRQ_INDEX, b"\1")

    def __exit__(self, *exc) -> None:
        if self.d.fd is not None:
            self.register(-1)
        os.close(self.efd)


@case("acpi_notify", requires=(needs_acpi_notify,))
def acpi_notify_loopback_reaches_the_eventfd(t):
    """[unmerged series v5] IRQ index 5 is one eventfd-capable IRQ; with an eventfd as
    trigger, SET_IRQS DATA_BOOL loops back ACPI_NOTIFY_DEVICE_CHECK as the counter."""
    d = t.env.device
    rc, info = d.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
    t.require("GET_IRQ_INFO(5)", rc, "0")
    t.expect("index 5 count", info["count"], 1)
    t.expect("index 5 is eventfd-capable", bool(info["flags"] & VFIO_IRQ_INFO_EVENTFD), True)
    with Notify(t, d) as n:
        t.expect("eventfd before the loopback", eventfd_value(n.efd), None)
        t.expect("SET_IRQS(5) DATA_BOOL 1", n.loopback(), "0")
        t.expect("eventfd after the loopback", wait_value(n.efd), ACPI_NOTIFY_DEVICE_CHECK)


@case("acpi_notify", requires=ACPI_NOTIFY_VALUES)
def acpi_notify_values_arrive_in_order_one_at_a_time(t):
    """[unmerged series v5] Three notifies raised by the firmware before the VMM reads:
    each read gives exactly one value, in the order raised."""
    d = t.env.device
    values = [FIRMWARE_NOTIFY + 1, FIRMWARE_NOTIFY + 2, FIRMWARE_NOTIFY + 3]
    with Notify(t, d) as n:
        raise_notify(t.env.bdf, *values)
        t.expect("values read one by one", [wait_value(n.efd) for _ in values], values)
        t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=ACPI_NOTIFY_VALUES)
def acpi_notify_queue_keeps_the_newest_20_and_warns(t):
    """[unmerged series v5] One value in the eventfd and 21 waiting: the queue keeps 20,
    drops the oldest waiting one and says so in the kernel log."""
    d = t.env.device
    values = [FIRMWARE_NOTIFY + i for i in range(NOTIFY_QUEUE + 2)]
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(kmsg, 0, os.SEEK_END)          # only what this case makes the kernel say
        with Notify(t, d) as n:
            raise_notify(t.env.bdf, *values)
            got = [wait_value(n.efd) for _ in range(NOTIFY_QUEUE + 1)]
            t.expect("values read", got, [values[0]] + values[2:])
            t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)
        said = kmsg_records(kmsg)
    finally:
        os.close(kmsg)
    dropped = f"dropped the oldest value {values[1]:#x}"
    t.observed["kernel log"] = said[-5:]
    t.expect(f"kernel log says '{dropped}'", any(dropped in line for line in said), True)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_new_eventfd_keeps_the_queued_values(t):
    """[unmerged series v5] Replacing the trigger eventfd keeps what is queued: the
    value already signalled stays in the old eventfd, the rest go to the new one."""
    d = t.env.device
    with Notify(t, d) as n:
        for i in range(3):
            t.expect(f"loopback {i + 1}", n.loopback(), "0")
        new = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("SET_IRQS(5) the new eventfd", n.register(new), "0")
            t.expect("old eventfd: the value signalled before the swap", wait_value(n.efd),
                     ACPI_NOTIFY_DEVICE_CHECK)
            t.expect("old eventfd afterwards", wait_value(n.efd, NOTIFY_SETTLE), None)
            t.expect("new eventfd: the two queued values",
                     [wait_value(new), wait_value(new)], [ACPI_NOTIFY_DEVICE_CHECK] * 2)
            t.expect("new eventfd afterwards", wait_value(new, NOTIFY_SETTLE), None)
        finally:
            n.register(-1)
            os.close(new)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_disable_stops_delivery(t):
    """[unmerged series v5] After SET_IRQS(5) with fd -1, and after DATA_NONE with count
    0, nothing reaches the eventfd that was the trigger, not even a loopback."""
    d = t.env.device
    none = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE
    for how, disable in (("fd -1", lambda n: n.register(-1)),
                         ("DATA_NONE count 0",
                          lambda n: d.set_irqs(none, VFIO_PCI_ACPI_IRQ_INDEX, b"", count=0))):
        with Notify(t, d) as n:
            t.expect(f"disable with {how}", disable(n), "0")
            t.observed[f"loopback after {how}"] = n.loopback()    # the series says no errno
            t.expect(f"eventfd after {how}", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_registers_again_after_close(t):
    """[unmerged series v5] Closing the device removes its notify handler: after a
    re-open, registering works again and one loopback gives one value."""
    first = Notify(t, t.env.device)
    try:
        t.require("SET_IRQS(5) eventfd", first.register(first.efd), "0")
        t.expect("loopback before close", first.loopback(), "0")
        t.expect("value before close", wait_value(first.efd), ACPI_NOTIFY_DEVICE_CHECK)
        d = t.env.reopen()          # closed with the eventfd still registered, on purpose
    finally:
        os.close(first.efd)
    with Notify(t, d) as n:
        t.expect("loopback after re-open", n.loopback(), "0")
        t.expect("value after re-open", wait_value(n.efd), ACPI_NOTIFY_DEVICE_CHECK)
        t.expect("only one", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=(needs_acpi_notify,))
def acpi_notify_without_a_companion_is_enodev(t):
    """[unmerged series v5] A device without an ACPI companion has nothing to forward:
    SET_IRQS(5) with an eventfd is ENODEV."""
    if not t.env.no_companion:
        raise kselftest.Skip("no device without an ACPI companion given (--no-companion)")
    other = VfioDevice(t.env.no_companion, t.env.driver)
    try:
        # the premise, not the kernel's behaviour: a device with a companion given
        # as one without is a set-up error, and the case stops on it
        t.require(f"{other.dev.bdf} (given as without a companion) has a firmware_node",
                  (other.dev.path / "firmware_node").exists(), False)
        t.observed["GET_IRQ_INFO(5)"] = other.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("SET_IRQS(5) eventfd",
                     other.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
                                    VFIO_PCI_ACPI_IRQ_INDEX, struct.pack("<i", efd)), "ENODEV")
        finally:
            os.close(efd)
    finally:
        other.close()


@case("acpi_notify", requires=ACPI_NOTIFY + (needs_value_counter,))
def acpi_notify_firmware_notify_on_d3hot_reaches_the_eventfd(t):
    """[unmerged series v5, with vfio LOW_POWER_ENTRY] LOW_POWER_ENTRY puts the device
    into D3hot; the kernel evaluates its companion's _PS3, whose Notify (0x80) reaches
    the VMM's eventfd: a notification the firmware raised on its own."""
    d = t.env.device
    if needs_low_power(t.env):
        raise kselftest.Skip(needs_low_power(t.env))
    with Notify(t, d) as n:
        try:
            t.require("LOW_POWER_ENTRY",
                      feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
            t.expect("device power", d.dev.wait_power(D3HOT), D3HOT)
            t.expect("eventfd after D3hot", wait_value(n.efd), FIRMWARE_NOTIFY)
        finally:
            _back_to_d0(d)
        t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)


def run(bdf: str, select: str = "", driver: str = "vfio-pci",
        no_companion: str | None = None) -> dict:
    env = Env(bdf, driver, no_companion)
    try:
        results = [kselftest.run_case(c, env) for c in CASES if select in c.name]
        d = env._device
        return {"env": {"release": os.uname().release, "machine": os.uname().machine,
                        "bdf": bdf, "iommu_group": d.dev.iommu_group if d else None,
                        "num_irqs": d.num_irqs if d else None,
                        "driver": PciDevice(bdf).driver},
                "results": results}
    finally:
        env.close()


def _arguments(ap) -> None:
    ap.add_argument("bdf", help="the PCI function to hand to vfio-pci, e.g. 0000:00:09.0")
    ap.add_argument("--driver", default="vfio-pci",
                    help=f"vfio-pci, or a variant driver such as {STANDIN_DRIVER}")
    ap.add_argument("--no-companion", metavar="BDF",
                    help="a second device, without an ACPI companion (acpi_notify ENODEV case)")


def main(argv: list[str]) -> int:
    return kselftest.main(
        argv, "python3 -m harness.guest.vfio", CASES,
        lambda a: run(a.bdf, a.select, a.driver, a.no_companion),
        lambda out, a: (f"guestpm vfio-pci power uAPI on {out['env']['release']} "
                        f"({a.bdf}, {a.driver})"), _arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
