"""A kernel record that lands inside a line the harness reads changes nothing it reads.

printk writes a record whole, but on the serial line it can land inside a line the
shell is writing (issue 32: /init's ready line, then a record, then the line's newline;
the harness waited 300 s).  The console mends such lines (console.LineMender): here the
issue's own console, and each harness line torn at each position, read through a real
Console (socket, reader thread, pexpect) as Machine and Console.run read them."""

import re
import socket
from pathlib import Path

import pytest

from harness.vm import console as console_mod
from harness.vm.boot import HOSTKEY, INSMOD_FAILED, READY, RESTORED_OR_FRESH
from harness.vm.console import Console, LineMender, mend, split_kernel_messages
from harness.vm.power import IDLE_LINE

GOLDEN = Path(__file__).parent / "golden" / "console"
ISSUE = (GOLDEN / "ready-torn-5.10-arm64.txt").read_bytes().decode()
RECORD = "[    9.570005] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\r\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvcYp3X7ESaLwNYg0zSUBhBDENRhK6E0vRK406DE+0w"
NONCE = "2f247f5bf24c"


class Guest:
    """The far end of a Console's socket: what the guest prints, and what it was sent."""

    def __init__(self, tmp_path: Path):
        ours, self.sock = socket.socketpair()
        self.console = Console(ours, tmp_path / "console.log")

    def print(self, text: str, chunk: int | None = None) -> None:
        data = text.encode()
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])

    def close(self) -> None:
        self.sock.close()
        self.console.close()


@pytest.fixture
def guest(tmp_path):
    g = Guest(tmp_path)
    yield g
    g.close()


def boot_events(con: Console) -> tuple:
    """What Machine.wait_ready reads from a booting console."""
    key = con.expect(HOSTKEY, 5, "host key")
    ready = con.expect(READY, 5, "ready")
    return key.group(1), ready.group(1), ready.group(2)


def test_the_issue_console_yields_the_ready_line(guest):
    guest.print(ISSUE)
    assert boot_events(guest.console) == (KEY, "8.55", "5.10.0-32-arm64")
    tail = guest.console.tail().splitlines()
    assert RECORD.rstrip("\r\n") in tail                       # the record, on its own line
    assert "guestpm: ready uptime=8.55 release=5.10.0-32-arm64" in tail
    assert tail[-1] == "# "                                    # the prompt, still unfinished
    assert guest.console.log_path.read_bytes().decode() == ISSUE   # the log: as it came


def test_the_issue_console_byte_by_byte(guest):
    guest.print(ISSUE, chunk=1)
    assert boot_events(guest.console) == (KEY, "8.55", "5.10.0-32-arm64")


HOSTKEY_LINE = f"guestpm: hostkey {KEY} root@(none)\r\n"
READY_LINE = "guestpm: ready uptime=8.55 release=5.10.0-32-arm64\r\n"


def torn(line: str, at: int, record: str = RECORD) -> str:
    return line[:at] + record + line[at:]


@pytest.mark.parametrize("which", ["hostkey", "ready"])
def test_a_boot_line_torn_at_each_position_yields_the_same_events(tmp_path, which):
    line = HOSTKEY_LINE if which == "hostkey" else READY_LINE
    for at in range(len(line) + 1):
        text = torn(line, at) + READY_LINE if which == "hostkey" else \
            HOSTKEY_LINE + torn(line, at)
        (tmp_path / str(at)).mkdir()
        g = Guest(tmp_path / str(at))
        try:
            g.print(text + "\r\n# ", chunk=7)
            assert boot_events(g.console) == (KEY, "8.55", "5.10.0-32-arm64"), (at, text)
        finally:
            g.close()


@pytest.fixture
def fixed_nonce(monkeypatch):
    monkeypatch.setattr(console_mod.secrets, "token_hex", lambda n: NONCE)


BEGIN, END = f"@@B{NONCE}\r\n", f"@@E{NONCE}:5\r\n"
OUTPUT = "32a776437fe75ae9\r\n"


@pytest.mark.parametrize("which", ["begin", "output", "end"])
def test_a_command_torn_at_each_position_yields_the_same_result(tmp_path, fixed_nonce, which):
    """Console.run's markers and output, each torn by a record at each position: the
    same status and output, and the record among the command's kernel messages when it
    came while the command ran."""
    parts = {"begin": BEGIN, "output": OUTPUT, "end": END}
    for at in range(len(parts[which]) + 1):
        (tmp_path / str(at)).mkdir()
        g = Guest(tmp_path / str(at))
        try:
            text = "# " + "".join(torn(p, at) if k == which else p for k, p in parts.items())
            g.print(text + "# ", chunk=5)
            r = g.console.run("echo 32a776437fe75ae9; (exit 5)", timeout=5)
            assert (r.status, r.output) == (5, "32a776437fe75ae9\n"), (at, text)
            # the record is the command's unless it came before the begin marker ended
            # or after the end marker did
            during = not (which == "begin" and at < len(BEGIN) or which == "end" and
                          at == len(END))
            assert r.kernel == ([RECORD.rstrip("\r\n")] if during else []), (at, text)
        finally:
            g.close()


