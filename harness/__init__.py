"""guestpm: a test harness for guest power management across the KVM boundary.

The sub-package :mod:`harness.guest` runs inside virtual machines (or on a
bare-metal host) and must stay stdlib-only; everything else runs on the host.
"""

__version__ = "0.1.0"
