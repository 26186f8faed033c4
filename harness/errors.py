"""Errors a user can act on.  Each prints as one line that says what to do."""


class GuestpmError(Exception):
    """Base class: the message is complete and meant for the user."""


class SetupError(GuestpmError):
    """Something the host lacks (package, cache entry, registry)."""


class KernelError(GuestpmError):
    """A kernel spec that cannot be resolved or an image that cannot boot here."""


class BootError(GuestpmError):
    """The machine did not come up, or died."""


class SilentMachine(BootError):
    """QEMU ran but the console stayed silent: the kernel (or firmware) never started."""


class GuestPanic(BootError):
    """The guest kernel panicked or oopsed; the message quotes the console."""


class AbnormalShutdown(BootError):
    """QEMU did not end cleanly when the harness asked it to quit."""


class WaitTimeout(GuestpmError):
    """A bounded wait expired; the message names what was awaited."""


def leave_signals_to_the_main_thread() -> None:
    """Call first in a helper thread: block SIGINT and SIGTERM there, so the kernel
    delivers them to the main thread.  Python runs handlers only in the main thread,
    and a signal that lands on a helper thread does not interrupt the main thread's
    sleep: a SIGTERM'd harness slept on (seen in CI under load: "did not exit within
    30 s of SIGTERM" with its main thread still in time.sleep)."""
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
