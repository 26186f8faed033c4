"""Host side of the L2 tests: an L1 host (the kernel under test, booted with EL2) that
runs guestpm's reference VMM (harness/guest/vmm) on a guest kernel, and what one VMM
run left: its result (exit log included), the L2 scenario's reports, its files.

The L2 kernel and its modules reach L1 as two read-only raw virtio disks: /dev/vda is
the uncompressed Image, /dev/vdb a cpio of the modules the VMM's board needs (pmem),
which the VMM appends to the L2 initramfs.  Copying a 48 MB Image over ssh took 20.7 s
under TCG; a disk is read in about a second."""

from __future__ import annotations

import gzip
import io
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.errors import BootError, GuestMisbehaved, GuestpmError
from harness.guest.cpio import CpioWriter
from harness.guest.vmm import l2init
from harness.guest.vmm.arm64 import board
from harness.image import aml, disks, rootfs
from harness.kernel.kernels import Kernel
from harness.vm import splats as splat_scan
from harness.vm.console import CONTEXT_LINES, FATAL
from harness.vm.machine import Machine
from harness.vm.splats import Splat

MODES = {"vhe": (), "nvhe": ("kvm-arm.mode=nvhe",)}
# the VMs of a VMM run after its first: the result's key, the output subdirectory
LATER_VMS = {"relaunch": "relaunch", "relaunch_copy": "relaunch-copy"}
# the VMM's records that end one SYSTEM_SUSPEND call: refused, or the vCPU restarted
CALL_ENDS = ("suspend-refused", "restart")
ATTEMPT = "attempt"                     # the L2 /init's report that opens a suspend
SUBDIRS = ("", *(f"{d}/" for d in LATER_VMS.values()))
KERNEL_DISK, MODULES_DISK, DSDT_DISK = "/dev/vda", "/dev/vdb", "/dev/vdc"
# x86: the backend, and the DSDT its ACPI tables are built around (third disk)
X86_VMM_ARGS = ("--arch", "x86_64", "--dsdt", DSDT_DISK)
# x86 L2 modules: the ACPI button driver, which arms the wake GPE of the DSDT's
# control-method power button (\_SB.PWRB) for s2idle; without a driver the ACPI core
# leaves it disabled in suspend
X86_MODULES = ("button",)
VMM = "cd /opt/guestpm && python3 -m harness.guest.vmm"


def modules_cpio(kernel: Kernel, names: tuple[str, ...]) -> tuple[bytes, str | None]:
    """The named modules with their dependencies as an initramfs layer for the L2
    guest's busybox initramfs (rootfs.modules_layer, with its directories), and why
    not, if they cannot be had (a kernel without modules: the layer is then empty)."""
    why = None if kernel.modules else f"{kernel.release} comes without a modules directory"
    try:
        return rootfs.modules_layer(kernel, names, directories=True), why
    except GuestpmError as e:
        return rootfs.modules_layer(kernel, (), directories=True), str(e)


def fixture_layer(name: str, ko: bytes, params: str = "") -> bytes:
    """An initramfs layer for the L2 guest with one fixture module (tests/fixtures/),
    which its /init loads after the board's modules (/etc/guestpm/modules.extra), with
    `params`."""
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("lib", "lib/modules", "lib/modules/guestpm", "etc", "etc/guestpm"):
        w.directory(d)
    w.file(f"lib/modules/guestpm/{name}.ko", ko)
    w.file("etc/guestpm/modules.extra", f"{name} {params}".strip().encode() + b"\n")
    w.close()
    return buf.getvalue()


class VmmRefused(Exception):
    """The reference VMM exited 4: the host KVM lacks what the policy asks (`why`, in
    the VMM's words).  Whether that is a SKIP or a FAIL is the tests' call (the host's
    release may promise it: L2Host.on_refused)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class VmmFailed(GuestMisbehaved):
    """The reference VMM failed (an exit status other than 0, 3 and 4)."""


class NoReport(GuestMisbehaved):
    """The L2 guest never printed the report a test reads."""


class NotShutDown(GuestMisbehaved):
    """An L2 run that was to end in the guest's power-off ended otherwise."""


