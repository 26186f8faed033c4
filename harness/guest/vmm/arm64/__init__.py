"""The reference VMM's arm64 backend: board.py (memory map and device tree), fdt.py,
loader.py (the Image), gic.py, devices.py (PL011, PL031), psci_policy.py, and
backend.py, which the core runs (`python3 -m harness.guest.vmm --arch arm64`)."""
