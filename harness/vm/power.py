"""Guest power transitions driven from inside (ssh) and observed from outside (QMP).

A transition is decided from evidence on both sides: the guest's write to
/sys/power/state and its return status, QEMU's SUSPEND / WAKEUP events with host
timestamps, and the guest's kernel log afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import GuestMisbehaved, WaitTimeout
from harness.vm import debugcon
from harness.vm.machine import Machine
from harness.vm.ssh import Running
from harness.wait import wait_until, within


class NeverSuspended(GuestMisbehaved):
    """The write to /sys/power/state returned before QEMU saw the guest suspend."""


class NeverWoke(GuestMisbehaved):
    """QEMU saw the guest suspend, but no WAKEUP followed within the bound."""


class WokeEarly(GuestMisbehaved):
    """The guest woke before the wake action: whatever woke it, it was not the action."""


class EndedInReset(GuestMisbehaved):
    """The guest reset or powered off during a transition: QEMU (-no-reboot) exited."""


# the QMP events that tell how a transition ended (SHUTDOWN's reason: guest-reset,
# guest-shutdown, guest-panic, host-qmp-quit...)
ENDING_EVENTS = ("SUSPEND", "WAKEUP", "RESET", "POWERDOWN", "SHUTDOWN", "GUEST_PANICKED")


def ending(m: Machine, what: str, t0: float) -> EndedInReset:
    """What a transition that ended with QEMU gone saw: the QMP events since `t0` (how
    long after it), QEMU's exit status and the console's last lines."""
    try:                      # QEMU sends SHUTDOWN before it exits: let QMP read it
        m.qmp.wait_event("SHUTDOWN", after=t0, timeout=3, watchdog=lambda: None)
    except WaitTimeout:
        pass
    events = [e for e in m.qmp.events if e["host_time"] >= t0 and e["event"] in ENDING_EVENTS]
    shown = ", ".join(f"{e['event']}{e.get('data') or ''} +{e['host_time'] - t0:.2f}s"
                      for e in events) or "none"
    shutdown = next((e.get("data") or {} for e in events if e["event"] == "SHUTDOWN"), {})
    how = {"guest-reset": "reset", "guest-shutdown": "powered off",
           "guest-panic": "panicked"}.get(shutdown.get("reason"), "ended")
    return EndedInReset(f"{what}: the guest {how} during the transition: QMP events "
                        f"{shown}; QEMU exited (status {m.proc.wait()}) ({m.qmp_log}); "
                        f"console's last lines ({m.console_log}):\n{m.console.tail()}")


def _transition(m: Machine, what: str, t0: float, step: Callable[[], object]):
    """`step()`, unless the guest resets or powers off on the way: EndedInReset."""
    try:
        return step()
    except Exception:
        if m.proc is not None and not m.alive():
            raise ending(m, what, t0) from None
        raise


@dataclass
class Cycle:
    suspend_s: float      # write started -> QMP SUSPEND
    wake_s: float         # wake action (or SUSPEND, for a timed wake) -> QMP WAKEUP,
                          # which counts only from the action on
    return_s: float       # WAKEUP -> the guest's write returned
    status: int           # of `echo mem > /sys/power/state`


def _still_suspending(m: Machine, cmd: Running, what: str, evidence: str) -> Callable[[], None]:
    """A check for the wait on a suspend's evidence (the machine's watchdog runs too):
    the write to /sys/power/state still blocks (one that returned is NeverSuspended)."""
    def check() -> None:
        if cmd.done():
            r = cmd.wait(1)
            raise NeverSuspended(
                f"{what}: the guest never suspended: `{cmd.command}` returned status "
                f"{r.status} ({r.stderr.strip() or 'no error printed'}) before {evidence} "
                f"({m.artifacts()})")
    return check


def suspend_to_ram(m: Machine, wake: Callable[[], None] | None, timeout: float = 60,
                   what: str = "S3") -> Cycle:
    """`echo mem > /sys/power/state` over ssh; after QMP SUSPEND call `wake` (None: the
    guest wakes itself, e.g. an RTC alarm); then QMP WAKEUP and the write's return."""
    t0 = time.time()
    return _transition(m, what, t0, lambda: _suspend_to_ram(m, wake, timeout, what, t0))