@dataclass(frozen=True)
class GuestDisks:
    qemu_args: tuple[str, ...]
    modules_missing: str | None          # why the L2 modules layer is empty, if it is


def guest_disks(kernel: Kernel) -> GuestDisks:
    data = kernel.image.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    mods, why = modules_cpio(kernel, board.MODULES)
    image = disks.payload(data, "l2-image")
    layer = disks.payload(mods, "l2-modules")
    return GuestDisks(disks.virtio_disk_args(image, node="l2k", fmt="raw", readonly=True)
                      + disks.virtio_disk_args(layer, node="l2m", fmt="raw", readonly=True),
                      why)


def where_it_stood(m: Machine, result: dict) -> str:
    """Each vCPU a bound stopped, named with L1's kallsyms (an x86 L2 is L1's own kernel,
    booted `nokaslr`): its RIP, then the kernel-text words on its stack, innermost first,
    one vCPU a block:

        vCPU 0 (RUNNABLE) at native_queued_spin_lock_slowpath+0x6a
            _raw_spin_lock+0x29
    """
    stuck = [e for e in result["exits"] if e["event"] == "stuck"]
    words = sorted({w for e in stuck for w in [e.get("rip", "")] + e.get("stack", []) if w})
    if not words:
        return ""
    out = m.ssh.run(f"cd /opt/guestpm && python3 -m harness.guest.ksyms {' '.join(words)}",
                    timeout=60).output
    name = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    lines = []
    for e in stuck:
        rip = e.get("rip", "?")
        lines.append(f"vCPU {e['vcpu']} ({e.get('mp_state')}) at {name.get(rip, rip)}")
        lines += [f"    {name.get(w, w)}" for w in e.get("stack", [])]
    return "\n".join(lines) + "\n"


def x86_guest_disks(kernel: Kernel) -> GuestDisks:
    """x86: the bzImage as it is (the VMM's loader reads its boot protocol), the L2
    modules layer (X86_MODULES) and the L2 DSDT, compiled here by iasl."""
    mods, why = modules_cpio(kernel, X86_MODULES)
    image = disks.payload(kernel.image.read_bytes(), "l2-image")
    layer = disks.payload(mods, "l2-modules")
    dsdt = disks.payload(aml.compile_asl(aml.ASL_DIR / "l2_x86_dsdt.asl").read_bytes(),
                         "l2-dsdt")
    return GuestDisks(disks.virtio_disk_args(image, node="l2k", fmt="raw", readonly=True)
                      + disks.virtio_disk_args(layer, node="l2m", fmt="raw", readonly=True)
                      + disks.virtio_disk_args(dsdt, node="l2dsdt", fmt="raw", readonly=True),
                      why)


def parse_report(line: str) -> dict[str, str]:
    """`WORD k=v k={v with spaces}` -> {k: v} (pure)."""
    return {k: v[1:-1] if v.startswith("{") else v
            for k, v in re.findall(r"(\w+)=(\{[^}]*\}|\S*)", line)}


def crash_in(console: str) -> str | None:
    """The first Oops or panic in an L2 console, from its first line on (pure)."""
    lines = console.replace("\r", "").split("\n")
    for i, line in enumerate(lines):
        if FATAL.search(line):
            return "\n".join(lines[max(i - 1, 0):i + CONTEXT_LINES])
    return None


