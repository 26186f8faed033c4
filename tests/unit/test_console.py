"""Kernel messages printed while a console command runs are not its output."""

from pathlib import Path

from harness.console import split_kernel_messages

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
    from harness.console import Console
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


def test_after_firmware_only_the_kernel_line_counts(tmp_path):
    con, guest = _console(tmp_path)
    try:
        guest.sendall(b"\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\n")   # firmware talks
        assert con.wait_output(0.6, pattern=r"EFI stub: Booting Linux Kernel") is False
        guest.sendall(b"EFI stub: Booting Linux Kernel...\r\n")
        assert con.wait_output(2, pattern=r"EFI stub: Booting Linux Kernel") is True
    finally:
        guest.close()
        con.close()
