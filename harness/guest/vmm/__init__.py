"""guestpm's reference VMM (stdlib only): boots an arm64 Linux Image on /dev/kvm and
implements the VMM side of PSCI SYSTEM_SUSPEND and SYSTEM_OFF2.

    python3 -m harness.guest.vmm --kernel Image [--initrd X] --suspend honour|hold|deny|off
"""
