"""vfio-pci power uAPI cases, run in the kernel under test as a host (stdlib only).

The device is a PCI function of this machine bound to vfio-pci; its DMA must be
translated by an IOMMU (QEMU's intel-iommu on x86_64, SMMUv3 on arm64): Debian's
kernels are built without CONFIG_VFIO_NOIOMMU, so there is no noiommu mode to
fall back on.  The cases drive the device through the legacy container/group
interface (/dev/vfio/vfio + /dev/vfio/N), which every kernel from 6.1 to 7.2 has.

Families:
  low_power    VFIO_DEVICE_FEATURE LOW_POWER_ENTRY / _WITH_WAKEUP / _EXIT (merged 6.1):
               the device's own PMCSR, the PCI core's power_state and the runtime-PM
               status are read after each call.
  acpi_notify  the unmerged vfio ACPI-notify series (v5): IRQ index 5
               (VFIO_PCI_ACPI_IRQ_INDEX).  Stock kernels answer that index 5 is
               VFIO_PCI_NUM_IRQS.  The positive path runs against guestpm's
               stand-in for the series (tests/fixtures/vfio_acpi_standin, a vfio-pci
               variant driver: --driver guestpm_vfio_acpi_standin), or against a
               kernel that carries the series (the default driver, vfio-pci).
               Notify values other than the loopback's are raised through the
               firmware: guestpm's SSDT (guest-rootfs/acpi/vfio_notify.asl) gives
               the device's companion a _PS3 that notifies 0x80 and a GPMN(v)
               method, which the stand-in module's test hook evaluates.

    python3 -m harness.guest.vfio 0000:00:09.0 [--driver D] [--no-companion BDF]
                                  [--json] [-k NAME]
prints KTAP (or JSON) on any machine with such a device, bare metal included."""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from pathlib import Path
from typing import Self

from . import kmsg, kselftest
from .vfio_device import D0, D3HOT, PciDevice, VfioDevice, eventfd_value
from .vfio_uapi import (
    ACPI_NOTIFY_DEVICE_CHECK,
    FEATURE_NAMES,
    LOW_POWER_ENTRY,
    LOW_POWER_ENTRY_WITH_WAKEUP,
    LOW_POWER_EXIT,
    UNKNOWN_FEATURE,
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
    VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_ACPI_IRQ_INDEX,
    feature,
    wakeup_payload,
)

# the stand-in for the ACPI-notify series and guestpm's firmware (vfio_notify.asl)
STANDIN_DRIVER = "guestpm_vfio_acpi_standin"
RAISE_HOOK = Path("/sys/kernel/debug/guestpm_vfio_acpi_standin/raise")
FIRMWARE_NOTIFY = 0x80           # what the SSDT's _PS3 notifies
NOTIFY_QUEUE = 20                # values the series keeps for a VMM that has not read
NOTIFY_WAIT = 5.0                # s: a notify reaches the eventfd through a workqueue
NOTIFY_SETTLE = 0.5              # s: ACPICA dispatches Notify from a workqueue and no
                                 # interface says it has drained; let raised values land


# ---------------------------------------------------------------- cases
class Env:
    def __init__(self, bdf: str, driver: str = "vfio-pci", no_companion: str | None = None):
        self.bdf = bdf
        self.driver = driver
        self.no_companion = no_companion    # a second device, without an ACPI companion
        self._device: VfioDevice | None = None
        self._error: str | None = None

    @property
    def device(self) -> VfioDevice:
        if self._device is None:
            if self._error:
                raise kselftest.Skip(self._error)
            try:
                self._device = VfioDevice(self.bdf, self.driver)
            except kselftest.Skip as e:
                self._error = str(e)
                raise
        return self._device

    def reopen(self) -> VfioDevice:
        """Close the device fd, group and container, and open them again."""
        self.close()
        self._device = VfioDevice(self.bdf, self.driver)
        return self._device

    def close(self) -> None:
        if self._device:
            self._device.close()
            self._device = None


def needs_low_power(env: Env) -> str | None:
    """Absent only when the kernel says it does not know the feature (ENOTTY, what a
    kernel before 6.1 answers); any other refusal is left to the cases to FAIL on."""
    d = env.device
    rc = feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY)
    if rc == "ENOTTY":
        return f"VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY absent (PROBE answers {rc})"
    return None


SUITE = kselftest.Registry(requires=(needs_low_power,))
CASES, case = SUITE.cases, SUITE.case


