"""Code that runs inside a guest (or on a bare-metal host): stdlib only.

Nothing in this package may import from the rest of `harness`, nor anything
outside Python's standard library: it is copied into the guest's initramfs as
/opt/guestpm/harness/guest and run with `python3 -m harness.guest.agent`.
"""
