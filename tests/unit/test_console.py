"""Kernel messages printed while a console command runs are not its output."""

from pathlib import Path

import pytest

from harness.vm.console import split_kernel_messages

GOLDEN = Path(__file__).parent / "golden" / "console"


def test_kernel_records_are_taken_out_of_a_command_output_even_mid_line():
    output, kernel = split_kernel_messages((GOLDEN / "run-interleaved.txt").read_text())
    assert output == "7946f7761650d82a\n"
    assert kernel == [
        "[   41.118093] clocksource: timekeeping watchdog on CPU1: Marking clocksource "
        "'tsc' as unstable because the skew is too large:",
        "[   41.120412] clocksource: Switched to clocksource hpet",
    ]


def test_output_without_kernel_records_is_untouched():
    text = "a [not a timestamp] line\n[1.5] short\n  [  3.000000]no space after\n"
    assert split_kernel_messages(text) == (text, [])


def _console(tmp_path):
    import socket

    from harness.vm.console import Console
    ours, theirs = socket.socketpair()
    return Console(ours, tmp_path / "console.log"), theirs


def test_silence_is_bounded_and_a_byte_ends_it(tmp_path):
    import time
    con, guest = _console(tmp_path)
    try:
        t = time.monotonic()
        assert con.wait_output(0.6) is False
        assert time.monotonic() - t < 3
        guest.sendall(b"x")
        assert con.wait_output(2) is True
    finally:
        guest.close()
        con.close()


@pytest.mark.parametrize("kernel_line", [
    b"EFI stub: Booting Linux Kernel...\r\n",                          # 5.10 - 6.12
    b"[    0.000000] Linux version 7.2.13+deb14-arm64 (debian-kernel@lists.debian.org) "
    b"(aarch64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0, GNU ld) #1 SMP\r\n",  # 7.2: quiet stub
])
def test_after_firmware_only_the_kernel_line_counts(tmp_path, kernel_line):
    from harness.profiles import ARM64_UEFI
    con, guest = _console(tmp_path)
    try:
        guest.sendall(b"UEFI firmware (version  built at 13:10:49 on Nov  5 2024)\r\n"
                      b"\x1b[2J\x1b[01;01H\x1b[=3h")                           # EDK2 talks
        assert con.wait_output(0.6, pattern=ARM64_UEFI.kernel_started) is False
        guest.sendall(kernel_line)
        assert con.wait_output(2, pattern=ARM64_UEFI.kernel_started) is True
    finally:
        guest.close()
        con.close()