def _suspend_to_ram(m: Machine, wake: Callable[[], None] | None, timeout: float, what: str,
                    t0: float) -> Cycle:
    cmd = m.ssh.start("echo mem > /sys/power/state")
    returned_early = _still_suspending(m, cmd, what, "any QMP SUSPEND")
    m.wait_event("SUSPEND", after=t0, timeout=timeout, also=returned_early)
    t1 = time.time()
    if wake:
        early = [e for e in m.qmp.events if e["event"] == "WAKEUP" and e["host_time"] >= t1]
        if early:
            raise WokeEarly(f"{what}: the guest woke by itself {early[0]['host_time'] - t1:.2f}"
                            f" s after SUSPEND, before the wake action ({m.qmp_log})")
        t2 = time.time()
        wake()
    else:                # a timed wake (RTC alarm): its own evidence is checked by the caller
        t2 = t1
    try:
        m.wait_event("WAKEUP", after=t2, timeout=timeout)
    except WaitTimeout as e:
        raise NeverWoke(f"{what}: suspended but never woke: {e}; console tail "
                        f"({m.console_log}):\n{m.console.tail()}") from None
    t3 = time.time()
    r = cmd.wait(timeout)
    return Cycle(suspend_s=t1 - t0, wake_s=t3 - t2, return_s=time.time() - t3, status=r.status)


# The guest's own evidence that it sits in the s2idle wait: s2idle_loop()'s pm_pr_dbg
# line, which is KERN_DEBUG; PM_DEBUG turns it on and lets it through to the console.
# pm_pr_dbg prints only with CONFIG_PM_SLEEP_DEBUG, which is what creates the switch
# (kernel/power/main.c in 5.10, 6.1 and 7.2).
PM_DEBUG = "echo 1 > /sys/power/pm_debug_messages && echo 8 > /proc/sys/kernel/printk"


def pm_debug_on(m: Machine) -> str | None:
    """Turn the PM debug messages on (PM_DEBUG).  None, or why this kernel cannot print
    them (a reason to SKIP with: the s2idle wait is then invisible from outside)."""
    if m.ssh.run("test -e /sys/power/pm_debug_messages").status != 0:
        return ("no /sys/power/pm_debug_messages (CONFIG_PM_SLEEP_DEBUG is off): this "
                "kernel cannot print 'PM: suspend-to-idle', the evidence of its s2idle wait")
    m.ssh.run(PM_DEBUG).check()
    return None


# FADT flag LOW_POWER_S0_IDLE_CAPABLE (ACPI 6.x, bit 21 of the flags at offset 112)
FADT_LOW_POWER_S0 = 1 << 21
# Before 6.0 Linux attaches the LPS0 device (PNP0D80) only when the FADT sets that flag
# (drivers/acpi/sleep.c, lps0_device_attach(), read in 5.10), and it knows only the Intel
# _DSM UUID (the Microsoft one came in 5.14); 6.1's drivers/acpi/x86/s2idle.c attaches
# without the flag.  QEMU's FADT never sets it.
LPS0_WITHOUT_FADT_FLAG = (6, 0)


def lps0_unobservable(m: Machine, version: tuple[int, int] | None) -> str | None:
    """Why this kernel will make no LPS0 _DSM call on this machine (a SKIP reason), or
    None.  Probes the machine's FADT; the kernel's side is its release."""
    if version is None or version >= LPS0_WITHOUT_FADT_FLAG:
        return None
    r = m.ssh.run("od -An -tu4 -j112 -N4 /sys/firmware/acpi/tables/FACP").check()
    if int(r.output.split()[0]) & FADT_LOW_POWER_S0:
        return None
    return (f"Linux {version[0]}.{version[1]} attaches the LPS0 device (PNP0D80) only when "
            "the FADT sets LOW_POWER_S0_IDLE_CAPABLE, which QEMU's FADT does not: no LPS0 "
            "_DSM call to observe")
IDLE_LINE = r"PM: suspend-to-idle\r?\n"
# Boot a hibernation guest with: /init points /sys/power/resume at vda (guest-rootfs/init);
# no_console_suspend, so a restore that crashes says so on the console at once.
HIBERNATE_APPEND = ("no_console_suspend", "guestpm.resume=vda")


def s2idle_machine_args(profile) -> dict:
    """What a machine of `profile` needs for its s2idle to show and to be woken (machine
    arguments): the LPS0 SSDT and its debug-port tap, or a console kept awake."""
    if profile.s2idle_lps0:
        return {"qemu_args": debugcon.s2idle_qemu_args()}
    return {"append": ("no_console_suspend",)}


def arm_s2idle_wake(m: Machine) -> Callable[[], None]:
    """The profile's s2idle wake, armed: the ACPI power button (the SCI), or a byte on
    the console UART once its wakeup is enabled."""
    if m.profile.s2idle_lps0:
        return lambda: m.qmp.execute("system_powerdown")
    m.ssh.run(f"echo enabled > /sys/class/tty/{m.profile.console}/power/wakeup").check()
    return lambda: m.console.write(b"\n")