@dataclass
class L2Run:
    """One VMM run: the result (its exit log included), the L2 console and its reports;
    `relaunch` is the next VM on the same pmem, when the run had one.  `splats`: the L2
    kernel's splats in both consoles; every test that reads the run answers for them."""
    name: str
    result: dict
    console_text: str
    where: str
    art: Path | None = None
    splats: list[Splat] = field(default_factory=list)

    def crashes(self) -> list[tuple[L2Run, str]]:
        """(run, the crash) for each VM of this run where the L2 kernel oopsed or
        panicked."""
        out = []
        for run in self.vms():
            crash = crash_in(run.console())
            if crash:
                out.append((run, crash))
        return out

    def vms(self) -> list[L2Run]:
        """This run's first VM and the VMs the VMM booted after it."""
        return [self] + [r for r in (self._later(k) for k in LATER_VMS) if r is not None]

    def only(self, *later: str) -> L2Run:
        """This run as a test that reads only its first VM and the `later` ones (keys of
        LATER_VMS) sees it: the other VMs' results and splats left out."""
        drop = [k for k in LATER_VMS if k not in later]
        dirs = {LATER_VMS[k] for k in drop}
        return L2Run(self.name, {k: v for k, v in self.result.items() if k not in drop},
                     self.console_text, self.where, self.art,
                     [s for s in self.splats if Path(s.log).parent.name not in dirs])

    def attempt(self, k: int) -> L2Run:
        """The k-th suspend (from 1) of a run whose L2 /init suspended more than once
        (guestpm.suspend=N), the VMM's policy per call: its exits (the set-up, then from
        the end of the call before, a refusal or a restart, to the end of this one; the
        last attempt's run to the end) and its reports (the boot's, then from its
        `attempt` report to the next).  What a test of one call reads, as if the boot had
        made only that call."""
        exits = self.result["exits"]
        ends = [i + 1 for i, e in enumerate(exits) if e["event"] in CALL_ENDS]
        lines = self.console_text.split("\n")
        opens = [i for i, line in enumerate(lines)
                 if (line.split(l2init.PREFIX, 1)[1:] or [""])[0].strip().startswith(
                     f"{ATTEMPT} ")]
        last = k >= len(opens)
        starts = [0] + ends
        lo = starts[k - 1] if k - 1 < len(starts) else len(exits)
        hi = len(exits) if last or k - 1 >= len(ends) else ends[k - 1]
        window = [e for e in exits[:lo] if e["event"] == "setup"] + exits[lo:hi]
        if k - 1 < len(opens):
            text = lines[:opens[0]] + lines[opens[k - 1]:None if last else opens[k]]
        else:
            text = lines[:opens[0]] if opens else lines
        return L2Run(f"{self.name} (attempt {k})", {**self.result, "exits": window},
                     "\n".join(text), self.where, self.art, self.splats)

    @property
    def reports(self) -> list[str]:
        return l2init.reports(self.console_text)

    def events(self, name: str) -> list[dict]:
        return [e for e in self.result["exits"] if e["event"] == name]

    def system_events(self, typ: str) -> list[dict]:
        return [e for e in self.events("system-event") if e["type"] == typ]

    def has(self, key: str) -> bool:
        return any(re.split(r"[ =]", r, maxsplit=1)[0] == key for r in self.reports)

    def report(self, key: str) -> dict[str, str]:
        """The report line that starts with `key`, as key=value fields."""
        line = next((r for r in self.reports if re.split(r"[ =]", r, maxsplit=1)[0] == key), None)
        if line is None:
            raise NoReport(f"the L2 guest never reported {key!r}; it said {self.reports}; "
                           f"{self.ending()}")
        return parse_report(line)

    def ending(self) -> str:
        """How the run ended, its last exits and the L2 console's tail: what a FAIL
        message carries when CI keeps nothing else."""
        return f"the run ended {self.result['outcome']} ({self.result['detail']}) after " \
               f"{self.result.get('elapsed_s', '?')} s; last exits:\n{self.log()}\n" \
               f"L2 console tail:\n{self.console()[-1500:]}\n({self.where})"

    def log(self, n: int = 12) -> str:
        keep = [e for e in self.result["exits"] if e["event"] != "setup"]
        return "\n".join(json.dumps(e) for e in keep[-n:])

    def console(self) -> str:
        return self.console_text

    @property
    def relaunch(self) -> L2Run | None:
        """The next VM on the same pmem."""
        return self._later("relaunch")

    @property
    def relaunch_copy(self) -> L2Run | None:
        """The VM on a copy of the pmem as the first VM left it."""
        return self._later("relaunch_copy")

    def _later(self, key: str) -> L2Run | None:
        r = self.result.get(key)
        if not r:
            return None
        sub = LATER_VMS[key]
        text = (self.art / sub / "console.log").read_text(errors="replace") \
            if self.art else r.get("console_tail", "")
        return L2Run(f"{self.name} ({sub})", r, text,
                     self.where.replace("console:", f"console ({sub}/):"),
                     splats=self.splats)

    def assert_ended(self) -> None:
        """NotShutDown unless the L2 guest powered off (how the run ended, if not)."""
        if self.result["outcome"] != "shutdown":
            raise NotShutDown(f"L2 run {self.name}: {self.ending()}")


