"""The reference VMM's arch-neutral core and device bus, driven by a stub x86 backend
(tests/unit/vmm_x86_stub.py, new files only) and a fake vCPU that yields KVM_EXIT_IO."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import vmm_x86_stub

from harness.guest.vmm.bus import MMIO, PIO, Bus

STUB = Path(vmm_x86_stub.__file__)


def test_the_core_loop_hands_io_exits_to_a_stub_backends_port_device():
    got = vmm_x86_stub.demo()
    assert got["outcome"] == "shutdown" and got["detail"] == "hlt"
    assert got["console"] == "hi\n"
    assert got["pio"] == {"com1": 3, "unclaimed": 1}
    assert got["ins"] == ["60", "ffff"]         # LSR ready; an unclaimed port reads all ones


def test_no_arm64_module_is_imported_on_that_path():
    out = subprocess.run([sys.executable, str(STUB)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["outcome"] == "shutdown" and got["console"] == "hi\n"
    assert got["arm64_modules"] == []


class _Dev:
    def __init__(self):
        self.writes = []

    def read(self, offset):
        return 0xAB00 | offset

    def write(self, offset, value):
        self.writes.append((offset, value))


class _Vcpu:
    def __init__(self, data=b""):
        self.data, self.completed = data, []

    def io_data(self, ex):
        return self.data

    def complete_io_in(self, ex, data):
        self.completed.append(data)

    def complete_mmio_read(self, value, length):
        self.completed.append((value, length))


def _ex(**kw):
    return SimpleNamespace(**{"is_write": False, "len": 4, "count": 1, "value": 0, **kw})


def test_mmio_goes_to_the_device_at_its_offset_and_unclaimed_reads_as_zero():
    bus, dev, v = Bus(), _Dev(), _Vcpu()
    bus.add(MMIO, 0x0900_0000, 0x1000, "pl011", dev)
    bus.mmio(v, _ex(phys_addr=0x0900_0018))
    bus.mmio(v, _ex(phys_addr=0x0900_0000, is_write=True, value=0x41))
    bus.mmio(v, _ex(phys_addr=0x1000_0000))
    bus.mmio(v, _ex(phys_addr=0x1000_0000, is_write=True, value=1))
    assert v.completed == [(0xAB18, 4), (0, 4)]
    assert dev.writes == [(0, 0x41)]
    assert bus.counts == {MMIO: {"pl011": 2, "unclaimed": 2}, PIO: {}}


def test_a_string_out_is_count_accesses_and_an_in_fills_each():
    bus, dev = Bus(), _Dev()
    bus.add(PIO, 0x3F8, 8, "com1", dev)
    bus.pio(_Vcpu(b"\x01\x00\x02\x00\x03\x00"), _ex(port=0x3F9, is_write=True, len=2, count=3))
    assert dev.writes == [(1, 1), (1, 2), (1, 3)]
    v = _Vcpu()
    bus.pio(v, _ex(port=0x3FA, len=1, count=2))
    assert v.completed == [b"\x02\x02"]         # 0xAB02 cut to the access size


def test_regions_that_overlap_are_refused():
    bus = Bus()
    bus.add(PIO, 0x3F8, 8, "com1", _Dev())
    with pytest.raises(ValueError, match="overlaps com1"):
        bus.add(PIO, 0x3FC, 8, "other", _Dev())
    bus.add(MMIO, 0x3FC, 8, "elsewhere", _Dev())   # another space: no overlap


def test_a_run_a_bound_ends_says_where_each_vcpu_stood():
    """A guest that prints and never powers off: the bound ends it, and the exit log has
    each vCPU's place from the backend (its RIP here), read once the vCPU is out of
    KVM_RUN, so that a hung L2 kernel says where it hung."""
    from harness.guest.vmm.core import Core
    from harness.guest.vmm.policy import Policy
    core = Core(vmm_x86_stub.X86StubBackend([("out", vmm_x86_stub.COM1, 1, b"x\n")]),
                Policy(vcpus=1))
    core.setup()
    r = core.run(timeout=1, silent_s=10)
    core.close()
    assert (r.outcome, r.detail) == ("timeout", "no power-off within 1 s")
    assert [e for e in r.exits if e["event"] == "stuck"] == \
        [{"t": pytest.approx(1, abs=1), "event": "stuck", "vcpu": 0, "rip": "0xffffffff81000000"}]


def test_a_run_the_guest_ended_reports_no_stuck_vcpu():
    assert not [e for e in _demo_exits() if e["event"] == "stuck"]


def _demo_exits():
    from harness.guest.vmm.core import Core
    from harness.guest.vmm.policy import Policy
    core = Core(vmm_x86_stub.X86StubBackend(vmm_x86_stub.SCRIPT), Policy(vcpus=1))
    core.setup()
    r = core.run(timeout=10, silent_s=10)
    core.close()
    assert r.outcome == "shutdown"
    return r.exits
