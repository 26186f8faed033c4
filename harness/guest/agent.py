"""The guest agent: runs a named scenario and prints its result as one JSON line.

    python3 -m harness.guest.agent SCENARIO ['{"json": "args"}']

Exit status 0 when the scenario ran (whatever it found), 2 when it raised: the
host side decides verdicts from the data, the agent only gathers evidence.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from collections.abc import Callable

from . import kmsg, kvm

SCENARIOS: dict[str, Callable[..., dict]] = {}


def scenario(fn: Callable[..., dict]) -> Callable[..., dict]:
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


@scenario
def facts() -> dict:
    """Who is running: kernel release, machine, uptime, modules, kvm."""
    return {
        "release": platform.release(),
        "machine": platform.machine(),
        "uptime": float((_read("/proc/uptime") or "0").split()[0]),
        "cmdline": _read("/proc/cmdline"),
        "modules": sorted(line.split()[0] for line in (_read("/proc/modules") or "").splitlines()),
        "kvm": kvm.probe(),
    }


@scenario
def psci(select: str = "", selftest: bool = False) -> dict:
    """The arm64 PSCI uAPI cases (harness.guest.psci): environment and per-case results
    (selftest: the harness's own bound on a spinning vCPU instead)."""
    from . import psci as cases
    return cases.run(select, selftest)


@scenario
def x86io(select: str = "") -> dict:
    """The x86 KVM exit cases (harness.guest.x86io): port I/O, MMIO and HLT of a tiny
    real-mode guest."""
    from . import x86io as cases
    return cases.run(select)


@scenario
def vfio(bdf: str, select: str = "", driver: str = "vfio-pci",
         no_companion: str | None = None) -> dict:
    """The vfio-pci power uAPI cases (harness.guest.vfio) on PCI function `bdf`, bound
    to `driver`."""
    from . import vfio as cases
    return cases.run(bdf, select, driver, no_companion)


@scenario
def dmesg(grep: str = "") -> dict:
    return {"lines": [ln for ln in kmsg.log() if grep in ln]}


@scenario
def acpi_device(hid: str) -> dict:
    """The ACPI devices with _HID `hid`, as the guest's sysfs shows them: status and the
    driver bound to the ACPI device itself or to its physical node (a platform driver)."""
    base = "/sys/bus/acpi/devices"
    found = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if name.split(":")[0] != hid:
            continue
        dev = os.path.join(base, name)
        drivers = {}
        for node in ["."] + sorted(n for n in os.listdir(dev) if n.startswith("physical_node")):
            link = os.path.join(dev, node, "driver")
            if os.path.islink(link):
                drivers[os.path.normpath(os.path.join(dev, node))] = \
                    os.path.basename(os.readlink(link))
        found.append({"name": name, "status": _read(os.path.join(dev, "status")),
                      "path": _read(os.path.join(dev, "path")), "drivers": drivers})
    return {"hid": hid, "devices": found}


@scenario
def wakeup_irq() -> dict:
    """/sys/power/pm_wakeup_irq and the /proc/interrupts line that names that IRQ."""
    irq = _read("/sys/power/pm_wakeup_irq")
    line = None
    if irq and irq.isdigit():
        for ln in (_read("/proc/interrupts") or "").splitlines():
            if ln.split(":", 1)[0].strip() == irq:
                line = " ".join(ln.split())
    return {"irq": irq, "interrupts": line,
            "names": line.split()[-1].split(",") if line else []}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SCENARIOS:
        print(json.dumps({"error": f"unknown scenario; known: {sorted(SCENARIOS)}"}))
        return 2
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        result = SCENARIOS[argv[0]](**kwargs)
    except Exception as e:  # report, don't crash: the host shows it as the actual value
        print(json.dumps({"scenario": argv[0], "error": repr(e),
                          "traceback": traceback.format_exc()}))
        return 2
    print(json.dumps({"scenario": argv[0], "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
