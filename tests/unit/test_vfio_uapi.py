"""harness.guest.vfio_uapi against the kernel's own vfio.h, and vfio_device's PCI config
reading.

Golden: tests/unit/golden/uapi/vfio_uapi.json, the values vfio_uapi.c compiles to with
the host gcc and linux-libc-dev (regenerate with GUESTPM_REGOLD=1).  Config spaces:
tests/unit/golden/vfio/*.bin, the e1000e's sysfs config file read in a 7.2 guest
with the device in D0 and in D3hot."""

import struct
from pathlib import Path

import cgolden

from harness.guest import vfio_device, vfio_uapi

GOLDEN = Path(__file__).parent / "golden"

OURS = {
    **{name: getattr(vfio_uapi, name) for name in (
        "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_STATUS",
        "VFIO_GROUP_SET_CONTAINER", "VFIO_GROUP_GET_DEVICE_FD", "VFIO_DEVICE_GET_INFO",
        "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO", "VFIO_DEVICE_SET_IRQS",
        "VFIO_DEVICE_FEATURE", "VFIO_API_VERSION", "VFIO_TYPE1_IOMMU", "VFIO_TYPE1v2_IOMMU",
        "VFIO_GROUP_FLAGS_VIABLE", "VFIO_PCI_CONFIG_REGION_INDEX", "VFIO_PCI_REQ_IRQ_INDEX",
        "VFIO_PCI_NUM_IRQS", "VFIO_IRQ_INFO_EVENTFD", "VFIO_IRQ_SET_DATA_NONE", "VFIO_IRQ_SET_DATA_BOOL",
        "VFIO_IRQ_SET_DATA_EVENTFD", "VFIO_IRQ_SET_ACTION_TRIGGER", "VFIO_DEVICE_FEATURE_GET",
        "VFIO_DEVICE_FEATURE_SET", "VFIO_DEVICE_FEATURE_PROBE", "LOW_POWER_ENTRY",
        "LOW_POWER_ENTRY_WITH_WAKEUP", "LOW_POWER_EXIT")},
    "SIZEOF_FEATURE": vfio_uapi.FEATURE.size, "SIZEOF_WAKEUP_ENTRY": vfio_uapi.WAKEUP_ENTRY.size,
    "SIZEOF_GROUP_STATUS": vfio_uapi.GROUP_STATUS.size, "MINSZ_DEVICE_INFO": vfio_uapi.DEVICE_INFO.size,
    "SIZEOF_REGION_INFO": vfio_uapi.REGION_INFO.size,
    "REGION_INFO_offset": struct.calcsize(vfio_uapi.REGION_INFO.format[:-1]),
    "SIZEOF_IRQ_INFO": vfio_uapi.IRQ_INFO.size, "SIZEOF_IRQ_SET": vfio_uapi.IRQ_SET.size,
}


def _golden() -> dict[str, int]:
    return cgolden.values(GOLDEN / "uapi" / "vfio_uapi.c", "gcc", "quad")


def test_every_value_matches_the_kernel_headers():
    golden = _golden()
    assert set(golden) == set(OURS)
    assert {k: hex(v) for k, v in OURS.items()} == {k: hex(v) for k, v in golden.items()}


def test_the_acpi_notify_index_is_the_first_one_past_mainline():
    assert vfio_uapi.VFIO_PCI_ACPI_IRQ_INDEX == _golden()["VFIO_PCI_NUM_IRQS"] == 5


def _device(tmp_path, name: str) -> vfio_device.PciDevice:
    d = vfio_device.PciDevice("0000:00:09.0")
    d.path = tmp_path
    (tmp_path / "config").write_bytes((GOLDEN / "vfio" / name).read_bytes())
    (tmp_path / "power_state").write_text("D3hot\n" if "d3" in name else "D0\n")
    (tmp_path / "power").mkdir()
    (tmp_path / "power" / "runtime_status").write_text(
        "suspended\n" if "d3" in name else "active\n")
    return d


def test_pm_capability_is_found_through_the_capability_list(tmp_path):
    assert _device(tmp_path, "e1000e-d0.bin").pm_cap() == 0xc8


def test_power_reads_pmcsr_power_state_and_runtime_status(tmp_path):
    assert _device(tmp_path, "e1000e-d0.bin").power() == vfio_device.D0


def test_power_in_d3hot(tmp_path):
    assert _device(tmp_path, "e1000e-d3hot.bin").power() == vfio_device.D3HOT


def test_a_function_without_a_capability_list_has_no_pm_cap(tmp_path):
    d = vfio_device.PciDevice("0000:00:09.0")
    d.path = tmp_path
    cfg = bytearray(256)
    cfg[0x34] = 0x40           # a pointer, but the status bit says there is no list
    (tmp_path / "config").write_bytes(bytes(cfg))
    assert d.pm_cap() is None
