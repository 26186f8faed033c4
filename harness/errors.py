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


class GuestMisbehaved(Exception):
    """The guest did not do what it was asked: the message is the evidence (what was
    expected, what came instead, where the artifacts are).  Not a GuestpmError: the
    host and the harness are fine, the kernel under test is not; a test that meets one
    FAILs with its message (harness/vm raises these, it never judges)."""


def first_line(e: BaseException) -> str:
    """An error's first line, for a one-line note (its type's name if it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
