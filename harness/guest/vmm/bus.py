"""The VMM's one device bus: MMIO and port-I/O regions, and the dispatch of the exits
KVM hands userspace for them.  A device is anything with read(offset) -> int and
write(offset, value); the bus counts the exits per device, and per space the ones no
device claimed.  A Trap is a device that wants to know which vCPU wrote what: each
write is handed over with the vCPU's id and the access's size (a guest's call into
firmware the VMM answers, timed by the caller's log)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MMIO, PIO = "mmio", "pio"


class Device(Protocol):
    def read(self, offset: int) -> int: ...

    def write(self, offset: int, value: int) -> None: ...


class Trap:
    """A write-only device that is told who wrote: on_write(vcpu_id, offset, value,
    size).  Reads return `fill`."""

    def __init__(self, on_write: Callable[[int, int, int, int], None], fill: int = 0):
        self.on_write, self.fill = on_write, fill

    def read(self, offset: int) -> int:
        return self.fill

    def write(self, offset: int, value: int) -> None:    # a write without a vCPU: a test's
        self.on_write(-1, offset, value, 0)


@dataclass(frozen=True)
class Region:
    space: str
    base: int
    size: int
    name: str
    device: Device

    def __contains__(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size


class Bus:
    def __init__(self):
        self.regions: dict[str, list[Region]] = {MMIO: [], PIO: []}
        self.counts: dict[str, dict[str, int]] = {MMIO: {}, PIO: {}}
        self.seconds = 0.0              # spent in the devices' Python, all exits

    def add(self, space: str, base: int, size: int, name: str, device: Device) -> Region:
        new = Region(space, base, size, name, device)
        for r in self.regions[space]:
            if r.base < base + size and base < r.base + r.size:
                raise ValueError(f"{space} {name} at {base:#x}+{size:#x} overlaps {r.name}")
        self.regions[space].append(new)
        return new

    def find(self, space: str, addr: int) -> Region | None:
        return next((r for r in self.regions[space] if addr in r), None)

    def _count(self, space: str, region: Region | None) -> None:
        name = region.name if region else "unclaimed"
        self.counts[space][name] = self.counts[space].get(name, 0) + 1

    def mmio(self, vcpu, ex) -> None:
        """An MMIO exit; an unclaimed access reads as zero and ignores writes."""
        t = time.monotonic()
        r = self.find(MMIO, ex.phys_addr)
        self._count(MMIO, r)
        if ex.is_write:
            if r and isinstance(r.device, Trap):
                r.device.on_write(vcpu.id, ex.phys_addr - r.base, ex.value, ex.len)
            elif r:
                r.device.write(ex.phys_addr - r.base, ex.value)
        else:
            vcpu.complete_mmio_read(r.device.read(ex.phys_addr - r.base) if r else 0, ex.len)
        self.seconds += time.monotonic() - t

    def pio(self, vcpu, ex) -> None:
        """An IO exit: `count` accesses of `len` bytes (a string instruction makes
        several); an unclaimed port reads as all ones, as on a PC's bus."""
        t = time.monotonic()
        r = self.find(PIO, ex.port)
        self._count(PIO, r)
        size, mask = ex.len, (1 << (8 * ex.len)) - 1
        if ex.is_write:
            data = vcpu.io_data(ex)
            if r:
                for i in range(ex.count):
                    value = int.from_bytes(data[i * size:(i + 1) * size], "little")
                    if isinstance(r.device, Trap):
                        r.device.on_write(vcpu.id, ex.port - r.base, value, size)
                    else:
                        r.device.write(ex.port - r.base, value)
        else:
            vcpu.complete_io_in(ex, b"".join(
                ((r.device.read(ex.port - r.base) if r else mask) & mask).to_bytes(size, "little")
                for _ in range(ex.count)))
        self.seconds += time.monotonic() - t
