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