def console_shows_idle(m: Machine, timeout: float = 30) -> Callable[[Callable[[], None]], None]:
    """An `entered` for suspend_to_idle(): the console's IDLE_LINE (needs PM_DEBUG and
    no_console_suspend)."""
    return lambda watchdog: m.console.expect(IDLE_LINE, timeout,
                                             "the guest's 'PM: suspend-to-idle'", watchdog)


class NeverHibernated(GuestMisbehaved):
    """The write of `disk` to /sys/power/state returned, and QEMU kept running."""


@dataclass
class IdleCycle:
    entered_s: float      # write started -> the guest's evidence that it waits in s2idle
    return_s: float       # wake action -> the guest's write returned
    status: int           # of `echo STATE > /sys/power/state`
    stderr: str


def suspend_to_idle(m: Machine, wake: Callable[[], None],
                    entered: Callable[[Callable[[], None]], None], state: str = "freeze",
                    timeout: float = 60, what: str = "s2idle") -> IdleCycle:
    """`echo STATE > /sys/power/state` over ssh; `entered(watchdog)` blocks until the
    guest shows it sits in the s2idle wait (QMP sees nothing of s2idle: the evidence
    is the guest's own, e.g. its firmware's LPS0 calls or its console); then `wake()`,
    and the write must return."""
    t0 = time.time()
    return _transition(m, what, t0,
                       lambda: _suspend_to_idle(m, wake, entered, state, timeout, what, t0))


def _suspend_to_idle(m: Machine, wake: Callable[[], None],
                     entered: Callable[[Callable[[], None]], None], state: str,
                     timeout: float, what: str, t0: float) -> IdleCycle:
    cmd = m.ssh.start(f"echo {state} > /sys/power/state")
    watchdog = m.watch(_still_suspending(m, cmd, what, "it showed the s2idle wait"))
    entered(watchdog)
    t1 = time.time()
    watchdog()                   # the evidence came, and the write still blocks
    wake()
    t2 = time.time()
    try:
        r = cmd.wait(timeout)
    except WaitTimeout as e:
        raise NeverWoke(f"{what}: in s2idle but never woke: {e}; console tail "
                        f"({m.console_log}):\n{m.console.tail()}") from None
    return IdleCycle(entered_s=t1 - t0, return_s=time.time() - t2,
                     status=r.status, stderr=r.stderr)


@dataclass
class Hibernation:
    poweroff_s: float     # write started -> QEMU exited
    events: list[dict]    # QMP events from the write to QEMU's exit
    exit_status: int      # QEMU's

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


def hibernate(m: Machine, timeout: float = 180) -> Hibernation:
    """`echo disk > /sys/power/state` over ssh, until the guest powered off and QEMU
    exited.  A write that returns while QEMU runs is NeverHibernated, with its error."""
    t0 = time.time()
    cmd = m.ssh.start("echo disk > /sys/power/state")

    def still_writing() -> None:
        m.console.check_fatal()
        # the connection also ends when the guest powers off: give QEMU time to exit
        if cmd.done() and not within(lambda: not m.alive(), 3):
            r = cmd.wait(1)
            raise NeverHibernated(
                f"the guest did not hibernate: `echo disk > /sys/power/state` returned "
                f"status {r.status} ({r.stderr.strip() or 'no error printed'}) and the "
                f"guest runs on ({m.artifacts()})")
    # not m.wait_until: its watchdog reports the exit of QEMU, which here is the goal
    wait_until(lambda: not m.alive(), timeout, "hibernation", still_writing,
               fail=lambda: f"hibernation: the guest still runs {timeout:.0f}s after "
                            f"`echo disk`; console tail ({m.console_log}):\n"
                            f"{m.console.tail()}")
    poweroff = time.time() - t0
    try:                            # QEMU sent SHUTDOWN before exiting: let QMP read it
        m.qmp.wait_event("SHUTDOWN", after=t0, timeout=3, watchdog=lambda: None)
    except WaitTimeout:
        pass
    if any(e["event"] == "SHUTDOWN" and (e.get("data") or {}).get("reason") == "guest-reset"
           for e in m.qmp.events if e["host_time"] >= t0):
        raise ending(m, "hibernation", t0)       # a reset is no hibernation's power-off
    return Hibernation(poweroff, [e for e in m.qmp.events if e["host_time"] >= t0],
                       m.proc.wait())
