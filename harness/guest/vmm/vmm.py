"""The reference VMM: boots an arm64 Linux Image on /dev/kvm and does the VMM's side of
PSCI SYSTEM_SUSPEND (api.rst: "the sole responsibility of userspace") and reads the
SYSTEM_OFF2 flag of a SHUTDOWN exit, which no public VMM does.

One thread per vCPU runs KVM_RUN; the main thread owns the bound.  Every exit but
MMIO is logged with its time, and system events also with the calling vCPU's x0..x3
and every vCPU's MP_STATE (the other vCPUs are kicked out of KVM_RUN to read it).

Policy is data (`Policy`): whether the VM gets KVM_CAP_ARM_SYSTEM_SUSPEND, what a
SUSPEND exit gets (honour in KVM, hold in the VMM, deny), the PSCI version, vCPUs."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kvm import arm64, uapi
from ..kvm.vm import Kvm, KvmBroken, KvmUnavailable, Vcpu, install_kick_handler
from . import board, image, l2init
from .devices import Pl011, Pl031
from .fdt import to_dtb

ON_SUSPEND = ("honour", "hold", "deny")
MiB = 1 << 20


class VmmError(Exception):
    """Bad input or a host that cannot run the VM: one line for the user."""


class CapAbsent(VmmError):
    """The host KVM lacks a capability the policy asks for (a SKIP for tests)."""


@dataclass(frozen=True)
class Policy:
    system_suspend_cap: bool = True
    on_suspend: str = "honour"          # honour: MP_STATE_SUSPENDED, KVM waits for an
                                        # interrupt (WAKEUP exit); hold: the VMM waits for
                                        # its RTC alarm; deny: x0 = DENIED
    psci_version: tuple[int, int] | None = None     # None: KVM's default
    vcpus: int = 2
    ram_mib: int = 256
    pmem_mib: int = 0                   # a pmem region backed by `pmem` (a file)

    def __post_init__(self):
        if self.on_suspend not in ON_SUSPEND:
            raise VmmError(f"on_suspend {self.on_suspend!r}: one of {', '.join(ON_SUSPEND)}")
        if not 1 <= self.vcpus <= 8:
            raise VmmError(f"{self.vcpus} vCPUs: 1..8")


@dataclass
class Result:
    outcome: str                        # shutdown, reset, crash, timeout, silent, error
    detail: str = ""
    off2: bool | None = None            # SHUTDOWN: the PSCI_OFF2 flag in data[0]
    elapsed_s: float = 0.0
    mmio_exits: dict = field(default_factory=dict)
    mmio_s: float = 0.0
    exits: list = field(default_factory=list)
    console_tail: str = ""
    psci_version: str = ""
    system_suspend_cap: bool | None = None
    relaunch: dict | None = None        # the next VM on the same pmem, when there was one

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class ExitLog:
    """Timestamped records, kept in memory and appended to a JSONL file."""

    def __init__(self, path: Path | None, t0: float):
        self.t0, self.records, self.lock = t0, [], threading.Lock()
        self.fh = open(path, "a", buffering=1) if path else None

    def add(self, event: str, **fields) -> dict:
        rec = {"t": round(time.monotonic() - self.t0, 4), "event": event, **fields}
        with self.lock:
            self.records.append(rec)
            if self.fh:
                self.fh.write(json.dumps(rec) + "\n")
        return rec

    def close(self) -> None:
        if self.fh:
            self.fh.close()


def _s64(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


class ReferenceVmm:
    def __init__(self, kernel: bytes, initrd: bytes, bootargs: str, policy: Policy,
                 outdir: Path | None = None, kvm_path: str = "/dev/kvm",
                 pmem: str | None = None):
        self.policy = policy
        self.hdr = image.parse(kernel[:64])
        self.kernel, self.initrd, self.bootargs = kernel, initrd, bootargs
        self.outdir = outdir
        self.t0 = time.monotonic()
        self.log = ExitLog(outdir / "exits.jsonl" if outdir else None, self.t0)
        self.console = bytearray()
        self.console_fh = open(outdir / "console.log", "ab", buffering=0) if outdir else None
        self.last_output = time.monotonic()
        self.done = threading.Event()
        self.result: Result | None = None
        self.cv = threading.Condition()
        self.pausing = False
        self.where: dict[int, str] = {}
        self.snapshot_lock = threading.Lock()
        self.resume_at: dict[int, tuple[int, int]] = {}
        self.mmio_count: dict[str, int] = {}
        self.mmio_s = 0.0
        self.kvm_path = kvm_path
        self.pmem = pmem
        if policy.pmem_mib and not pmem:
            raise VmmError("a pmem region needs a backing file")
        self.ram_size = policy.ram_mib * MiB
        self.uart = Pl011(self._console_out, lambda level: self.vm.arm64_spi(board.UART_INTID, level))
        self.rtc = Pl031(lambda level: self.vm.arm64_spi(board.RTC_INTID, level),
                         on_event=lambda name, **f: self.log.add(name, **f))
        self.devices = [(board.UART, 0x1000, "pl011", self.uart),
                        (board.RTC, 0x1000, "pl031", self.rtc)]

    # ------------------------------------------------------------------ set-up
    def _console_out(self, b: bytes) -> None:
        self.console.extend(b)
        self.last_output = time.monotonic()
        if self.console_fh:
            self.console_fh.write(b)
        if b == b"\n":                  # the scenario's reports, timed on the VMM's clock
            start = self.console.rfind(b"\n", 0, len(self.console) - 1) + 1
            line = bytes(self.console[start:-1]).decode(errors="replace")
            i = line.find(l2init.PREFIX)
            if i >= 0:
                self.log.add("l2-report", text=line[i + len(l2init.PREFIX):].strip())

    def setup(self) -> None:
        p = self.policy
        try:
            self.kvmfd = Kvm(self.kvm_path)
        except (KvmUnavailable, KvmBroken) as e:
            raise VmmError(str(e)) from None
        self.vm = self.kvmfd.create_vm()
        self.ram = self.vm.add_memory(0, board.RAM, self.ram_size)
        if p.pmem_mib:
            self.vm.add_file_memory(1, board.PMEM, self.pmem, p.pmem_mib * MiB)
        has_cap = self.vm.check_extension(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND) > 0
        if p.system_suspend_cap:
            if not has_cap:
                raise CapAbsent("KVM_CAP_ARM_SYSTEM_SUSPEND absent: this host KVM cannot "
                                "forward PSCI SYSTEM_SUSPEND to the VMM")
            self.vm.enable_cap(uapi.KVM_CAP_ARM_SYSTEM_SUSPEND)
        self.features: dict[int, tuple[int, ...]] = {}
        for n in range(p.vcpus):
            v = self.vm.create_vcpu(n)
            feats = (uapi.KVM_ARM_VCPU_PSCI_0_2,) + ((uapi.KVM_ARM_VCPU_POWER_OFF,) if n else ())
            v.arm64_init(*feats)
            self.features[n] = feats
        if p.psci_version:
            want = arm64.psci_version(*p.psci_version)
            default = self.vm.vcpus[0].get_reg(uapi.KVM_REG_ARM_PSCI_VERSION)
            try:
                self.vm.vcpus[0].set_reg(uapi.KVM_REG_ARM_PSCI_VERSION, want)
            except OSError as e:
                raise CapAbsent(f"this host KVM refuses PSCI version {arm64.version_str(want)} "
                                f"({errno.errorcode.get(e.errno, e.errno)}); its PSCI version "
                                f"is {arm64.version_str(default)}") from None
        self.psci_version = arm64.version_str(
            self.vm.vcpus[0].get_reg(uapi.KVM_REG_ARM_PSCI_VERSION))
        gic = self.vm.create_device(uapi.KVM_DEV_TYPE_ARM_VGIC_V3)
        gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, board.NR_IRQS)
        gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, board.GIC_DIST)
        gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST,
                     board.GIC_REDIST)
        gic.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT)
        self._load()
        self.log.add("setup", vcpus=p.vcpus, ram_mib=p.ram_mib, psci_version=self.psci_version,
                     system_suspend_cap=p.system_suspend_cap, host_has_cap=has_cap,
                     on_suspend=p.on_suspend, system_event_data=self.kvmfd.system_event_data,
                     pmem_mib=p.pmem_mib, pmem=self.pmem)

    def _load(self) -> None:
        """Image at RAM + text_offset (2 MiB aligned), the initrd after its image_size,
        the DTB in the last 2 MiB (booting.rst: 8-byte aligned, at most 2 MiB)."""
        k_at = self.hdr.text_offset
        k_end = k_at + max(self.hdr.image_size, len(self.kernel))
        i_at = (k_end + 2 * MiB - 1) & ~(2 * MiB - 1)
        dtb_at = self.ram_size - 2 * MiB
        if i_at + len(self.initrd) > dtb_at:
            raise VmmError(f"{self.policy.ram_mib} MiB of RAM cannot hold a "
                           f"{k_end // MiB} MiB kernel and a {len(self.initrd) // MiB} MiB initrd")
        self.ram[k_at:k_at + len(self.kernel)] = self.kernel
        self.ram[i_at:i_at + len(self.initrd)] = self.initrd
        layout = board.Layout(self.ram_size, self.policy.vcpus, self.bootargs,
                              (board.RAM + i_at, board.RAM + i_at + len(self.initrd)),
                              pmem_size=self.policy.pmem_mib * MiB)
        dtb = to_dtb(board.device_tree(layout))
        self.ram[dtb_at:dtb_at + len(dtb)] = dtb
        boot = self.vm.vcpus[0]
        boot.set_reg(uapi.ARM64_PC, board.RAM + k_at)
        boot.set_reg(uapi.arm64_x(0), board.RAM + dtb_at)
        for n in (1, 2, 3):
            boot.set_reg(uapi.arm64_x(n), 0)

    # ------------------------------------------------------------------ running
    def run(self, timeout: float = 300, silent_s: float = 120,
            progress=None) -> Result:
        """Run until the guest powers off, resets or crashes, or a bound ends it."""
        install_kick_handler()
        self.log.add("start")
        threads = [threading.Thread(target=self._vcpu_loop, args=(v,), daemon=True,
                                    name=f"vcpu{v.id}") for v in self.vm.vcpus]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 15
        while not self.done.wait(0.5):
            now = time.monotonic()
            if now > deadline:
                self._finish("timeout", f"no power-off within {timeout:g} s")
            elif now - self.last_output > silent_s and not self.console:
                self._finish("silent", f"the guest printed nothing in {silent_s:g} s")
            elif progress and now > next_note:
                next_note = now + 15
                tail = bytes(self.console[-200:]).decode(errors="replace").strip()
                progress(f"{now - self.t0:.0f} s, {sum(self.mmio_count.values())} MMIO "
                         f"exits, {len(self.log.records)} events; console: "
                         f"{tail.splitlines()[-1] if tail else '(nothing yet)'}")
        for v in self.vm.vcpus:
            v.kick()
        for t in threads:
            t.join(5)
            if t.is_alive():        # a vCPU that ignores kicks: report it, never hang
                self.result.detail += f"; {t.name} did not stop"
        self.rtc.close()
        r = self.result
        r.elapsed_s = round(time.monotonic() - self.t0, 3)
        r.mmio_exits = dict(self.mmio_count)
        r.mmio_s = round(self.mmio_s, 3)
        r.exits = list(self.log.records)
        r.console_tail = bytes(self.console[-4000:]).decode(errors="replace")
        r.psci_version = self.psci_version
        r.system_suspend_cap = self.policy.system_suspend_cap
        self.log.add("end", outcome=r.outcome, detail=r.detail)
        return r

    def close(self) -> None:
        self.log.close()
        if self.console_fh:
            self.console_fh.close()
        self.vm.close()
        self.kvmfd.close()

    def _finish(self, outcome: str, detail: str = "", **extra) -> None:
        with self.cv:
            if self.result is None:
                self.result = Result(outcome, detail, **extra)
                self.log.add("finish", outcome=outcome, detail=detail)
            self.done.set()
            self.pausing = False
            self.cv.notify_all()
        for v in self.vm.vcpus:
            v.kick()

    def _vcpu_loop(self, v: Vcpu) -> None:
        try:
            while not self.done.is_set():
                with self.cv:
                    while self.pausing and not self.done.is_set():
                        self.cv.wait(0.5)
                    if self.done.is_set():
                        break
                    self.where[v.id] = "run"
                try:
                    ex = v.run_in_thread()
                finally:
                    with self.cv:
                        self.where[v.id] = "out"
                        self.cv.notify_all()
                if ex is not None:
                    self._handle(v, ex)
        except Exception as e:          # an ioctl that fails: the VM cannot go on
            self._finish("error", f"vCPU {v.id}: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ state
    def snapshot(self, caller: Vcpu) -> list[dict]:
        """Every vCPU's MP_STATE (and the caller's registers), read with the other
        vCPUs kicked out of KVM_RUN and held out until the read is done."""
        with self.snapshot_lock:
            with self.cv:
                self.pausing = True
            others = [v for v in self.vm.vcpus if v is not caller]
            deadline = time.monotonic() + 5
            for v in others:
                v.kick()
            with self.cv:
                while any(self.where.get(v.id) == "run" for v in others):
                    if time.monotonic() > deadline or self.done.is_set():
                        break
                    self.cv.wait(0.05)
                    for v in others:
                        if self.where.get(v.id) == "run":
                            v.kick()
                stuck = [v.id for v in others if self.where.get(v.id) == "run"]
            states = []
            for v in self.vm.vcpus:
                if v.id in stuck:
                    states.append({"vcpu": v.id, "mp_state": "unreadable (still in KVM_RUN)"})
                else:
                    states.append({"vcpu": v.id, "mp_state": v.mp_state})
            with self.cv:
                self.pausing = False
                self.cv.notify_all()
            return states

    def _regs(self, v: Vcpu) -> dict:
        return {"pc": v.get_reg(uapi.ARM64_PC),
                **{f"x{n}": v.get_reg(uapi.arm64_x(n)) for n in range(4)}}

    def restart(self, v: Vcpu, entry: int, context: int, why: str) -> None:
        """The state a CPU_ON target gets (DEN0022D.b 5.19.1, 6.4.3): reset by
        KVM_ARM_VCPU_INIT, MMU off, EL1h, PC = entry point, x0 = context id."""
        v.arm64_init(*self.features[v.id])
        v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        v.set_reg(uapi.ARM64_PC, entry)
        v.set_reg(uapi.arm64_x(0), context)
        self.log.add("restart", vcpu=v.id, why=why, pc=entry, x0=context)

    # ------------------------------------------------------------------ exits
    def _handle(self, v: Vcpu, ex) -> None:
        if ex.reason == "MMIO":
            t = time.monotonic()
            for base, size, name, dev in self.devices:
                if base <= ex.phys_addr < base + size:
                    self.mmio_count[name] = self.mmio_count.get(name, 0) + 1
                    if ex.is_write:
                        dev.write(ex.phys_addr - base, ex.value)
                    else:
                        v.complete_mmio_read(dev.read(ex.phys_addr - base), ex.len)
                    break
            else:
                self.mmio_count["unclaimed"] = self.mmio_count.get("unclaimed", 0) + 1
                if not ex.is_write:
                    v.complete_mmio_read(0, ex.len)     # read-as-zero, write-ignored
            self.mmio_s += time.monotonic() - t
            return
        if ex.reason != "SYSTEM_EVENT":
            self.log.add("exit", vcpu=v.id, reason=ex.reason, **ex.raw)
            self._finish("error", f"vCPU {v.id}: unexpected exit {ex.reason} {ex.raw}")
            return
        regs = self._regs(v)
        states = self.snapshot(v)
        data = ex.data if self.kvmfd.system_event_data else [ex.flags]
        self.log.add("system-event", vcpu=v.id, type=ex.type, ndata=ex.ndata, data=data,
                     **{k: hex(val) for k, val in regs.items()}, vcpus=states)
        if ex.type == "SHUTDOWN":
            flag = bool(data and data[0] & uapi.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2)
            self._finish("shutdown", "hibernated (PSCI_OFF2)" if flag else "powered off",
                         off2=flag)
        elif ex.type in ("RESET", "CRASH"):
            self._finish(ex.type.lower(), f"vCPU {v.id}")
        elif ex.type == "SUSPEND":
            self._suspend(v, regs)
        elif ex.type == "WAKEUP":
            v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
            entry, context = self.resume_at.pop(v.id)
            self.restart(v, entry, context, "wakeup exit")
        else:
            self._finish("error", f"vCPU {v.id}: system event {ex.type}")

    def _suspend(self, v: Vcpu, regs: dict) -> None:
        entry, context = regs["x1"], regs["x2"]
        policy = self.policy.on_suspend
        if not board.RAM <= entry < board.RAM + self.ram_size:
            v.set_reg(uapi.arm64_x(0), _s64(arm64.PSCI_INVALID_ADDRESS))
            self.log.add("suspend-refused", vcpu=v.id, x0="INVALID_ADDRESS", entry=hex(entry))
        elif policy == "deny":
            v.set_reg(uapi.arm64_x(0), _s64(arm64.PSCI_DENIED))
            self.log.add("suspend-refused", vcpu=v.id, x0="DENIED", entry=hex(entry))
        elif policy == "honour":
            self.resume_at[v.id] = (entry, context)
            v.set_mp_state(uapi.KVM_MP_STATE_SUSPENDED)
            self.log.add("suspend-in-kvm", vcpu=v.id, entry=hex(entry), context=hex(context),
                         mp_state=v.mp_state)
        else:
            self.log.add("suspend-held", vcpu=v.id, entry=hex(entry), context=hex(context))
            if not self.rtc.ris:        # an alarm already pending wakes at once
                self.rtc.fired.clear()
            while not self.rtc.fired.wait(0.5):
                if self.done.is_set():
                    return
            self.log.add("vmm-wake", vcpu=v.id, by="pl031 alarm")
            self.restart(v, entry, context, "vmm wake")


def load_kernel(path: str) -> bytes:
    """The Image from a file or a block device (read to its end: the padding of a
    disk lands in the kernel's bss, which it clears)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise VmmError(f"cannot read the kernel {path}: {e.strerror}") from None
    try:
        image.parse(data[:64], path)
    except image.NotAnImage as e:
        raise VmmError(str(e)) from None
    return data


def write_outdir(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for name in ("exits.jsonl", "console.log"):
        p = outdir / name
        if p.exists():
            os.unlink(p)