@dataclass
class L2Host:
    """The L1 host machine with an L2 guest kernel attached.  It drives the reference
    VMM and reports what it saw; the judges are the tests' (the three callables, set by
    their fixture: tests/e2e/conftest.py, harness/plugin/l2_judge.py)."""
    mode: str
    machine: Machine
    guest: Kernel
    disks: GuestDisks
    # the runs made on this machine, by (name, args, append): shared by every L2Host on
    # it (HostPool.l2_runs), whose numbering names the VMM's output directories
    runs: dict[tuple, L2Run] = field(default_factory=dict)
    # checked every second while the VMM runs, besides the machine's own watchdog: the
    # tests' fixture names a known defect of the L1 host here
    watch: Callable[[], None] | None = None
    # called with every run a test reads, the cached ones included: the fixture hands
    # its splats to that test and fails it on an L2 crash
    on_read: Callable[[L2Run], None] | None = None
    # called with the VMM's reason when it exits 4 (the host KVM refused what the policy
    # asks): the fixture SKIPs, or FAILs a refusal the host's release promises against
    on_refused: Callable[[str], None] | None = None

    def run(self, name: str, *args: str, append: tuple[str, ...] = (),
            timeout: float = 300, silent: float = 180,
            reads: tuple[str, ...] | None = None) -> L2Run:
        """The reference VMM in L1, once per (name, args, append) on this host machine.
        Exit 4 from the VMM (the host KVM lacks what the policy asks) goes to
        `on_refused`, else raises VmmRefused; another failure of the VMM is VmmFailed.
        `reads`: the VMs after the first that the caller reads (L2Run.only), if not all."""
        key = (name, args, append)
        if key not in self.runs:
            self.runs[key] = self._run(name, args, append, timeout, silent, len(self.runs))
        run = self.runs[key] if reads is None else self.runs[key].only(*reads)
        if self.on_read:
            self.on_read(run)
        return run

    def _run(self, name: str, args: tuple[str, ...], append: tuple[str, ...],
             timeout: float, silent: float, n: int) -> L2Run:
        out = f"/tmp/l2-{n}"
        cmd = (f"{VMM} --kernel {KERNEL_DISK} --initrd-extra {MODULES_DISK} --out {out} "
               f"--timeout {timeout:g} --silent {silent:g} "
               f"{' '.join(shlex.quote(a) for a in args)} "
               f"--append {shlex.quote(' '.join(append))}")
        art = self.machine.workdir / f"l2-{self.mode}-{n}-{name}"
        for sub in LATER_VMS.values():
            (art / sub).mkdir(parents=True, exist_ok=True)
        (art / "command.txt").write_text(cmd + "\n")
        running = self.machine.ssh.start(cmd)

        def gave_up() -> str:
            running.chan.close()
            # its VMM may still hold /dev/kvm and the next run's directory: no further
            # L2 test runs on this host (the pool boots another), and what the VMM wrote
            # so far is kept
            self.machine.retired = f"its reference VMM ({name}) did not finish"
            try:
                self._fetch(out, art)
                wrote = f"what it wrote: {art}"
            except GuestpmError as e:
                wrote = f"its logs could not be read ({e})"
            return (f"the reference VMM ({name}) did not finish within {2 * timeout + 60:g}s "
                    f"(its bound is {timeout:g}s); {wrote}")
        self.machine.wait_until(running.done, 2 * timeout + 60, f"the reference VMM ({name})",
                                also=self.watch, interval=1, fail=gave_up)
        try:
            r = running.wait(10)
        except BootError:
            if self.watch:               # the L1 console may know why the link went
                self.watch()
            raise
        self._fetch(out, art)
        found = []
        for sub in SUBDIRS:             # the L2 kernel's splats fail its readers too
            log = art / sub / "console.log"
            for s in splat_scan.scan(log.read_text(errors="replace"), "L2 console", log, FATAL):
                s.own = False
                self.machine.splats.add(s, self.guest.release)   # recorded, and allowed?
                found.append(s)
        where = f"VMM exit log and L2 console: {art}"
        if r.status == 4:
            why = r.stderr.strip().removeprefix("vmm: ")
            if self.on_refused:
                self.on_refused(why)
            raise VmmRefused(why)
        if r.status not in (0, 3):
            crash = crash_in((art / "console.log").read_text(errors="replace"))
            raise VmmFailed(f"the reference VMM failed (exit {r.status}): {r.stderr.strip()} "
                            f"({where})" + (f"; the L2 kernel crashed:\n{crash}" if crash else ""))
        result = json.loads(r.output.strip().splitlines()[-1])
        (art / "result.json").write_text(json.dumps(result, indent=1))
        console = (art / "console.log").read_text(errors="replace")
        return L2Run(name, result, console, where, art, found)

    def _fetch(self, out: str, art: Path) -> None:
        """The VMM's exit log and the L2 console (of each VM of the run)."""
        for sub in SUBDIRS:
            for f in ("exits.jsonl", "console.log"):
                got = self.machine.ssh.run(f"cat {out}/{sub}{f} 2>/dev/null", timeout=60)
                (art / sub / f).write_text(got.output)


