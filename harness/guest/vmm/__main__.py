"""python3 -m harness.guest.vmm: run one L2 guest and print the result as one JSON line.

Exit status: 0 when the VM ran to an end (power-off, reset, crash: the caller judges),
2 on bad input or a host that cannot run it (one line on stderr), 4 when KVM lacks a
capability the policy asks for (KVM_CAP_ARM_SYSTEM_SUSPEND), 3 when a bound ended it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from pathlib import Path

from ..kvm.vm import KvmBroken
from . import l2init, relaunch
from .core import Core, write_outdir
from .policy import FAULTS, CapAbsent, Policy, Result, VmmError

DEFAULT_APPEND = f"console=ttyAMA0 {l2init.CMDLINE} rdinit=/init panic=-1"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m harness.guest.vmm", description=__doc__)
    ap.add_argument("--arch", default="arm64", help="the backend: a folder of harness/guest/vmm")
    ap.add_argument("--kernel", required=True, help="the kernel (an arm64 Image, an x86_64 "
                    "bzImage; a file or a block device)")
    ap.add_argument("--dsdt", help="x86_64: the DSDT's AML (a file or the disk it came "
                    "on); ACPI tables are built around it (without it: acpi=off)")
    ap.add_argument("--power-button", type=float, metavar="S", help="x86_64, with --dsdt: "
                    "press the power button (ACPI fixed event) S seconds after set-up")
    ap.add_argument("--s2idle-wake", type=float, metavar="S", help="x86_64, with --dsdt: "
                    "S seconds after the guest's last LPS0 entry call, read every vCPU's "
                    "MP_STATE and set the wake GPE (GPE 0)")
    ap.add_argument("--tick", choices=("lapic", "pit"), help="x86_64: the guest's tick "
                    "from the local APIC timer (the default) or from the PIT (nolapic_timer, "
                    "and no TSC-deadline timer in CPUID)")
    ap.add_argument("--initrd", help="initramfs (default: busybox + the guestpm scenario)")
    ap.add_argument("--suspend", default="honour", metavar="POLICY[,POLICY...]|off",
                    help="SYSTEM_SUSPEND policy, one per call in order, the last for every "
                         "later call: honour, hold or deny (e.g. deny,hold,honour); off: no "
                         "KVM_CAP_ARM_SYSTEM_SUSPEND")
    ap.add_argument("--psci-version", help="MAJOR.MINOR for KVM_REG_ARM_PSCI_VERSION")
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--ram-mib", type=int, default=256)
    ap.add_argument("--append", default="", help="more kernel command line")
    ap.add_argument("--initrd-extra", action="append", default=[], metavar="PATH",
                    help="a cpio (file or block device) appended to the initramfs: modules")
    ap.add_argument("--pmem", metavar="FILE", help="a pmem region backed by FILE (kept "
                    "across VMs: the L2 guest's swap for hibernation)")
    ap.add_argument("--pmem-mib", type=int, default=256)
    ap.add_argument("--relaunch", choices=relaunch.WHEN, default="never",
                    help="after a SHUTDOWN exit boot a new VM on the same pmem: only when "
                         "flagged PSCI_OFF2 (hibernated), or always (a test that needs the "
                         "round trip records that the VMM was not told)")
    ap.add_argument("--relaunch-append", default="", help="its extra command line")
    ap.add_argument("--relaunch-ram-mib", type=int, help="its RAM (default: the same)")
    ap.add_argument("--relaunch-copy-ram-mib", type=int, metavar="MIB",
                    help="with --relaunch: then one more VM with MIB of RAM, on a copy of the "
                         "pmem as the first VM left it (made before the relaunch restores "
                         "from it): an image for another memory size, which must be refused")
    ap.add_argument("--fault", choices=sorted(FAULTS), default="",
                    help="self-tests only: break one promise of the VMM's side of the "
                         "contract (" + "; ".join(f"{k}: {v}" for k, v in FAULTS.items())
                         + ")")
    ap.add_argument("--vcpu-left-on", action="store_true",
                    help="self-tests only: start the last vCPU in a WFI loop outside the "
                         "guest's RAM, a core that is not OFF (give the guest maxcpus=)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--silent", type=float, default=120,
                    help="end a guest that has printed nothing after this long (with "
                         "`quiet` the first line is the L2 /init's; docs/figures.md has "
                         "how long that takes under TCG)")
    ap.add_argument("--out", type=Path, help="directory for exits.jsonl and console.log")
    ap.add_argument("--progress", action="store_true", help="a line on stderr every 15 s")
    ap.add_argument("--kvm", default="/dev/kvm", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        backend = importlib.import_module(f"{__package__}.{a.arch}.backend")
    except ModuleNotFoundError:
        print(f"vmm: no backend {a.arch!r} in harness/guest/vmm", file=sys.stderr)
        return 2
    try:
        major, _, minor = (a.psci_version or "").partition(".")
        version = (int(major), int(minor)) if a.psci_version else None
        policy = Policy(system_suspend_cap=a.suspend != "off",
                        on_suspend=("honour",) if a.suspend == "off"
                        else tuple(a.suspend.split(",")),
                        psci_version=version, vcpus=a.vcpus, ram_mib=a.ram_mib,
                        pmem_mib=a.pmem_mib if a.pmem else 0, fault=a.fault,
                        vcpu_left_on=a.vcpu_left_on)
        kernel = backend.load_kernel(a.kernel)
        if a.initrd:
            initrd = Path(a.initrd).read_bytes()
        else:
            initrd = l2init.initramfs(Path(l2init.BUSYBOX).read_bytes())
        for extra in a.initrd_extra:
            with open(extra, "rb") as fh:
                initrd += fh.read()
        if a.out:
            write_outdir(a.out)
        a.extra = _backend_extra(a)
        vmm = backend.make(kernel, initrd, f"{_append(backend)} {a.append}".strip(), policy,
                           a.out, kvm_path=a.kvm, pmem=a.pmem, **a.extra)
        vmm.setup()
    except CapAbsent as e:
        print(f"vmm: {e}", file=sys.stderr)
        return 4
    except (VmmError, KvmBroken, OSError, ValueError) as e:
        print(f"vmm: {e}", file=sys.stderr)
        return 2
    result = _run(vmm, a)
    if relaunch.wanted(result, a.relaunch):
        copy = None
        if a.relaunch_copy_ram_mib and a.pmem:      # before the relaunch consumes the image
            copy = f"{a.pmem}.copy"
            try:
                relaunch.copy_sparse(a.pmem, copy)
            except OSError as e:
                print(f"vmm: relaunch-copy: copying {a.pmem}: {e}", file=sys.stderr)
                with contextlib.suppress(OSError):
                    os.unlink(copy)
                return 2
        status = _relaunch(backend, kernel, initrd, policy, result, a, "relaunch",
                           a.relaunch_ram_mib or a.ram_mib, a.pmem, relaunch.attach)
        if copy:
            if status is None:
                status = _relaunch(backend, kernel, initrd, policy, result, a, "relaunch-copy",
                                   a.relaunch_copy_ram_mib, copy, relaunch.attach_copy)
            os.unlink(copy)
        if status is not None:
            return status
    print(result.to_json(), flush=True)
    return 3 if result.outcome in ("timeout", "silent") else 0


def _append(backend) -> str:
    """The backend's own command line (its console), arm64's by default."""
    return getattr(backend, "APPEND", DEFAULT_APPEND)


def _backend_extra(a) -> dict:
    """Arguments only some backends take: given only when asked for."""
    if not a.dsdt and a.power_button is None and a.s2idle_wake is None and not a.tick:
        return {}
    if a.arch != "x86_64":
        raise VmmError(f"--dsdt, --power-button, --s2idle-wake, --tick: the x86_64 "
                       f"backend's, not {a.arch}'s")
    extra: dict = {"power_button_s": a.power_button, "s2idle_wake_s": a.s2idle_wake,
                   "tick": a.tick or "lapic"}
    if a.dsdt:
        with open(a.dsdt, "rb") as fh:
            extra["dsdt"] = fh.read()
    return extra


def _relaunch(backend, kernel: bytes, initrd: bytes, policy: Policy, result: Result, a,
              sub: str, ram_mib: int, pmem: str, attach) -> int | None:
    """The next VM on `pmem` (its output in the subdirectory `sub`), attached to the
    result; an exit status when it decides the run's."""
    again = Policy(**{**policy.__dict__, "ram_mib": ram_mib})
    out = a.out / sub if a.out else None
    try:
        if out:
            write_outdir(out)
        vmm2 = backend.make(kernel, initrd,
                            f"{_append(backend)} {a.relaunch_append}".strip(),
                            again, out, kvm_path=a.kvm, pmem=pmem, **a.extra)
        vmm2.setup()
    except (VmmError, KvmBroken, OSError, ValueError) as e:
        print(f"vmm: {sub}: {e}", file=sys.stderr)
        return 2
    second = _run(vmm2, a)
    attach(result, second)
    if second.outcome in ("timeout", "silent"):
        print(result.to_json(), flush=True)
        return 3
    return None


def _run(vmm: Core, a) -> Result:
    try:
        return vmm.run(a.timeout, a.silent, progress=(lambda s: print(
            f"vmm: {s}", file=sys.stderr, flush=True)) if a.progress else None)
    finally:
        vmm.close()


if __name__ == "__main__":
    sys.exit(main())
