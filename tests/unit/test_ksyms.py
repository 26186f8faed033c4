"""harness/guest/ksyms.py: a hung x86 L2 vCPU's link-time addresses, named with the L1
host's own /proc/kallsyms (the same kernel under another KASLR offset).  The golden
listing has the form of a debian:7.2 amd64 L1 host's: its _text and the three symbols the
stuck vCPUs of the 2026-12-03 x86 L2 runs were named with are at that host's addresses;
their neighbours are made up, to bound them."""

import re
from pathlib import Path

from harness.guest.ksyms import LINK_TEXT, Symbols

GOLDEN = Path(__file__).parent / "golden" / "ksyms" / "kallsyms-7.2-amd64.txt"


def test_link_time_addresses_are_named_through_the_hosts_text_offset():
    syms = Symbols(GOLDEN.read_text())
    assert syms.text == 0xFFFF_FFFF_9C20_0000
    link = LINK_TEXT["x86_64"]
    assert syms.name_linked(0xFFFF_FFFF_8135_473E, link) == "native_halt+0xe"
    assert syms.name_linked(0xFFFF_FFFF_814B_D967, link) == "watchdog_check_skew+0x77"
    assert syms.name_linked(0xFFFF_FFFF_822C_101A, link) == \
        "native_queued_spin_lock_slowpath+0x6a"


def test_data_module_and_unknown_addresses():
    syms = Symbols(GOLDEN.read_text())
    assert syms.name(0xFFFF_FFFF_9C20_0010) == "startup_64+0x10"       # _text and startup_64
    assert syms.name(0x1000) is None                                   # below every symbol
    assert syms.name(0xFFFF_FFFF_C0A0_1004) == "kvm_amd_module_text+0x4"
    hidden = Symbols(re.sub(r"^[0-9a-f]{16}", "0" * 16, GOLDEN.read_text(),
                            flags=re.MULTILINE))                       # kptr_restrict
    assert hidden.name_linked(0xFFFF_FFFF_8135_473E, LINK_TEXT["x86_64"]) is None