class HostPool(Protocol):
    """Where L1 host machines come from (the test plugin's MachinePool): a booted machine
    per configuration, and the L2 runs made on each machine."""

    def get(self, append: tuple[str, ...], tag: str,
            qemu_args: tuple[str, ...] = ()) -> Machine: ...

    def l2_runs(self, m: Machine) -> dict[tuple, L2Run]: ...


def host(pool: HostPool, mode: str, guest: Kernel, same: bool = True) -> L2Host:
    """The L1 host machine of the L2 tests in `mode`, with `guest` attached (shared by
    every L2 test of the target that names the same guest)."""
    d = guest_disks(guest)
    tag = f"l2-{mode}" if same else f"l2-{mode}-guest-{guest.release}"
    m = pool.get(MODES[mode], tag=tag, qemu_args=d.qemu_args)
    return L2Host(mode, m, guest, d, pool.l2_runs(m))


def x86_vmm_args(m: Machine) -> tuple[str, ...]:
    """The x86 backend's arguments for an L2 guest of L1 host `m`: the DSDT disk and,
    under TCG, the guest's tick from the PIT.  With nested SVM emulated, L2 can take an
    interrupt inside its own interrupt handler and hang (docs/known-defects.md, "x86_64
    L1 host under TCG"): at stop 40, 4 of 9 L2 boots of 7.2 on the local APIC timer, 4 of
    21 on the PIT (3 of 9 of 7.2's): it did no worse, and it is no fix."""
    return (*X86_VMM_ARGS, *(("--tick", "pit") if m.profile.accelerator == "tcg" else ()))


def x86_host(pool: HostPool, guest: Kernel) -> L2Host:
    """The x86_64 L1 host machine of the x86 L2 tests (nested SVM), with `guest` (the
    kernel under test) on its disks; its VMM runs take x86_vmm_args(machine)."""
    d = x86_guest_disks(guest)
    m = pool.get((), tag="l2-x86", qemu_args=d.qemu_args)
    return L2Host("x86", m, guest, d, pool.l2_runs(m))
