"""The VMM's one device bus: MMIO and port-I/O regions, and the dispatch of the exits
KVM hands userspace for them.  A device is anything with read(offset) -> int and
write(offset, value); the bus counts the exits per device, and per space the ones no
device claimed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

MMIO, PIO = "mmio", "pio"


class Device(Protocol):
    def read(self, offset: int) -> int: ...

    def write(self, offset: int, value: int) -> None: ...


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
            if r:
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
                    r.device.write(ex.port - r.base,
                                   int.from_bytes(data[i * size:(i + 1) * size], "little"))
        else:
            vcpu.complete_io_in(ex, b"".join(
                ((r.device.read(ex.port - r.base) if r else mask) & mask).to_bytes(size, "little")
                for _ in range(ex.count)))
        self.seconds += time.monotonic() - t
