"""The VMM's MMIO devices: a PL011 UART and a PL031 RTC, as far as Linux's amba-pl011
and rtc-pl031 drivers use them (ARM DDI 0183 and DDI 0224 register maps).

Each device is plain state plus read/write by register offset; its interrupt output
is a callback `irq(level)` the VMM wires to a vGIC SPI.  No KVM here: the unit tests
drive them directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# AMBA PrimeCell identification (offsets 0xFE0..0xFFC): amba_device_add reads them to
# match a driver unless the device tree gives arm,primecell-periphid.
CELL_ID = 0xB105F00D


def _id_reg(periph_id: int, offset: int) -> int | None:
    if 0xFE0 <= offset <= 0xFEC:
        return (periph_id >> (8 * ((offset - 0xFE0) // 4))) & 0xFF
    if 0xFF0 <= offset <= 0xFFC:
        return (CELL_ID >> (8 * ((offset - 0xFF0) // 4))) & 0xFF
    return None


class Pl011:
    """UART: output goes to `sink` a byte at a time; the TX FIFO is always empty, so
    TXRIS is always raised and the line follows TXIM.  Input is `feed()`."""
    PERIPH_ID = 0x00041011
    DR, RSR, FR, IBRD, FBRD, LCRH, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR = \
        0x00, 0x04, 0x18, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44, 0x48
    FR_RXFE, FR_TXFE = 0x10, 0x80
    INT_RX, INT_TX, INT_RT = 0x10, 0x20, 0x40

    def __init__(self, sink: Callable[[bytes], None], irq: Callable[[bool], None]):
        self.sink, self.irq = sink, irq
        self.regs = {self.IBRD: 0, self.FBRD: 0, self.LCRH: 0, self.CR: 0x300,
                     self.IFLS: 0x12, self.IMSC: 0, self.DMACR: 0}
        self.rx: list[int] = []
        self.level = False
        self.lock = threading.Lock()

    def _ris(self) -> int:
        return self.INT_TX | ((self.INT_RX | self.INT_RT) if self.rx else 0)

    def _update(self) -> None:
        level = bool(self._ris() & self.regs[self.IMSC])
        if level != self.level:
            self.level = level
            self.irq(level)

    def read(self, offset: int) -> int:
        with self.lock:
            ident = _id_reg(self.PERIPH_ID, offset)
            if ident is not None:
                return ident
            if offset == self.DR:
                value = self.rx.pop(0) if self.rx else 0
                self._update()
                return value
            if offset == self.FR:
                return self.FR_TXFE | (0 if self.rx else self.FR_RXFE)
            if offset == self.RIS:
                return self._ris()
            if offset == self.MIS:
                return self._ris() & self.regs[self.IMSC]
            return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        with self.lock:
            if offset == self.DR:
                self.sink(bytes([value & 0xFF]))
            elif offset in self.regs:
                self.regs[offset] = value & 0xFFFF
            # RSR/ECR and ICR: nothing is latched that a write would clear
            self._update()

    def feed(self, data: bytes) -> None:
        with self.lock:
            self.rx.extend(data)
            self._update()


class Pl031:
    """RTC: seconds since the epoch, an alarm (MR) that raises RIS when the counter
    reaches it.  `clock` is the VMM's wall clock; `on_event(name, **fields)` logs
    what the guest did with the alarm (armed, fired, cleared)."""
    PERIPH_ID = 0x00041031
    DR, MR, LR, CR, IMSC, RIS, MIS, ICR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C

    def __init__(self, irq: Callable[[bool], None],
                 on_event: Callable[..., object] = lambda name, **f: None,
                 clock: Callable[[], float] = time.time):
        self.irq, self.on_event, self.clock = irq, on_event, clock
        self.offset = 0.0               # guest seconds = clock() + offset
        self.mr = 0
        self.imsc = 0
        self.ris = 0
        self.cr = 1
        self.level = False
        self.lock = threading.Lock()
        self.fired = threading.Event()  # set each time the alarm matches
        self.timer: threading.Timer | None = None

    def now(self) -> int:
        return int(self.clock() + self.offset) & 0xFFFFFFFF

    def _update(self) -> None:
        level = bool(self.ris & self.imsc)
        if level != self.level:
            self.level = level
            self.irq(level)

    def _arm(self) -> None:
        if self.timer:
            self.timer.cancel()
            self.timer = None
        delay = self.mr - (self.clock() + self.offset)
        if self.mr <= self.now():
            return                      # a match in the past does not fire (DDI 0224)
        self.timer = threading.Timer(delay, self.match)
        self.timer.daemon = True
        self.timer.start()

    def match(self) -> None:
        """The match time came (the armed timer calls this): latch the interrupt, which
        raises the line when unmasked."""
        with self.lock:
            # Stamped before the line goes up: the vCPU it wakes logs its own exit from
            # another thread, and that record must not precede the match that caused it.
            self.on_event("rtc-alarm-fired", alarm=self.mr, irq_enabled=bool(self.imsc & 1))
            self.ris |= 1
            self._update()
        self.fired.set()

    def read(self, offset: int) -> int:
        with self.lock:
            ident = _id_reg(self.PERIPH_ID, offset)
            if ident is not None:
                return ident
            return {self.DR: self.now(), self.MR: self.mr, self.LR: self.now(),
                    self.CR: self.cr, self.IMSC: self.imsc, self.RIS: self.ris,
                    self.MIS: self.ris & self.imsc}.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        with self.lock:
            if offset == self.MR:
                self.mr = value & 0xFFFFFFFF
                self._arm()
                self.on_event("rtc-alarm-set", alarm=self.mr, now=self.now(),
                              in_s=self.mr - self.now())
            elif offset == self.LR:
                self.offset = (value & 0xFFFFFFFF) - self.clock()
                self._arm()
            elif offset == self.CR:
                self.cr = value & 1 or self.cr
            elif offset == self.IMSC:
                self.imsc = value & 1
            elif offset == self.ICR:
                self.ris &= ~value & 1
            self._update()

    def close(self) -> None:
        if self.timer:
            self.timer.cancel()
