"""A PCI function handed to vfio-pci: its power state in sysfs (PciDevice), the bind,
and the container/group/device fds (VfioDevice).  Stdlib only; runs in the kernel
under test as a host."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from pathlib import Path

from . import kselftest
from .vfio_uapi import (
    DEVICE_INFO,
    GROUP_STATUS,
    IRQ_INFO,
    IRQ_SET,
    PCI_D_STATES,
    REGION_INFO,
    VFIO_API_VERSION,
    VFIO_CHECK_EXTENSION,
    VFIO_DEVICE_GET_INFO,
    VFIO_DEVICE_GET_IRQ_INFO,
    VFIO_DEVICE_GET_REGION_INFO,
    VFIO_DEVICE_SET_IRQS,
    VFIO_GET_API_VERSION,
    VFIO_GROUP_FLAGS_VIABLE,
    VFIO_GROUP_GET_DEVICE_FD,
    VFIO_GROUP_GET_STATUS,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_SET_IOMMU,
    VFIO_TYPE1_IOMMU,
    VFIO_TYPE1v2_IOMMU,
    errname,
    ioctl,
)


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
        error = os.strerror(e.errno) if e.errno is not None else str(e)
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
        out = self._read(self.group, VFIO_GROUP_GET_STATUS,
                         GROUP_STATUS.pack(GROUP_STATUS.size, 0), "GROUP_GET_STATUS")
        if not GROUP_STATUS.unpack(out)[1] & VFIO_GROUP_FLAGS_VIABLE:
            others = sorted(p.name for p in (Path("/sys/kernel/iommu_groups")
                                             / str(self.dev.iommu_group) / "devices").iterdir())
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
        out = self._read(self.fd, VFIO_DEVICE_GET_INFO,
                         DEVICE_INFO.pack(DEVICE_INFO.size, 0, 0, 0), "DEVICE_GET_INFO")
        _, _, self.num_regions, self.num_irqs = DEVICE_INFO.unpack(out)
        out = self._read(self.fd, VFIO_DEVICE_GET_REGION_INFO,
                         REGION_INFO.pack(REGION_INFO.size, 0, VFIO_PCI_CONFIG_REGION_INDEX,
                                          0, 0, 0), "DEVICE_GET_REGION_INFO")
        self.config_offset = REGION_INFO.unpack(out)[5]

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, f"VFIO_{what}: {os.strerror(-rc)}")

    @classmethod
    def _read(cls, fd: int, request: int, arg: bytes, what: str) -> bytes:
        """The kernel's copy of `arg`; a failed ioctl raises, naming it."""
        rc, out = ioctl(fd, request, arg)
        cls._check(rc, what)
        assert out is not None, "a bytes argument always comes back"
        return out

    def touch(self) -> int:
        """Read the vendor/device id through the device fd: a user access, which resumes
        a device in low-power mode."""
        return int.from_bytes(os.pread(self.fd, 4, self.config_offset), "little")

    def irq_info(self, index: int) -> tuple[str, dict | None]:
        rc, out = ioctl(self.fd, VFIO_DEVICE_GET_IRQ_INFO, IRQ_INFO.pack(IRQ_INFO.size, 0, index, 0))
        if rc < 0 or out is None:
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
