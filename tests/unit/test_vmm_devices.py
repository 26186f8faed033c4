"""The reference VMM's PL011 and PL031, the arm64 Image check, the L2 report parser."""

import struct

import pytest

from harness.guest.vmm import l2init
from harness.guest.vmm.arm64 import loader
from harness.guest.vmm.arm64.devices import Pl011, Pl031


def test_pl011_identifies_as_a_primecell_uart_and_drives_tx_by_txim():
    out, lines = bytearray(), []
    u = Pl011(out.extend, lines.append)
    ids = [u.read(o) for o in range(0xFE0, 0x1000, 4)]
    assert ids == [0x11, 0x10, 0x04, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
    assert u.read(Pl011.FR) == Pl011.FR_TXFE | Pl011.FR_RXFE     # TX empty, nothing to read
    u.write(Pl011.DR, ord("h"))
    assert out == b"h" and lines == []                 # no interrupt while TXIM is masked
    u.write(Pl011.IMSC, Pl011.INT_TX)
    assert lines == [True] and u.read(Pl011.MIS) == Pl011.INT_TX
    u.write(Pl011.IMSC, 0)
    assert lines == [True, False]


def test_pl011_input_raises_rx_until_read():
    lines = []
    u = Pl011(lambda b: None, lines.append)
    u.write(Pl011.IMSC, Pl011.INT_RX)
    u.feed(b"a")
    assert lines == [True] and not u.read(Pl011.FR) & Pl011.FR_RXFE
    assert u.read(Pl011.DR) == ord("a")
    assert lines == [True, False]


def test_pl031_counts_from_the_loaded_time_and_fires_its_alarm_once():
    now = [1000.0]
    lines, events = [], []
    # the line records how many events were logged when it moved
    r = Pl031(lambda level: lines.append(level) or order.append(len(events)),
              lambda name, **f: events.append((name, f)), clock=lambda: now[0])
    order = []
    assert r.read(0xFE0) == 0x31 and r.read(0xFF0) == 0x0D
    r.write(Pl031.LR, 5000)
    now[0] += 2
    assert r.read(Pl031.DR) == 5002
    r.write(Pl031.IMSC, 1)
    r.write(Pl031.MR, 5001)                       # in the past: never fires
    assert r.timer is None and r.ris == 0
    r.write(Pl031.MR, 5003)
    assert events[-1] == ("rtc-alarm-set", {"alarm": 5003, "now": 5002, "in_s": 1})
    r.timer.cancel()
    r.match()                                    # what the timer does when it expires
    assert r.ris == 1 and lines == [True] and r.fired.is_set()
    assert events[-1][0] == "rtc-alarm-fired"
    assert order == [len(events)], "the match is logged before the line wakes a vCPU"
    r.write(Pl031.ICR, 1)
    assert lines == [True, False] and r.read(Pl031.RIS) == 0
    r.close()


def test_pl031_alarm_fires_on_its_timer():
    r = Pl031(lambda level: None)
    r.write(Pl031.MR, r.now() + 1)
    assert r.fired.wait(3)
    r.close()


def _header(magic=loader.MAGIC, flags=0) -> bytes:
    return struct.pack("<II QQQ QQQ II", 0, 0, 0, 0x2000000, flags, 0, 0, 0, magic, 0)


def test_image_header_accepts_an_arm64_image_and_names_what_else_it_got():
    img = loader.parse(_header())
    assert (img.text_offset, img.image_size) == (0, 0x2000000)
    for data, words in ((b"\x1f\x8b" + b"\0" * 70, "gzip"), (b"x" * 10, "shorter"),
                        (_header(magic=0), "no arm64 Image magic"),
                        (_header(flags=1), "big-endian")):
        with pytest.raises(loader.NotAnImage, match=words):
            loader.parse(data)


def test_l2_reports_are_read_from_the_console():
    console = ("[    1.0] random line\n[    2.5] guestpm-l2: up uptime=2.41 cpus=2\r\n"
               "guestpm-l2: done\n")
    assert l2init.reports(console) == ["up uptime=2.41 cpus=2", "done"]


def test_l2_initramfs_holds_init_busybox_and_console():
    from harness.guest.cpio import read_names
    names = read_names(l2init.initramfs(b"\x7fELF fake busybox"))
    assert {"init", "bin/busybox", "dev/console"} <= set(names)


def test_the_vmm_refuses_bad_input_in_one_line(tmp_path, capsys):
    from harness.guest.vmm.__main__ import main
    assert main(["--kernel", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    bad = tmp_path / "bzImage"
    bad.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 100)
    assert main(["--kernel", str(bad)]) == 2
    assert "no arm64 Image magic" in capsys.readouterr().err
    img = tmp_path / "Image"
    img.write_bytes(_header() + b"\0" * 64)
    assert main(["--kernel", str(img), "--initrd", str(img), "--kvm",
                 str(tmp_path / "kvm")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vmm: ") and err.count("\n") == 1 and "kvm" in err


def test_l2_report_fields_keep_braced_values_whole():
    from harness.vm.l2 import parse_report
    line = "resumed rc=1 err={sh: write error: Operation not permitted} rtc_s=1 alarm_left={}"
    assert parse_report(line) == {"rc": "1", "err": "sh: write error: Operation not permitted",
                                  "rtc_s": "1", "alarm_left": ""}
    assert parse_report("mem_sleep={s2idle [deep]} state={freeze mem disk}") == \
        {"mem_sleep": "s2idle [deep]", "state": "freeze mem disk"}


def test_a_missing_l2_report_says_how_the_run_ended_and_what_the_guest_printed():
    from harness.vm.l2 import L2Run, NoReport
    run = L2Run("hibernate", {"outcome": "timeout", "detail": "no power-off within 300 s",
                              "elapsed_s": 300.2, "exits": [
                                  {"event": "setup", "vcpus": 2},
                                  {"event": "mmio", "addr": 9}]},
                "[    2.0] rcu: INFO: rcu_sched self-detected stall on CPU\n", "here: /r/l2-0")
    with pytest.raises(NoReport) as e:
        run.report("fresh")
    said = str(e.value)
    assert "never reported 'fresh'; it said []; the run ended timeout (no power-off within " \
           "300 s) after 300.2 s" in said
    assert '{"event": "mmio", "addr": 9}' in said and "setup" not in said
    assert "rcu_sched self-detected stall" in said and "(here: /r/l2-0)" in said


def test_a_fixture_layer_holds_the_module_and_the_line_that_loads_it():
    from harness.guest.cpio import read_names
    from harness.vm.l2 import fixture_layer
    layer = fixture_layer("guestpm_splat", b"\x7fELF ko", "at_load=warn")
    assert {"lib/modules/guestpm/guestpm_splat.ko", "etc/guestpm/modules.extra",
            "etc/guestpm"} <= set(read_names(layer))
    assert b"guestpm_splat at_load=warn\n" in layer
    assert b"guestpm_vpmc_standin\n" in fixture_layer("guestpm_vpmc_standin", b"ko")
