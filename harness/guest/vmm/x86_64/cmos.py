"""The CMOS RTC on ports 0x70/0x71, read-only: the host's wall clock in BCD, the
update-in-progress bit clear, the time valid.  Linux reads it once at boot for the wall
clock and waits while UIP is set; an absent RTC (all ones) keeps UIP set forever."""

from __future__ import annotations

import time

SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D, CENTURY = 0x0A, 0x0B, 0x0C, 0x0D, 0x32
REG_A_DIVIDER = 0x26        # 32.768 kHz time base, 1024 Hz rate, UIP clear
REG_B_24H = 0x02            # 24-hour mode, BCD
REG_D_VRT = 0x80            # the RAM and time are valid


def bcd(n: int) -> int:
    return ((n // 10) << 4) | (n % 10)


class Cmos:
    def __init__(self, clock=time.time):
        self.clock = clock
        self.index = 0

    def register(self, index: int) -> int:
        """The register at `index` now (weekday 1 = Sunday, as the MC146818 counts)."""
        t = time.gmtime(self.clock())
        return {SECONDS: bcd(t.tm_sec), MINUTES: bcd(t.tm_min), HOURS: bcd(t.tm_hour),
                WEEKDAY: bcd((t.tm_wday + 1) % 7 + 1), DAY: bcd(t.tm_mday), MONTH: bcd(t.tm_mon),
                YEAR: bcd(t.tm_year % 100), CENTURY: bcd(t.tm_year // 100),
                REG_A: REG_A_DIVIDER, REG_B: REG_B_24H, REG_C: 0, REG_D: REG_D_VRT
                }.get(index, 0)

    def read(self, offset: int) -> int:
        return self.register(self.index) if offset == 1 else 0xFF

    def write(self, offset: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0x7F          # bit 7 masks NMIs
