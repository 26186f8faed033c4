"""The virtual machines: the QEMU command line from a profile, and the Machine that owns
QEMU, its QMP, console and ssh; the splats in its logs, power transitions and the L2
host are read from and driven through it."""
