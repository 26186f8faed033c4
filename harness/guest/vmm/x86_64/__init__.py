"""The reference VMM's x86_64 backend (backend.py): the 64-bit boot protocol, a 16550,
the CMOS clock, ACPI tables and their fixed hardware, on KVM's in-kernel irqchip."""