def _back_to_d0(d: VfioDevice) -> None:
    feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_EXIT)


@case("low_power")
def low_power_features_are_probed(t):
    """PROBE|SET answers 0 for ENTRY, ENTRY_WITH_WAKEUP and EXIT on an open device in D0."""
    d = t.env.device
    t.expect("device power after open", d.dev.power(), D0)
    for f, name in FEATURE_NAMES.items():
        t.expect(f"PROBE|SET {name}",
                 feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | f), "0")


@case("low_power")
def low_power_get_is_einval(t):
    """The low-power features are SET-only: GET is EINVAL, as a PROBE of GET is."""
    d = t.env.device
    for f, name in FEATURE_NAMES.items():
        t.expect(f"GET {name}", feature(d.fd, VFIO_DEVICE_FEATURE_GET | f), "EINVAL")
    t.expect("PROBE|GET LOW_POWER_ENTRY",
             feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | LOW_POWER_ENTRY),
             "EINVAL")


@case("low_power")
def low_power_entry_suspends_and_exit_resumes(t):
    """LOW_POWER_ENTRY: runtime-suspended in D3hot (PMCSR and power_state agree);
    LOW_POWER_EXIT: active in D0 again."""
    d = t.env.device
    try:
        t.require("LOW_POWER_ENTRY", feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
        t.expect("after ENTRY", d.dev.wait_power(D3HOT), D3HOT)
        t.expect("LOW_POWER_EXIT", feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_EXIT), "0")
        t.expect("after EXIT", d.dev.wait_power(D0), D0)
    finally:
        _back_to_d0(d)


@case("low_power")
def low_power_entry_twice_is_einval(t):
    """A second ENTRY while the first holds is EINVAL and leaves the device suspended."""
    d = t.env.device
    try:
        t.require("first LOW_POWER_ENTRY",
                  feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
        t.expect("second LOW_POWER_ENTRY",
                 feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "EINVAL")
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("LOW_POWER_ENTRY_WITH_WAKEUP on top",
                     feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                             wakeup_payload(efd)), "EINVAL")
        finally:
            os.close(efd)
        t.expect("device power", d.dev.wait_power(D3HOT), D3HOT)
    finally:
        _back_to_d0(d)
    t.expect("after EXIT", d.dev.wait_power(D0), D0)


@case("low_power")
def low_power_wakeup_eventfd_is_signalled_when_the_device_is_touched(t):
    """ENTRY_WITH_WAKEUP: suspended and the eventfd quiet; a config read through the
    device fd resumes the device, signals the eventfd once and ends low-power mode."""
    d = t.env.device
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        t.require("LOW_POWER_ENTRY_WITH_WAKEUP",
                  feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                          wakeup_payload(efd)), "0")
        t.expect("after ENTRY_WITH_WAKEUP", d.dev.wait_power(D3HOT), D3HOT)
        t.expect("eventfd before the touch", eventfd_value(efd), None)
        ids = d.touch()
        t.observed["vendor_device"] = f"{ids & 0xffff:04x}:{ids >> 16:04x}"
        t.expect("config read through the device fd works", ids & 0xffff != 0xffff, True)
        t.expect("eventfd after the touch", eventfd_value(efd), 1)
        t.expect("device power after the touch", d.dev.wait_power(D0), D0)
        t.expect("eventfd stays quiet afterwards", eventfd_value(efd), None)
        t.expect("ENTRY again after the wakeup (low-power mode had ended)",
                 feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
    finally:
        _back_to_d0(d)
        os.close(efd)


@case("low_power")
def low_power_negative_eventfd_is_einval(t):
    """ENTRY_WITH_WAKEUP with wakeup_eventfd = -1 is EINVAL and the device stays in D0."""
    d = t.env.device
    t.expect("ENTRY_WITH_WAKEUP fd -1",
             feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY_WITH_WAKEUP,
                     wakeup_payload(-1)), "EINVAL")
    t.expect("device power", d.dev.power(), D0)


@case("low_power")
def unknown_feature_is_enotty(t):
    """A feature number no kernel defines is ENOTTY, for SET and for PROBE."""
    d = t.env.device
    t.expect("SET 0x7fff", feature(d.fd, VFIO_DEVICE_FEATURE_SET | UNKNOWN_FEATURE), "ENOTTY")
    t.expect("PROBE|SET 0x7fff",
             feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | UNKNOWN_FEATURE),
             "ENOTTY")


