"""The reference VMM's arm64 machine: its memory map, and the device tree that tells
Linux about it.  The addresses follow QEMU's `virt` board, so a kernel that boots there
finds its devices at familiar places.  This is the one device map: the backend puts
the MMIO devices on the bus from it, and the device tree describes the same regions.
Pure (unit-tested against dtc)."""

from __future__ import annotations

from dataclasses import dataclass

from .fdt import U64, Node


@dataclass(frozen=True)
class Mmio:
    """A device's region and its interrupt (an SPI's INTID, 32..)."""
    name: str
    base: int
    size: int
    intid: int


GIC_DIST, GIC_DIST_SIZE = 0x0800_0000, 0x1_0000
GIC_REDIST, GIC_REDIST_SIZE = 0x080A_0000, 0x2_0000         # per vCPU
UART = Mmio("pl011", 0x0900_0000, 0x1000, intid=32 + 1)     # SPI 1
RTC = Mmio("pl031", 0x0901_0000, 0x1000, intid=32 + 2)      # SPI 2
RAM = 0x4000_0000
PMEM = 0x1_0000_0000             # above any RAM this VMM gives (at most 3 GiB)
# the self-tests' vCPU left on (Policy.vcpu_left_on) runs a WFI loop from a page of its
# own here, where QEMU's virt has flash: not in the device tree, so the guest never maps it
PARK, PARK_SIZE = 0x0, 0x1000

NR_IRQS = 64                    # 32 private + 32 shared: all this board uses

# what Linux needs for this board that Debian builds as modules (PL011 and PL031 are
# built in): the pmem region (of_pmem) and its block device (nd_pmem)
MODULES = ("of_pmem", "nd_pmem")

GIC_SPI, GIC_PPI = 0, 1
IRQ_LEVEL_HIGH = 4
# arch timer PPIs, in the binding's order: secure phys, non-secure phys, virt, hyp
TIMER_PPIS = (13, 14, 11, 10)

PHANDLE_GIC, PHANDLE_CLK = 1, 2


@dataclass(frozen=True)
class Layout:
    ram_size: int
    vcpus: int
    bootargs: str
    initrd: tuple[int, int] | None = None      # [start, end) guest physical
    pmem_size: int = 0                         # a persistent pmem region at PMEM


def _reg(base: int, size: int) -> list[U64]:
    return [U64(base), U64(size)]


def _spi(intid: int) -> list[int]:
    return [GIC_SPI, intid - 32, IRQ_LEVEL_HIGH]


def device_tree(layout: Layout) -> Node:
    root = Node("")
    root.prop("interrupt-parent", PHANDLE_GIC)
    root.prop("#size-cells", 2)
    root.prop("#address-cells", 2)
    root.prop("compatible", "linux,dummy-virt")
    root.prop("model", "guestpm reference VMM")

    chosen = root.child("chosen")
    chosen.prop("bootargs", layout.bootargs)
    chosen.prop("stdout-path", f"/{UART.name}@{UART.base:x}")
    if layout.initrd:
        chosen.prop("linux,initrd-start", U64(layout.initrd[0]))
        chosen.prop("linux,initrd-end", U64(layout.initrd[1]))

    mem = root.child(f"memory@{RAM:x}")
    mem.prop("device_type", "memory")
    mem.prop("reg", _reg(RAM, layout.ram_size))

    psci = root.child("psci")
    psci.prop("compatible", ["arm,psci-1.0", "arm,psci-0.2"])
    psci.prop("method", "hvc")

    cpus = root.child("cpus")
    cpus.prop("#size-cells", 0)
    cpus.prop("#address-cells", 1)
    for n in range(layout.vcpus):
        cpu = cpus.child(f"cpu@{n}")
        cpu.prop("device_type", "cpu")
        cpu.prop("compatible", "arm,arm-v8")
        cpu.prop("enable-method", "psci")
        cpu.prop("reg", n)

    gic = root.child(f"intc@{GIC_DIST:x}")
    gic.prop("compatible", "arm,gic-v3")
    gic.prop("#interrupt-cells", 3)
    gic.prop("interrupt-controller")
    gic.prop("#address-cells", 0)
    gic.prop("#redistributor-regions", 1)
    gic.prop("reg", _reg(GIC_DIST, GIC_DIST_SIZE)
             + _reg(GIC_REDIST, GIC_REDIST_SIZE * layout.vcpus))
    gic.prop("phandle", PHANDLE_GIC)

    timer = root.child("timer")
    timer.prop("compatible", "arm,armv8-timer")
    timer.prop("interrupts", [c for ppi in TIMER_PPIS for c in (GIC_PPI, ppi, IRQ_LEVEL_HIGH)])
    timer.prop("always-on")

    clk = root.child("apb-pclk")
    clk.prop("compatible", "fixed-clock")
    clk.prop("#clock-cells", 0)
    clk.prop("clock-frequency", 24_000_000)
    clk.prop("clock-output-names", "clk24mhz")
    clk.prop("phandle", PHANDLE_CLK)

    uart = root.child(f"{UART.name}@{UART.base:x}")
    uart.prop("compatible", ["arm,pl011", "arm,primecell"])
    uart.prop("reg", _reg(UART.base, UART.size))
    uart.prop("interrupts", _spi(UART.intid))
    uart.prop("clocks", [PHANDLE_CLK, PHANDLE_CLK])
    uart.prop("clock-names", ["uartclk", "apb_pclk"])

    rtc = root.child(f"{RTC.name}@{RTC.base:x}")
    rtc.prop("compatible", ["arm,pl031", "arm,primecell"])
    rtc.prop("reg", _reg(RTC.base, RTC.size))
    rtc.prop("interrupts", _spi(RTC.intid))
    rtc.prop("clocks", [PHANDLE_CLK])
    rtc.prop("clock-names", "apb_pclk")
    rtc.prop("wakeup-source")

    if layout.pmem_size:            # Documentation/devicetree/bindings/pmem/pmem-region.yaml
        pmem = root.child(f"pmem@{PMEM:x}")
        pmem.prop("compatible", "pmem-region")
        pmem.prop("reg", _reg(PMEM, layout.pmem_size))
    return root
