"""A 16550A UART on port I/O, enough for Linux's 8250 driver: transmit only (every byte
goes out at once, so the transmitter is always empty), the scratch and loopback tests of
its probe, FIFOs reported, and the transmit-empty interrupt the tty layer waits for."""

from __future__ import annotations

from collections.abc import Callable

THR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
IER_THRI = 0x02
IIR_NONE, IIR_THRI, IIR_FIFOS = 0x01, 0x02, 0xC0
LCR_DLAB = 0x80
LSR_THRE, LSR_TEMT = 0x20, 0x40
MCR_LOOP = 0x10
MSR_IDLE = 0xB0                      # DCD, DSR, CTS: a line with a terminal on it


class Uart16550:
    def __init__(self, out: Callable[[bytes], None], irq: Callable[[bool], None]):
        self.out, self.irq = out, irq
        self.regs = {IER: 0, LCR: 0, MCR: 0, SCR: 0}
        self.divisor = [0x01, 0x00]
        self.fifos = False
        self.thri_pending = False
        self.level = False

    def _update_irq(self) -> None:
        level = self.thri_pending and bool(self.regs[IER] & IER_THRI)
        if level != self.level:
            self.level = level
            self.irq(level)

    def read(self, offset: int) -> int:
        dlab = self.regs[LCR] & LCR_DLAB
        if offset in (THR, IER) and dlab:
            return self.divisor[offset]
        if offset == THR:
            return 0                                  # nothing is ever received
        if offset == IIR:
            fifo = IIR_FIFOS if self.fifos else 0
            if self.thri_pending and self.regs[IER] & IER_THRI:
                self.thri_pending = False             # reading IIR acknowledges it
                self._update_irq()
                return fifo | IIR_THRI
            return fifo | IIR_NONE
        if offset == LSR:
            return LSR_THRE | LSR_TEMT
        if offset == MSR:
            mcr = self.regs[MCR]
            if mcr & MCR_LOOP:    # RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD
                return (((mcr >> 1) & 1) << 4) | ((mcr & 1) << 5) | \
                    (((mcr >> 2) & 1) << 6) | (((mcr >> 3) & 1) << 7)
            return MSR_IDLE
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        value &= 0xFF
        dlab = self.regs[LCR] & LCR_DLAB
        if offset in (THR, IER) and dlab:
            self.divisor[offset] = value
        elif offset == THR:
            if not self.regs[MCR] & MCR_LOOP:
                self.out(bytes([value]))
            self.thri_pending = True                  # sent at once: empty again
        elif offset == IIR:                           # FCR
            self.fifos = bool(value & 1)
        elif offset == IER:
            if value & IER_THRI and not self.regs[IER] & IER_THRI:
                self.thri_pending = True              # enabling THRI while empty raises it
            self.regs[IER] = value & 0x0F
        elif offset in self.regs:
            self.regs[offset] = value
        self._update_irq()