def needs_acpi_notify(env: Env) -> str | None:
    """Decided by the kernel's own answers: the device's IRQ count and index 5."""
    d = env.device
    rc, _ = d.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
    if d.num_irqs <= VFIO_PCI_ACPI_IRQ_INDEX and rc == "EINVAL":
        return (f"index 5 is VFIO_PCI_NUM_IRQS: ACPI notify forwarding absent "
                f"(num_irqs {d.num_irqs}, GET_IRQ_INFO(5) {rc})")
    return None


def needs_companion(env: Env) -> str | None:
    if not (env.device.dev.path / "firmware_node").exists():
        return f"{env.bdf} has no ACPI companion (firmware_node): nothing can notify it"
    return None


def needs_value_counter(env: Env) -> str | None:
    """The series passes the notify value as the eventfd counter, through
    eventfd_signal(ctx, n).  Kernels where eventfd_signal() is no longer a function
    (an inline that adds 1, since "eventfd: simplify eventfd_signal()") cannot."""
    try:
        with open("/proc/kallsyms") as fh:
            exported = any(line.split()[2:3] == ["eventfd_signal"] for line in fh)
    except OSError as e:
        return f"cannot read /proc/kallsyms to tell how eventfd_signal() works ({e})"
    if not exported:
        return ("eventfd_signal() takes no count on this kernel (an inline that adds 1; "
                "no eventfd_signal symbol): the series' notify value cannot travel as "
                "the eventfd counter")
    return None


def needs_raise_hook(env: Env) -> str | None:
    if not RAISE_HOOK.exists():
        return (f"nothing to raise a chosen notify value with: {RAISE_HOOK} (the test "
                f"hook of guestpm's {STANDIN_DRIVER} module) is not there")
    return None


ACPI_NOTIFY = (needs_acpi_notify, needs_companion)
ACPI_NOTIFY_RAISED = ACPI_NOTIFY + (needs_raise_hook,)


def signals(t, got: list[int | None], values: list[int]) -> None:
    """Check what the eventfd reads `got` (one per notify raised with `values`) show, on
    any kernel: exactly one signal per read.  Where eventfd_signal() adds 1 a read of 1
    is one signal; where it carries a count, one signal is one of the raised values (a
    sum of two is two signals merged).  The values themselves are checked only where
    the counter can carry them (needs_value_counter); elsewhere the case says why not."""
    why_not = needs_value_counter(t.env)
    t.observed["eventfd counter"] = why_not or "carries the notify value"

    def one(v: int | None) -> str:
        if v is None:
            return "no signal"
        return "one signal" if (v == 1 if why_not else v in values) else f"counter {v}"
    t.expect("one signal per read", [one(v) for v in got], ["one signal"] * len(got))
    if why_not is None:
        t.expect("the values read", got, values)


def wait_value(efd: int, timeout: float = NOTIFY_WAIT) -> int | None:
    """The eventfd's counter once it is signalled (read, so the next value may come),
    or None after `timeout`."""
    p = select.poll()
    p.register(efd, select.POLLIN)
    if not p.poll(timeout * 1000):
        return None
    return eventfd_value(efd)


def raise_notify(bdf: str, *values: int) -> None:
    """Have the firmware notify `bdf`'s companion with each value, through the SSDT's
    GPMN method (evaluated by the stand-in's test hook)."""
    for v in values:
        RAISE_HOOK.write_text(f"{bdf} {v:#x}")
    time.sleep(NOTIFY_SETTLE)


class Notify:
    """An eventfd registered as the trigger of IRQ index 5; unregistered on exit."""

    def __init__(self, t, d: VfioDevice):
        self.t, self.d = t, d
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def __enter__(self) -> Self:
        self.t.require("SET_IRQS(5) eventfd", self.register(self.efd), "0")
        return self

    def register(self, efd: int) -> str:
        return self.d.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
                               VFIO_PCI_ACPI_IRQ_INDEX, struct.pack("<i", efd))

    def loopback(self) -> str:
        return self.d.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
                               VFIO_PCI_ACPI_IRQ_INDEX, b"\1")

    def __exit__(self, *exc) -> None:
        if self.d.fd is not None:
            self.register(-1)
        os.close(self.efd)


