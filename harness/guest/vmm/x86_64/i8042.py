"""The one thing of a PC keyboard controller the L2 kernel uses: its reset line.
With reboot=k (the L2 command line's) Linux waits for the controller's input buffer
to drain (status port 0x64, bit 1), then writes 0xFE, "pulse the reset line", to it.
An absent controller reads all ones, so that wait would run its full count of port
reads, each an exit to this VMM.  The FADT says there is no 8042: the i8042 driver
leaves it alone."""

from __future__ import annotations

from collections.abc import Callable

STATUS_PORT = 0x64
CMD_PULSE_RESET = 0xFE


class ResetPort:
    def __init__(self, on_reset: Callable[[], None]):
        self.on_reset = on_reset

    def read(self, offset: int) -> int:
        return 0                        # output and input buffers empty

    def write(self, offset: int, value: int) -> None:
        if value & 0xFF == CMD_PULSE_RESET:
            self.on_reset()
