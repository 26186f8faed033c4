"""s2idle (suspend-to-idle), made visible to the host.

QMP sees nothing of s2idle.  On x86 the guest gets guestpm's SSDT
(guest-rootfs/acpi/s2idle.asl): an LPS0 device (PNP0D80) whose Low Power S0 _DSM, and a
virtual PMC (HYPE0001) whose notify _DSM, each write a line to I/O port 0xE9, which QEMU's
isa-debugcon puts in a file the harness reads live.  The host therefore sees the LPS0
entry calls while the guest sits in s2idle, before it sends any wake, and the exit calls
after.  On arm64 (QEMU virt, no ACPI) the evidence is the guest's own console, which
stays live (no_console_suspend) up to the kernel's "suspend-to-idle" line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.image import fixture_modules, module_tree
from harness.kernel import kernels
from harness.plugin.known_defects import (
    VIRTIO_NET_FROZEN_XMIT,
    VIRTIO_NET_RESTORE_SLAB,
    xfail_on,
)
from harness.progress import progress
from harness.vm.debugcon import DEBUGCON_LOG, DebugconTap, s2idle_qemu_args
from harness.vm.power import (
    IdleCycle,
    NeverSuspended,
    NeverWoke,
    arm_s2idle_wake,
    console_shows_idle,
    lps0_unobservable,
    pm_debug_on,
    s2idle_machine_args,
    suspend_to_idle,
)

pytestmark = [pytest.mark.e2e]

SCREEN_OFF, SCREEN_ON, LPS0_ENTRY, LPS0_EXIT, MS_ENTRY, MS_EXIT = (
    f"lps0 {fn}" for fn in (3, 4, 5, 6, 7, 8))
ENTRY = {SCREEN_OFF, LPS0_ENTRY, MS_ENTRY}
EXIT = {SCREEN_ON, LPS0_EXIT, MS_EXIT}
NOTIFY = "hype 1"
STANDIN = Path(__file__).resolve().parent.parent / "fixtures" / "vpmc_standin"


class S2idleX86:
    """One x86 guest with the s2idle SSDT, and what its debug port said around a cycle.
    SKIPs, naming why, where the kernel cannot show its s2idle wait on this machine."""

    def __init__(self, machine_factory, kernel):
        self.m = machine_factory.booted(qemu_args=s2idle_qemu_args())
        self.tap = DebugconTap(self.m.workdir / DEBUGCON_LOG)
        why = lps0_unobservable(self.m, kernels.release_version(kernel.release)) or \
            pm_debug_on(self.m)
        if why:
            pytest.skip(why)
        self.before: list[str] = []
        self.after: list[str] = []

    def cycle(self, wake) -> IdleCycle:
        self.tap.poll()
        start = len(self.tap.lines)
        at_wake: list[int] = []

        def entered(watchdog):
            self.tap.wait_for(lambda t: ENTRY <= set(t), 30,
                              "the LPS0 entry _DSM calls (functions 3, 5, 7)", watchdog, start)
            console_shows_idle(self.m)(watchdog)

        def wake_now():
            self.tap.poll()                   # everything read now was written before the wake
            at_wake.append(len(self.tap.lines))
            wake()

        with xfail_on(self.m, VIRTIO_NET_FROZEN_XMIT, VIRTIO_NET_RESTORE_SLAB):
            c = suspend_to_idle(self.m, wake_now, entered, what="x86 s2idle")
        self.tap.wait_for(lambda t: EXIT <= set(t), 30, "the LPS0 exit _DSM calls "
                          "(functions 6, 8, 4)", self.m.watch(), at_wake[0])
        self.before = self.tap.texts(start)[:at_wake[0] - start]
        self.after = self.tap.texts(at_wake[0])
        return c

    def where(self) -> str:
        return f"debug port said {self.before} before the wake and {self.after} after " \
               f"({self.tap.path})"


def _assert_lps0_order(s: S2idleX86, c: IdleCycle) -> None:
    assert c.status == 0, f"`echo freeze` exited {c.status}: {c.stderr}"
    lps0_before = [t for t in s.before if t.startswith("lps0")]
    lps0_after = [t for t in s.after if t.startswith("lps0")]
    assert sorted(lps0_before) == sorted(ENTRY), \
        f"expected exactly the entry functions 3, 5, 7 before the wake; {s.where()}"
    assert lps0_before[0] == SCREEN_OFF, f"screen-off (3) must come first; {s.where()}"
    assert sorted(lps0_after) == sorted(EXIT), \
        f"expected exactly the exit functions 4, 6, 8 after the wake; {s.where()}"
    assert lps0_after[-1] == SCREEN_ON, f"screen-on (4) must come last; {s.where()}"
    assert lps0_after.index(LPS0_EXIT) < lps0_after.index(SCREEN_ON)


def _wakeup_names(m) -> dict:
    w = m.agent("wakeup-irq")
    assert w["irq"] and w["irq"] != "0", f"/sys/power/pm_wakeup_irq is {w['irq']!r}"
    return w


@pytest.mark.arch("x86_64")
@pytest.mark.parametrize("how", ["system_powerdown", "serial"])
def test_s2idle_lps0_calls_reach_host_wake_by(machine_factory, kernel, how):
    s = S2idleX86(machine_factory, kernel)
    m = s.m
    if how == "serial":
        m.ssh.run(f"echo enabled > /sys/class/tty/{m.profile.console}/power/wakeup").check()
        wake, source = (lambda: m.console.write(b"\n")), m.profile.serial_wake_irq
    else:
        wake, source = (lambda: m.qmp.execute("system_powerdown")), "acpi"   # the SCI
    c = s.cycle(wake)
    _assert_lps0_order(s, c)
    w = _wakeup_names(m)
    assert source in w["names"], \
        f"woken by {how}: pm_wakeup_irq {w['irq']} is {w['interrupts']!r}, not {source}"
    log = m.ssh.run("dmesg").check().output          # the connection that suspended
    assert "PM: suspend entry (s2idle)" in log and "PM: suspend exit" in log
    suspends = [e for e in m.qmp.events if e["event"] in ("SUSPEND", "WAKEUP")]
    assert not suspends, f"s2idle must not put the machine in S3; QMP said {suspends}"


def _assert_notify(s: S2idleX86) -> None:
    """The HYPE0001 notify: once, after the last LPS0 entry call, before the wake."""
    if NOTIFY in s.after:
        raise AssertionError(f"HYPE0001 notify came after the wake (too late); {s.where()}")
    assert s.before.count(NOTIFY) == 1, f"expected one HYPE0001 notify before the wake; " \
                                        f"{s.where()}"
    last_entry = max(i for i, t in enumerate(s.before) if t in ENTRY)
    if s.before.index(NOTIFY) < last_entry:
        raise AssertionError(f"HYPE0001 notify too early: it precedes the last LPS0 entry "
                             f"call ({s.before[last_entry]}); {s.where()}")


def _hype_drivers(m) -> dict:
    dev = m.agent("acpi-device", hid="HYPE0001")
    assert dev["devices"], "the SSDT's HYPE0001 device is not in the guest's ACPI namespace " \
                           "(/sys/bus/acpi/devices)"
    return dev["devices"][0]


HYPE_ALIAS = "acpi*:HYPE0001:*"


@pytest.mark.arch("x86_64")
def test_hype0001_notify_on_the_kernel_under_test(machine_factory, kernel):
    """The unmerged virtual-PMC series: a kernel that carries it has a driver for
    HYPE0001 (built in or a module, by its modalias), binds it and notifies from s2idle.
    No such driver: SKIP.  A driver that is there but does not bind: FAIL."""
    if kernel.modules is None:
        pytest.skip(f"{kernel.spec} comes without its modules directory, so whether it has a "
                    f"HYPE0001 driver cannot be told (pass path:IMAGE,modules=DIR)")
    builtin, loadable = module_tree.ModuleTree(kernel.modules).drivers_for(HYPE_ALIAS)
    if not builtin and not loadable:
        pytest.skip(f"no driver for HYPE0001 in {kernel.release} (no built-in or module "
                    f"alias {HYPE_ALIAS}): the virtual-PMC s2idle notification is absent")
    s = S2idleX86(machine_factory, kernel)
    for name, ko in module_tree.ModuleTree(kernel.modules).closure(loadable[:1]):
        s.m.ssh.put(ko, f"/tmp/{name}.ko")
        s.m.ssh.run(f"grep -q '^{name} ' /proc/modules || insmod /tmp/{name}.ko").check()
    dev = _hype_drivers(s.m)
    assert dev["drivers"], \
        f"{kernel.release} has a HYPE0001 driver ({', '.join(builtin + loadable)}), but " \
        f"nothing bound /sys/bus/acpi/devices/{dev['name']} or its physical node " \
        f"({s.m.artifacts()})"
    s.cycle(lambda: s.m.qmp.execute("system_powerdown"))
    _assert_notify(s)


def _standin(machine_factory, kernel, profile, early: bool) -> S2idleX86:
    s = S2idleX86(machine_factory, kernel)
    # the stand-in registers through the LPS0 device hooks, which older kernels lack
    have = s.m.ssh.run("grep -c ' acpi_register_lps0_dev$' /proc/kallsyms").output.strip()
    if have == "0":
        pytest.skip(f"{kernel.release} has no acpi_register_lps0_dev (the LPS0 device hooks "
                    "the HYPE0001 stand-in registers with)")
    try:
        ko = fixture_modules.build(STANDIN, kernel, profile.deb_arch, progress)
    except fixture_modules.Unbuildable as e:
        pytest.skip(f"the HYPE0001 stand-in cannot be built: {e}")
    s.m.ssh.put(ko.read_bytes(), "/tmp/standin.ko")
    s.m.ssh.run(f"insmod /tmp/standin.ko early={int(early)}").check()
    dev = _hype_drivers(s.m)
    assert "guestpm_vpmc_standin" in dev["drivers"].values(), \
        f"the stand-in loaded but HYPE0001 shows drivers {dev['drivers']}"
    return s


@pytest.mark.arch("x86_64")
@pytest.mark.standin("virtual PMC (HYPE0001) s2idle notification")
def test_hype0001_notify_with_the_standin_fixture(machine_factory, kernel, profile):
    """A stand-in, not the kernel's verdict: it proves the harness's half (the SSDT, the
    debug port, the order checks) on a path no merged kernel takes.
    tests/fixtures/vpmc_standin (built against Debian's linux-headers for this kernel)
    evaluates the HYPE0001 _DSM from the LPS0 prepare hook: the notify must reach the
    host after the last LPS0 entry call and before the wake."""
    s = _standin(machine_factory, kernel, profile, early=False)
    c = s.cycle(lambda: s.m.qmp.execute("system_powerdown"))
    _assert_lps0_order(s, c)
    _assert_notify(s)


@pytest.mark.harness_selftest
@pytest.mark.arch("x86_64")
def test_an_early_hype0001_notify_is_reported_as_too_early(machine_factory, kernel, profile):
    """The stand-in with early=1 notifies from PM_SUSPEND_PREPARE, before any LPS0 call:
    the check must say "too early", not pass."""
    s = _standin(machine_factory, kernel, profile, early=True)
    s.cycle(lambda: s.m.qmp.execute("system_powerdown"))
    with pytest.raises(AssertionError, match="too early"):
        _assert_notify(s)


# ---------------------------------------------------------------- arm64

def _arm64(machine_factory, profile):
    m = machine_factory.booted(**s2idle_machine_args(profile))
    why = pm_debug_on(m)
    if why:
        pytest.skip(why)
    return m


@pytest.mark.arch("arm64")
@pytest.mark.parametrize("how", ["serial", "rtc"])
def test_s2idle_on_arm64_wakes_by(machine_factory, profile, how):
    m = _arm64(machine_factory, profile)
    if how == "serial":
        wake, source = arm_s2idle_wake(m), m.profile.serial_wake_irq
    else:
        m.ssh.run("echo 0 > /sys/class/rtc/rtc0/wakealarm && "
                  "echo +4 > /sys/class/rtc/rtc0/wakealarm").check()
        wake, source = (lambda: None), m.profile.rtc_wake_irq
    c = suspend_to_idle(m, wake, console_shows_idle(m), what=f"arm64 s2idle, wake by {how}")
    assert c.status == 0, f"`echo freeze` exited {c.status}: {c.stderr}"
    w = _wakeup_names(m)
    assert any(source in n for n in w["names"]), \
        f"woken by {how}: pm_wakeup_irq {w['irq']} is {w['interrupts']!r}, not {source}"
    log = m.ssh.run("dmesg").check().output
    assert "PM: suspend entry (s2idle)" in log and "PM: suspend exit" in log


@pytest.mark.arch("arm64")
def test_echo_mem_on_arm64_takes_the_s2idle_path(machine_factory, profile):
    """QEMU virt offers no deep sleep (its PSCI 1.1 firmware has no SYSTEM_SUSPEND):
    `echo mem` must fall back to s2idle, as the guest itself reports."""
    m = _arm64(machine_factory, profile)
    modes = m.ssh.run("cat /sys/power/mem_sleep").check().output.split()
    assert modes == ["[s2idle]"], f"mem_sleep offers {modes}; expected only [s2idle]"
    m.ssh.run("echo 0 > /sys/class/rtc/rtc0/wakealarm && "
              "echo +4 > /sys/class/rtc/rtc0/wakealarm").check()
    c = suspend_to_idle(m, lambda: None, console_shows_idle(m), state="mem",
                        what="arm64 `echo mem`")
    assert c.status == 0, f"`echo mem` exited {c.status}: {c.stderr}"
    log = m.ssh.run("dmesg").check().output
    assert "PM: suspend entry (s2idle)" in log, "no 'PM: suspend entry (s2idle)' after echo mem"
    assert "PM: suspend entry (deep)" not in log


@pytest.mark.harness_selftest
@pytest.mark.arch("arm64")
def test_faults_a_suspend_that_returns_at_once_or_never_wakes(machine_factory, profile):
    """A write that returns at once is a FAIL quoting the guest's error, not a timeout;
    a guest that never wakes is a FAIL after the bound, with the console tail."""
    m = _arm64(machine_factory, profile)
    with pytest.raises(NeverSuspended, match=r"returned status 1 \(.*Invalid argument"):
        suspend_to_idle(m, lambda: None, console_shows_idle(m), state="nosuchstate")
    with pytest.raises(NeverWoke, match=r"(?s)never woke: .* within 5s.*console tail.*"
                                        r"PM: suspend-to-idle"):
        suspend_to_idle(m, lambda: None, console_shows_idle(m), timeout=5)