@case("acpi_notify", requires=(needs_acpi_notify,))
def acpi_notify_loopback_reaches_the_eventfd(t):
    """[unmerged series v5] IRQ index 5 is one eventfd-capable IRQ; with an eventfd as
    trigger, SET_IRQS DATA_BOOL loops back ACPI_NOTIFY_DEVICE_CHECK as the counter."""
    d = t.env.device
    rc, info = d.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
    t.require("GET_IRQ_INFO(5)", rc, "0")
    t.expect("index 5 count", info["count"], 1)
    t.expect("index 5 is eventfd-capable", bool(info["flags"] & VFIO_IRQ_INFO_EVENTFD), True)
    with Notify(t, d) as n:
        t.expect("eventfd before the loopback", eventfd_value(n.efd), None)
        t.expect("SET_IRQS(5) DATA_BOOL 1", n.loopback(), "0")
        # the series fixes the loopback's value at 1 (DEVICE_CHECK): on a kernel whose
        # eventfd_signal() adds 1 this is the same read, one signal
        t.expect("eventfd after the loopback", wait_value(n.efd), ACPI_NOTIFY_DEVICE_CHECK)


@case("acpi_notify", requires=ACPI_NOTIFY_RAISED)
def acpi_notify_values_arrive_in_order_one_at_a_time(t):
    """[unmerged series v5] Three notifies raised by the firmware before the VMM reads:
    each read gives exactly one signal, and (where the counter carries it) one value,
    in the order raised."""
    d = t.env.device
    values = [FIRMWARE_NOTIFY + 1, FIRMWARE_NOTIFY + 2, FIRMWARE_NOTIFY + 3]
    with Notify(t, d) as n:
        raise_notify(t.env.bdf, *values)
        signals(t, [wait_value(n.efd) for _ in values], values)
        t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=ACPI_NOTIFY_RAISED)
def acpi_notify_queue_keeps_the_newest_20_and_warns(t):
    """[unmerged series v5] One value in the eventfd and 21 waiting: the queue keeps 20,
    drops the oldest waiting one and says so in the kernel log (naming the value, on
    any kernel); 21 reads of one signal each, the newest values where the counter
    carries them."""
    d = t.env.device
    values = [FIRMWARE_NOTIFY + i for i in range(NOTIFY_QUEUE + 2)]
    with kmsg.opened(from_end=True) as log:     # only what this case makes the kernel say
        with Notify(t, d) as n:
            raise_notify(t.env.bdf, *values)
            got = [wait_value(n.efd) for _ in range(NOTIFY_QUEUE + 1)]
            signals(t, got, [values[0]] + values[2:])
            t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)
        said = kmsg.read_records(log)
    dropped = f"dropped the oldest value {values[1]:#x}"
    t.observed["kernel log"] = said[-5:]
    t.expect(f"kernel log says '{dropped}'", any(dropped in line for line in said), True)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_new_eventfd_keeps_the_queued_values(t):
    """[unmerged series v5] Replacing the trigger eventfd keeps what is queued: the
    value already signalled stays in the old eventfd, the rest go to the new one."""
    d = t.env.device
    with Notify(t, d) as n:
        for i in range(3):
            t.expect(f"loopback {i + 1}", n.loopback(), "0")
        new = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("SET_IRQS(5) the new eventfd", n.register(new), "0")
            t.expect("old eventfd: the value signalled before the swap", wait_value(n.efd),
                     ACPI_NOTIFY_DEVICE_CHECK)
            t.expect("old eventfd afterwards", wait_value(n.efd, NOTIFY_SETTLE), None)
            t.expect("new eventfd: the two queued values",
                     [wait_value(new), wait_value(new)], [ACPI_NOTIFY_DEVICE_CHECK] * 2)
            t.expect("new eventfd afterwards", wait_value(new, NOTIFY_SETTLE), None)
        finally:
            n.register(-1)
            os.close(new)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_disable_stops_delivery(t):
    """[unmerged series v5] After SET_IRQS(5) with fd -1, and after DATA_NONE with count
    0, nothing reaches the eventfd that was the trigger, not even a loopback."""
    d = t.env.device
    none = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE
    for how, disable in (("fd -1", lambda n: n.register(-1)),
                         ("DATA_NONE count 0",
                          lambda n: d.set_irqs(none, VFIO_PCI_ACPI_IRQ_INDEX, b"", count=0))):
        with Notify(t, d) as n:
            t.expect(f"disable with {how}", disable(n), "0")
            t.observed[f"loopback after {how}"] = n.loopback()    # the series says no errno
            t.expect(f"eventfd after {how}", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_registers_again_after_close(t):
    """[unmerged series v5] Closing the device removes its notify handler: after a
    re-open, registering works again and one loopback gives one value."""
    first = Notify(t, t.env.device)
    try:
        t.require("SET_IRQS(5) eventfd", first.register(first.efd), "0")
        t.expect("loopback before close", first.loopback(), "0")
        t.expect("value before close", wait_value(first.efd), ACPI_NOTIFY_DEVICE_CHECK)
        d = t.env.reopen()          # closed with the eventfd still registered, on purpose
    finally:
        os.close(first.efd)
    with Notify(t, d) as n:
        t.expect("loopback after re-open", n.loopback(), "0")
        t.expect("value after re-open", wait_value(n.efd), ACPI_NOTIFY_DEVICE_CHECK)
        t.expect("only one", wait_value(n.efd, NOTIFY_SETTLE), None)


@case("acpi_notify", requires=(needs_acpi_notify,))
def acpi_notify_without_a_companion_is_enodev(t):
    """[unmerged series v5] A device without an ACPI companion has nothing to forward:
    SET_IRQS(5) with an eventfd is ENODEV."""
    if not t.env.no_companion:
        raise kselftest.Skip("no device without an ACPI companion given (--no-companion)")
    other = VfioDevice(t.env.no_companion, t.env.driver)
    try:
        # the premise, not the kernel's behaviour: a device with a companion given
        # as one without is a set-up error, and the case stops on it
        t.require(f"{other.dev.bdf} (given as without a companion) has a firmware_node",
                  (other.dev.path / "firmware_node").exists(), False)
        t.observed["GET_IRQ_INFO(5)"] = other.irq_info(VFIO_PCI_ACPI_IRQ_INDEX)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            t.expect("SET_IRQS(5) eventfd",
                     other.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
                                    VFIO_PCI_ACPI_IRQ_INDEX, struct.pack("<i", efd)), "ENODEV")
        finally:
            os.close(efd)
    finally:
        other.close()


