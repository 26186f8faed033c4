"""The reference VMM's arch-neutral core: one thread per vCPU in KVM_RUN, the kick and
the pause, the bounds (timeout, silence), the exit log, and the dispatch of each exit:
MMIO and port I/O to the device bus, everything else to the arch backend.

A backend (vmm/arm64/) owns the machine: it creates the VM and its vCPUs, puts its
devices on the bus, loads the kernel, and decides what a non-bus exit means.

    core = Core(backend, policy, outdir)
    core.setup()
    result = core.run(timeout=300, silent_s=120)
    core.close()

The main thread owns the bounds; it never enters KVM_RUN.  Bus accesses are counted
(there are thousands), every other exit is logged with its time; a snapshot of every
vCPU's state kicks the other vCPUs out of KVM_RUN and holds them out while it is read."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..kvm.vm import Kvm, KvmBroken, KvmUnavailable, Vm, install_kick_handler
from . import l2init
from .bus import MMIO, PIO, Bus
from .policy import Policy, Result, VmmError

MiB = 1 << 20
BOUNDS = ("timeout", "silent")       # the outcomes of a run that a bound ended


class Backend(Protocol):
    """The hooks an arch folder gives the core."""

    def setup(self, core: Core) -> None:
        """Create core.vm (core.open_vm()), its vCPUs and devices; load the kernel."""

    def handle_exit(self, core: Core, vcpu, ex) -> bool:
        """A non-bus exit; False: the backend does not know it (the run ends in error)."""

    def stop(self, core: Core) -> None:
        """The vCPU threads have stopped: stop what else runs (device timers)."""

    def report(self) -> dict:
        """Fields of the Result that only the backend knows."""

    def where(self, vcpu) -> dict:
        """Where a vCPU stands (its PC or RIP, and what else locates it), read from KVM
        once it is out of KVM_RUN: what a run that a bound ended reports."""


class ExitLog:
    """Timestamped records, kept in memory and appended to a JSONL file."""

    def __init__(self, path: Path | None, t0: float):
        self.t0, self.lock = t0, threading.Lock()
        self.records: list[dict] = []
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


class Core:
    def __init__(self, backend: Backend, policy: Policy, outdir: Path | None = None,
                 kvm_path: str = "/dev/kvm"):
        self.backend, self.policy, self.outdir, self.kvm_path = backend, policy, outdir, kvm_path
        self.t0 = time.monotonic()
        self.log = ExitLog(outdir / "exits.jsonl" if outdir else None, self.t0)
        self.console = bytearray()
        self.console_fh = open(outdir / "console.log", "ab", buffering=0) if outdir else None
        self.last_output = time.monotonic()
        self.bus = Bus()
        self.kvm: Kvm | None = None
        self.vm: Any = None             # a kvm.vm.Vm (or a test's stand-in with .vcpus)
        self.done = threading.Event()
        self.result: Result | None = None
        self.cv = threading.Condition()
        self.pausing = False
        self.where: dict[int, str] = {}
        self.snapshot_lock = threading.Lock()

    # ------------------------------------------------------------------ set-up
    def open_vm(self) -> Vm:
        try:
            self.kvm = Kvm(self.kvm_path)
        except (KvmUnavailable, KvmBroken) as e:
            raise VmmError(str(e)) from None
        self.vm = self.kvm.create_vm()
        return self.vm

    def setup(self) -> None:
        self.backend.setup(self)

    def console_out(self, b: bytes) -> None:
        """The guest's console, a byte or more at a time from a UART device."""
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

    # ------------------------------------------------------------------ running
    def run(self, timeout: float = 300, silent_s: float = 120,
            progress: Callable[[str], None] | None = None) -> Result:
        """Run until the guest powers off, resets or crashes, or a bound ends it."""
        install_kick_handler()
        self.log.add("start")
        threads = [threading.Thread(target=self._vcpu_loop, args=(v,), daemon=True,
                                    name=f"vcpu{v.id}") for v in self.vm.vcpus]
        for t in threads:
            t.start()
        self._watch(timeout, silent_s, progress)
        r = self.result
        assert r is not None, "_watch returns once finish() has set the result"
        for v in self.vm.vcpus:
            v.kick()
        for v, t in zip(self.vm.vcpus, threads):
            t.join(5)
            if t.is_alive():        # a vCPU that ignores kicks: report it, never hang
                r.detail += f"; {t.name} did not stop"
            elif r.outcome in BOUNDS:
                self._stuck(v)
        self.backend.stop(self)
        r.elapsed_s = round(time.monotonic() - self.t0, 3)
        r.mmio_exits = dict(self.bus.counts[MMIO])
        r.pio_exits = dict(self.bus.counts[PIO])
        r.mmio_s = round(self.bus.seconds, 3)
        r.exits = list(self.log.records)
        r.console_tail = bytes(self.console[-4000:]).decode(errors="replace")
        for name, value in self.backend.report().items():
            setattr(r, name, value)
        self.log.add("end", outcome=r.outcome, detail=r.detail)
        return r

    def _stuck(self, v) -> None:
        """Where a vCPU stood when a bound ended the run: a hung guest says where it hung
        (harness/guest/ksyms.py names the addresses of a `nokaslr` x86 guest)."""
        try:
            self.log.add("stuck", vcpu=v.id, **self.backend.where(v))
        except OSError as e:
            self.log.add("stuck", vcpu=v.id, error=e.strerror)

    def _watch(self, timeout: float, silent_s: float,
               progress: Callable[[str], None] | None) -> None:
        """The bounds: the whole run, and a guest that has printed nothing yet."""
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 15
        while not self.done.wait(0.5):
            now = time.monotonic()
            if now > deadline:
                self.finish("timeout", f"no power-off within {timeout:g} s")
            elif now - self.last_output > silent_s and not self.console:
                self.finish("silent", f"the guest printed nothing in {silent_s:g} s")
            elif progress and now > next_note:
                next_note = now + 15
                tail = bytes(self.console[-200:]).decode(errors="replace").strip()
                progress(f"{now - self.t0:.0f} s, {sum(self.bus.counts[MMIO].values())} MMIO "
                         f"exits, {len(self.log.records)} events; console: "
                         f"{tail.splitlines()[-1] if tail else '(nothing yet)'}")

    def close(self) -> None:
        self.log.close()
        if self.console_fh:
            self.console_fh.close()
        if self.vm is not None and hasattr(self.vm, "close"):
            self.vm.close()
        if self.kvm is not None:
            self.kvm.close()

    def finish(self, outcome: str, detail: str = "", **extra) -> None:
        """End the run (the first call decides the outcome) and kick every vCPU out."""
        with self.cv:
            if self.result is None:
                self.result = Result(outcome, detail, **extra)
                self.log.add("finish", outcome=outcome, detail=detail)
            self.done.set()
            self.pausing = False
            self.cv.notify_all()
        for v in self.vm.vcpus:
            v.kick()

    def _vcpu_loop(self, v) -> None:
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
                    self._dispatch(v, ex)
        except Exception as e:          # an ioctl that fails: the VM cannot go on
            self.finish("error", f"vCPU {v.id}: {type(e).__name__}: {e}")

    def _dispatch(self, v, ex) -> None:
        if ex.reason == "MMIO":
            self.bus.mmio(v, ex)
        elif ex.reason == "IO":
            self.bus.pio(v, ex)
        elif not self.backend.handle_exit(self, v, ex):
            self.log.add("exit", vcpu=v.id, reason=ex.reason, **ex.raw)
            self.finish("error", f"vCPU {v.id}: unexpected exit {ex.reason} {ex.raw}")

    # ------------------------------------------------------------------ state
    def snapshot(self, caller) -> list[dict]:
        """Every vCPU's MP_STATE, read with the other vCPUs kicked out of KVM_RUN and
        held out until the read is done."""
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


def write_outdir(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for name in ("exits.jsonl", "console.log"):
        p = outdir / name
        if p.exists():
            os.unlink(p)
