"""The ACPI fixed hardware the FADT of acpi.py describes, on port I/O at acpi.PM_BASE:
PM1a status and enable, PM1a control, the PM timer and the GPE0 status and enable
registers, with the SCI they drive.  The VMM raises events on demand
(raise_power_button, raise_gpe); the guest's writes to PM1a control ask for a sleep
state (S5 is soft-off).

Offsets from PM_BASE (acpi.py): 0x00 PM1_STS, 0x02 PM1_EN, 0x04 PM1_CNT, 0x08 PM_TMR,
0x20 GPE0_STS (2 bytes: GPEs 0..15), 0x22 GPE0_EN.  Reads may span registers (a 32-bit
read of PM1_EVT returns status and enable); a write reaches the one register at its
offset, its own width, as ACPICA writes each register (status and enable at 16 bits,
GPE registers a byte at a time).  Status bits are write-one-to-clear.

No KVM here: the SCI is a callback `irq(level)` the backend wires to the IO-APIC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import acpi

STS, EN, CNT, TMR = 0x00, 0x02, 0x04, 0x08
GPE_STS = acpi.GPE0_BLK - acpi.PM_BASE
GPE_EN = GPE_STS + acpi.GPE0_BLK_LEN // 2
GPE_BYTES = acpi.GPE0_BLK_LEN // 2
WIDTH = {STS: 2, EN: 2, CNT: 2, TMR: 4, **{GPE_STS + i: 1 for i in range(GPE_BYTES)},
         **{GPE_EN + i: 1 for i in range(GPE_BYTES)}}

TMR_STS, GBL_STS, PWRBTN_STS, SLPBTN_STS, RTC_STS, WAK_STS = \
    1 << 0, 1 << 5, 1 << 8, 1 << 9, 1 << 10, 1 << 15
PM1_EVENTS = TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS   # enable-able bits
SCI_EN, SLP_EN = 1 << 0, 1 << 13
SLP_TYP_SHIFT, SLP_TYP_MASK = 10, 0x7
PM_TIMER_HZ = 3_579_545          # the ACPI PM timer's fixed rate; 24 bits wide


class PmRegisters:
    def __init__(self, irq: Callable[[bool], None],
                 on_sleep: Callable[[int], None] = lambda slp_typ: None,
                 on_event: Callable[..., object] = lambda name, **fields: None,
                 clock: Callable[[], float] = time.monotonic):
        self.irq, self.on_sleep, self.on_event, self.clock = irq, on_sleep, on_event, clock
        self.t0 = clock()
        self.lock = threading.Lock()
        self.pm1_sts = self.pm1_en = 0
        self.pm1_cnt = SCI_EN            # no SMI command port: always in ACPI mode
        self.gpe_sts = self.gpe_en = 0   # GPEs 0..15, a bit each
        self.level = False

    # ---------------------------------------------------------------- guest side
    def _byte(self, offset: int) -> int:
        """The byte at `offset` of the register file as the guest reads it."""
        for base, value, width in ((STS, self.pm1_sts, 2), (EN, self.pm1_en, 2),
                                   (CNT, self.pm1_cnt & ~SLP_EN, 2),
                                   (TMR, self.timer(), 4), (GPE_STS, self.gpe_sts, GPE_BYTES),
                                   (GPE_EN, self.gpe_en, GPE_BYTES)):
            if base <= offset < base + width:
                return (value >> (8 * (offset - base))) & 0xFF
        return 0xFF                      # a hole in the block: as an empty ISA port

    def timer(self) -> int:
        return int((self.clock() - self.t0) * PM_TIMER_HZ) & 0xFF_FFFF

    def read(self, offset: int) -> int:
        with self.lock:
            return int.from_bytes(bytes(self._byte(offset + i) for i in range(4)), "little")

    def write(self, offset: int, value: int) -> None:
        width = WIDTH.get(offset)
        if width is None:
            return
        value &= (1 << (8 * width)) - 1
        sleep = changed = None
        with self.lock:
            if offset == STS:
                self.pm1_sts &= ~value
            elif offset == EN:
                self.pm1_en = value & PM1_EVENTS
            elif offset == CNT:
                self.pm1_cnt = (value & ~SLP_EN) | SCI_EN
                if value & SLP_EN:
                    sleep = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK
            elif GPE_STS <= offset < GPE_STS + GPE_BYTES:
                self.gpe_sts &= ~(value << (8 * (offset - GPE_STS)))
            elif GPE_EN <= offset < GPE_EN + GPE_BYTES:
                shift = 8 * (offset - GPE_EN)
                was = self.gpe_en
                self.gpe_en = (self.gpe_en & ~(0xFF << shift)) | (value << shift)
                if self.gpe_en != was:
                    changed = self.gpe_en
            self._update()
        if changed is not None:          # a few times a boot and a suspend: which GPEs
            self.on_event("gpe-enable", mask=hex(changed))   # the guest has enabled
        if sleep is not None:
            self.on_event("sleep-request", slp_typ=sleep)
            self.on_sleep(sleep)

    # ---------------------------------------------------------------- VMM side
    def raise_power_button(self) -> None:
        """The power button's fixed event: PWRBTN_STS, an SCI while PWRBTN_EN is set."""
        with self.lock:
            self.pm1_sts |= PWRBTN_STS
            self._update()
        self.on_event("raise", what="power-button", sci=self.level)

    def raise_gpe(self, n: int) -> None:
        """GPE `n`'s status bit; an SCI while the guest has enabled it."""
        if not 0 <= n < 8 * GPE_BYTES:
            raise ValueError(f"GPE {n}: this GPE0 block has GPEs 0..{8 * GPE_BYTES - 1}")
        with self.lock:
            self.gpe_sts |= 1 << n
            self._update()
        self.on_event("raise", what=f"gpe{n}", sci=self.level)

    def _update(self) -> None:
        """The SCI follows (status & enable) of PM1 and GPE0, SCI_EN set (caller locks)."""
        level = bool(self.pm1_cnt & SCI_EN) and bool(
            (self.pm1_sts & self.pm1_en & PM1_EVENTS) or (self.gpe_sts & self.gpe_en))
        if level != self.level:
            self.level = level
            self.irq(level)
