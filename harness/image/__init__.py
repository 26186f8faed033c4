"""What the guest boots besides its kernel: the initramfs and its kernel modules,
out-of-tree fixture modules, disks, and firmware tables (AML)."""