def test_the_kernel_lines_the_harness_waits_for_are_found_glued_to_a_line(guest):
    """A record printed while the shell sits at its prompt follows the prompt on the
    same console line: the s2idle wait and the hibernation restore still see it."""
    guest.print("# [  120.000001] PM: suspend-to-idle\r\n")
    assert guest.console.expect(IDLE_LINE, 5, "idle")
    guest.print("# [   12.000002] PM: hibernation: hibernation exit\r\n")
    assert guest.console.expect(RESTORED_OR_FRESH, 5, "restored").group(1)


def test_a_boot_of_the_kmsg_init_yields_its_events(guest):
    """Recorded: debian:6.12 arm64 under benchmarks/load.py's load, /init saying its
    lines through /dev/kmsg."""
    guest.print((GOLDEN / "boot-kmsg-6.12-arm64.txt").read_bytes().decode(), chunk=3)
    assert boot_events(guest.console) == (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH9UnGdeUqTURn0XgX5bAZCfxbLlv5rPakLfoa2fHKDD",
        "9.71", "6.12.117+deb13-arm64")


def test_init_lines_as_kernel_records_are_read_as_before():
    """guest-rootfs/init says its lines through /dev/kmsg: they come with a timestamp."""
    text = mend(f"[    6.1] guestpm: insmod kvm failed\r\n[    6.660000] {HOSTKEY_LINE}"
                f"[    6.670000] {READY_LINE}")
    assert HOSTKEY.search(text).group(1) == KEY
    assert READY.search(text).groups() == ("8.55", "5.10.0-32-arm64")
    assert INSMOD_FAILED.findall(text) == ["kvm"]


# ------------------------------------------------------------------ the mender, pure

def test_mending_moves_a_record_out_in_front_of_the_line_it_tore():
    assert mend(torn(READY_LINE, 20)) == RECORD + READY_LINE


def test_mending_is_the_same_whatever_the_chunks():
    text = ISSUE + BEGIN + torn(OUTPUT, 3) + torn(END, 5, "[   10.000000] a\r\n") + "# "
    whole = mend(text)
    for size in (1, 2, 3, 5, 8, 13, 64):
        m = LineMender()
        got = "".join(m.feed(text[i:i + size]) for i in range(0, len(text), size))
        assert got + m.flush() == whole, size


def test_two_records_inside_one_line_keep_their_order():
    line = "@@E2f247f5bf24c:0\r\n"
    a, b = "[    1.000000] first\r\n", "[    2.000000] second\r\n"
    assert mend(line[:4] + a + line[4:9] + b + line[9:]) == a + b + line


def test_a_torn_newline_pair_is_mended():
    assert mend("ready\r" + RECORD + "\n") == RECORD + "ready\r\n"


def test_an_unfinished_line_is_held_and_flushed():
    m = LineMender()
    assert m.feed("# ") == ""
    assert m.feed(RECORD) == RECORD          # a record at the prompt goes out at once
    assert m.held == "# "
    assert m.flush() == "# " and m.held == ""


def test_a_line_without_a_newline_is_not_held_forever():
    m = LineMender(limit=10)
    assert m.feed("x" * 11) == "x" * 11


def test_lines_without_records_pass_unchanged():
    text = ("a [not a timestamp] line\r\n[1.5] short\r\n  [  3.000000]no space after\r\n"
            "\x1b[2J\x1b[01;01H EFI stub: Booting Linux Kernel...\r\n")
    assert mend(text) == text


def test_a_command_output_mended_then_split():
    out, kernel = split_kernel_messages(mend(torn(OUTPUT, 6)).replace("\r\n", "\n"))
    assert out == "32a776437fe75ae9\n" and kernel == [RECORD.rstrip("\r\n")]


def test_the_kernel_record_pattern_starts_where_split_kernel_messages_does():
    assert re.fullmatch(console_mod.RECORD_START.pattern + r"[^\n]*\n", RECORD)
    assert console_mod.KERNEL_RECORD.fullmatch(RECORD)
