"""The reference VMM's x86_64 side: the 64-bit boot protocol, a 16550, and (for now) the
feasibility probe of a Linux L2 under the L1 host's KVM."""
