"""guestpm's reference VMM (stdlib only): boots a Linux kernel on /dev/kvm and
implements the VMM side of PSCI SYSTEM_SUSPEND and SYSTEM_OFF2.

    python3 -m harness.guest.vmm --kernel Image [--initrd X] --suspend honour|hold|deny|off

The arch-neutral core (core.py: vCPU threads, bounds, exit log; bus.py: the device
bus; policy.py; relaunch.py) runs a backend from an arch folder: arm64/ (the board,
the device tree, the Image loader, the vGIC and the PSCI policy)."""
