"""harness.guest.kvm.uapi against the kernel's own arm64 headers, and kvm_run decoding.

Golden: tests/unit/golden/uapi/kvm_uapi.json, the values kvm_uapi.c compiles to with
aarch64-linux-gnu-gcc (regenerate with GUESTPM_REGOLD=1 where it is installed)."""

import re
import struct
from pathlib import Path

import cgolden

from harness.guest.kvm import uapi
from harness.guest.kvm.vm import decode_run

GOLDEN = Path(__file__).parent / "golden" / "uapi"
U = uapi.UNION_OFFSET


def _offset(fmt: str, field: int) -> int:
    """Byte offset of the field-th field (pad bytes are not fields) of a '<' struct format."""
    prefix = ""
    for code in re.findall(r"\d*[a-zA-Z]", fmt.lstrip("<")):
        if not code.endswith("x"):
            if field == 0:
                break
            field -= 1
        prefix += code
    return struct.calcsize("<" + prefix)


OURS = {
    **{name: getattr(uapi, name) for name in (
        "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
        "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION", "KVM_IRQ_LINE", "KVM_RUN",
        "KVM_GET_MP_STATE", "KVM_SET_MP_STATE", "KVM_ENABLE_CAP", "KVM_GET_ONE_REG",
        "KVM_SET_ONE_REG", "KVM_ARM_VCPU_INIT", "KVM_ARM_PREFERRED_TARGET",
        "KVM_CAP_ARM_PSCI_0_2", "KVM_CAP_ARM_SYSTEM_SUSPEND", "KVM_EXIT_MMIO", "KVM_EXIT_INTR",
        "KVM_EXIT_SYSTEM_EVENT", "KVM_MP_STATE_STOPPED", "KVM_MP_STATE_SUSPENDED",
        "KVM_ARM_VCPU_POWER_OFF", "KVM_ARM_VCPU_PSCI_0_2", "KVM_REG_ARM_PSCI_VERSION")},
    "KVM_SYSTEM_EVENT_WAKEUP": next(k for k, v in uapi.SYSTEM_EVENT_NAMES.items() if v == "WAKEUP"),
    "KVM_SYSTEM_EVENT_SUSPEND": next(k for k, v in uapi.SYSTEM_EVENT_NAMES.items()
                                     if v == "SUSPEND"),
    "ARM64_X0": uapi.arm64_x(0), "ARM64_X9": uapi.arm64_x(9), "ARM64_PC": uapi.ARM64_PC,
    "ARM64_PSTATE": uapi.ARM64_PSTATE, "ARM64_MPIDR_EL1": uapi.ARM64_MPIDR_EL1,
    "RUN_exit_reason": _offset(uapi.RUN_EXIT_REASON.format, 0),
    "RUN_mmio": U, "RUN_mmio_data": U + _offset(uapi.RUN_MMIO.format, 1),
    "RUN_mmio_len": U + _offset(uapi.RUN_MMIO.format, 2),
    "RUN_mmio_is_write": U + _offset(uapi.RUN_MMIO.format, 3),
    "RUN_system_event": U, "RUN_system_event_ndata": U + _offset(uapi.RUN_SYSTEM_EVENT.format, 1),
    "RUN_system_event_data": U + _offset(uapi.RUN_SYSTEM_EVENT.format, 2),
    "SIZEOF_kvm_userspace_memory_region": uapi.USERSPACE_MEMORY_REGION.size,
    "SIZEOF_kvm_enable_cap": uapi.ENABLE_CAP.size, "SIZEOF_kvm_one_reg": uapi.ONE_REG.size,
    "SIZEOF_kvm_vcpu_init": uapi.VCPU_INIT.size, "SIZEOF_kvm_irq_level": uapi.IRQ_LEVEL.size,
}


def _golden() -> dict[str, int]:
    return cgolden.values(GOLDEN / "kvm_uapi.c", "aarch64-linux-gnu-gcc", "xword")


def test_every_value_matches_the_kernel_headers():
    golden = _golden()
    assert set(golden) == set(OURS)
    assert {k: hex(v) for k, v in OURS.items()} == {k: hex(v) for k, v in golden.items()}


def test_psci_off2_flag_and_version_register_are_the_documented_ones():
    # newer than the bookworm cross headers: the values documented in api.rst (7.2)
    assert uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2 == 1
    assert uapi.KVM_REG_ARM_PSCI_VERSION == 0x6030000000140000


def _run_page(exit_reason: int, union: bytes) -> bytes:
    g = _golden()
    buf = bytearray(4096)
    struct.pack_into("<I", buf, g["RUN_exit_reason"], exit_reason)
    buf[g["RUN_mmio"]:g["RUN_mmio"] + len(union)] = union
    return bytes(buf)


