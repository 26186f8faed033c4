"""python3 -m harness.guest.vmm: run one L2 guest and print the result as one JSON line.

Exit status: 0 when the VM ran to an end (power-off, reset, crash: the caller judges),
2 on bad input or a host that cannot run it (one line on stderr), 4 when KVM lacks a
capability the policy asks for (KVM_CAP_ARM_SYSTEM_SUSPEND), 3 when a bound ended it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import l2init
from .vmm import CapAbsent, Policy, ReferenceVmm, VmmError, load_kernel, write_outdir

DEFAULT_APPEND = "console=ttyAMA0 quiet rdinit=/init panic=-1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m harness.guest.vmm", description=__doc__)
    ap.add_argument("--kernel", required=True, help="arm64 Image (file or block device)")
    ap.add_argument("--initrd", help="initramfs (default: busybox + the guestpm scenario)")
    ap.add_argument("--suspend", default="honour", choices=("honour", "hold", "deny", "off"),
                    help="SYSTEM_SUSPEND policy; off: no KVM_CAP_ARM_SYSTEM_SUSPEND")
    ap.add_argument("--psci-version", help="MAJOR.MINOR for KVM_REG_ARM_PSCI_VERSION")
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--ram-mib", type=int, default=256)
    ap.add_argument("--append", default="", help="more kernel command line")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--silent", type=float, default=60,
                    help="end a guest that prints nothing for this long")
    ap.add_argument("--out", type=Path, help="directory for exits.jsonl and console.log")
    ap.add_argument("--progress", action="store_true", help="a line on stderr every 15 s")
    a = ap.parse_args(argv)
    try:
        version = tuple(int(x) for x in a.psci_version.split(".")) if a.psci_version else None
        policy = Policy(system_suspend_cap=a.suspend != "off",
                        on_suspend="honour" if a.suspend == "off" else a.suspend,
                        psci_version=version, vcpus=a.vcpus, ram_mib=a.ram_mib)
        kernel = load_kernel(a.kernel)
        if a.initrd:
            initrd = Path(a.initrd).read_bytes()
        else:
            initrd = l2init.initramfs(Path(l2init.BUSYBOX).read_bytes())
        if a.out:
            write_outdir(a.out)
        vmm = ReferenceVmm(kernel, initrd, f"{DEFAULT_APPEND} {a.append}".strip(), policy,
                           a.out)
        vmm.setup()
    except CapAbsent as e:
        print(f"vmm: {e}", file=sys.stderr)
        return 4
    except (VmmError, OSError, ValueError) as e:
        print(f"vmm: {e}", file=sys.stderr)
        return 2
    try:
        result = vmm.run(a.timeout, a.silent, progress=(lambda s: print(
            f"vmm: {s}", file=sys.stderr, flush=True)) if a.progress else None)
    finally:
        vmm.close()
    print(result.to_json(), flush=True)
    return 3 if result.outcome in ("timeout", "silent") else 0


if __name__ == "__main__":
    sys.exit(main())