@case("acpi_notify", requires=ACPI_NOTIFY)
def acpi_notify_firmware_notify_on_d3hot_reaches_the_eventfd(t):
    """[unmerged series v5, with vfio LOW_POWER_ENTRY] LOW_POWER_ENTRY puts the device
    into D3hot; the kernel evaluates its companion's _PS3, whose Notify reaches the
    VMM's eventfd as one signal (0x80, where the counter carries it): a notification
    the firmware raised on its own."""
    d = t.env.device
    if needs_low_power(t.env):
        raise kselftest.Skip(needs_low_power(t.env))
    with Notify(t, d) as n:
        try:
            t.require("LOW_POWER_ENTRY",
                      feature(d.fd, VFIO_DEVICE_FEATURE_SET | LOW_POWER_ENTRY), "0")
            t.expect("device power", d.dev.wait_power(D3HOT), D3HOT)
            signals(t, [wait_value(n.efd)], [FIRMWARE_NOTIFY])
        finally:
            _back_to_d0(d)
        t.expect("nothing more", wait_value(n.efd, NOTIFY_SETTLE), None)


def run(bdf: str, select: str = "", driver: str = "vfio-pci",
        no_companion: str | None = None) -> dict:
    env = Env(bdf, driver, no_companion)
    try:
        results = [kselftest.run_case(c, env) for c in CASES if select in c.name]
        d = env._device
        return {"env": {"release": os.uname().release, "machine": os.uname().machine,
                        "bdf": bdf, "iommu_group": d.dev.iommu_group if d else None,
                        "num_irqs": d.num_irqs if d else None,
                        "driver": PciDevice(bdf).driver},
                "results": results}
    finally:
        env.close()


def _arguments(ap) -> None:
    ap.add_argument("bdf", help="the PCI function to hand to vfio-pci, e.g. 0000:00:09.0")
    ap.add_argument("--driver", default="vfio-pci",
                    help=f"vfio-pci, or a variant driver such as {STANDIN_DRIVER}")
    ap.add_argument("--no-companion", metavar="BDF",
                    help="a second device, without an ACPI companion (acpi_notify ENODEV case)")


def main(argv: list[str]) -> int:
    return kselftest.main(
        argv, "python3 -m harness.guest.vfio", CASES,
        lambda a: run(a.bdf, a.select, a.driver, a.no_companion),
        lambda out, a: (f"guestpm vfio-pci power uAPI on {out['env']['release']} "
                        f"({a.bdf}, {a.driver})"), _arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