def test_decode_system_event_shutdown_with_the_off2_flag():
    g = _golden()
    union = bytearray(256)
    struct.pack_into("<I", union, 0, 1)                                   # SHUTDOWN
    struct.pack_into("<I", union, g["RUN_system_event_ndata"] - g["RUN_system_event"], 1)
    struct.pack_into("<Q", union, g["RUN_system_event_data"] - g["RUN_system_event"], 1)
    ex = decode_run(_run_page(24, bytes(union)))
    assert ex.summary() == {"reason": "SYSTEM_EVENT", "type": "SHUTDOWN", "ndata": 1, "data": [1]}


def test_decode_system_event_suspend_has_no_data():
    ex = decode_run(_run_page(24, struct.pack("<II", 5, 0) + b"\xff" * 8))
    assert ex.summary() == {"reason": "SYSTEM_EVENT", "type": "SUSPEND", "ndata": 0, "data": []}


def test_decode_mmio_write():
    g = _golden()
    union = bytearray(64)
    struct.pack_into("<Q", union, 0, 0x1000_0000)
    base = g["RUN_mmio"]
    union[g["RUN_mmio_data"] - base:g["RUN_mmio_data"] - base + 8] = (2**64 - 3).to_bytes(8, "little")
    struct.pack_into("<I", union, g["RUN_mmio_len"] - base, 8)
    union[g["RUN_mmio_is_write"] - base] = 1
    ex = decode_run(_run_page(6, bytes(union)))
    assert ex.summary() == {"reason": "MMIO", "phys_addr": 0x1000_0000, "is_write": True,
                            "len": 8, "value": 2**64 - 3}


IO_OURS = {
    **{name: getattr(uapi, name) for name in (
        "KVM_EXIT_IO", "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT", "KVM_EXIT_FAIL_ENTRY",
        "KVM_EXIT_INTERNAL_ERROR")},
    "RUN_io": U, "RUN_io_size": U + _offset(uapi.RUN_IO.format, 1),
    "RUN_io_port": U + _offset(uapi.RUN_IO.format, 2),
    "RUN_io_count": U + _offset(uapi.RUN_IO.format, 3),
    "RUN_io_data_offset": U + _offset(uapi.RUN_IO.format, 4),
}


def _io_golden() -> dict[str, int]:
    return cgolden.values(GOLDEN / "kvm_run_io.c", "gcc", "quad")


def test_the_io_exit_matches_the_kernel_headers():
    assert IO_OURS == _io_golden()


def test_decode_io_exit_at_the_headers_offsets():
    """An OUT of two 1-byte accesses to port 0x3f8 (a string instruction), data at 4096."""
    g = _io_golden()
    union = bytearray(64)
    base = g["RUN_io"]
    union[0] = g["KVM_EXIT_IO_OUT"]
    union[g["RUN_io_size"] - base] = 1
    struct.pack_into("<H", union, g["RUN_io_port"] - base, 0x3F8)
    struct.pack_into("<I", union, g["RUN_io_count"] - base, 2)
    struct.pack_into("<Q", union, g["RUN_io_data_offset"] - base, 4096)
    ex = decode_run(_run_page(g["KVM_EXIT_IO"], bytes(union)))
    assert ex.summary() == {"reason": "IO", "port": 0x3F8, "is_write": True, "len": 1, "count": 2}
    assert ex.data_offset == 4096
    union[0] = g["KVM_EXIT_IO_IN"]
    assert decode_run(_run_page(g["KVM_EXIT_IO"], bytes(union))).is_write is False


def test_decode_unknown_exit_keeps_its_number():
    assert decode_run(_run_page(99, b"")).reason == "exit-99"


def test_why_no_kvm_names_the_machine_or_the_kernel(tmp_path):
    """A missing /dev/kvm SKIPs only for a known reason; otherwise it is a defect."""
    from harness.guest.kvm.vm import why_no_kvm
    el1 = "Booting Linux\nCPU: All CPU(s) started at EL1\nkvm [1]: HYP mode not available"
    assert "started at EL1, not EL2" in why_no_kvm(log=el1, machine="aarch64")
    no_svm = "processor\t: 0\nflags\t\t: fpu vme sse sse2 hypervisor\n"
    assert "neither svm nor vmx" in why_no_kvm(cpuinfo=no_svm, log="", machine="x86_64")
    el2 = "CPU: All CPU(s) started at EL2\nkvm [1]: VHE mode initialized successfully"
    svm = "flags\t\t: fpu svm sse\n"
    import os
    if os.path.exists("/sys/module/kvm"):        # this host has KVM: nothing explains it
        assert why_no_kvm(log=el2, machine="aarch64") is None
        assert why_no_kvm(cpuinfo=svm, log="kvm_amd: Nested Virtualization enabled",
                          machine="x86_64") is None
    else:
        assert why_no_kvm(log=el2, machine="aarch64") is None      # its log names kvm
        assert "this kernel has no KVM" in why_no_kvm(cpuinfo=svm, log="", machine="x86_64")
