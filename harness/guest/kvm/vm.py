"""VM and vCPU objects over /dev/kvm: ioctl, mmap and ctypes only (stdlib).

The same code runs inside the kernel under test (booted by guestpm as an L1 host)
and on a bare-metal machine with /dev/kvm."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from .. import kmsg
from . import uapi


class KvmUnavailable(Exception):
    """The kernel or the machine has no KVM at all (no /dev/kvm, and the reason is
    known: no EL2 or SVM/VMX, or KVM not built): a SKIP naming it."""


class KvmBroken(Exception):
    """KVM should be there but /dev/kvm is missing or misbehaves: a FAIL quoting it."""


def why_no_kvm(path: str = "/dev/kvm", cpuinfo: str | None = None, log: str | None = None,
               machine: str | None = None) -> str | None:
    """Why this host has no KVM, when it is a fact of the kernel or the machine (None:
    nothing explains a missing /dev/kvm, which is then a defect).  Pure when given its
    inputs (unit-tested)."""
    machine = machine or os.uname().machine
    log = "\n".join(kmsg.log()) if log is None else log
    if machine == "aarch64":
        m = re.search(r"CPU: All CPU\(s\) started at (EL\d)", log)
        if m and m.group(1) != "EL2":
            return (f"no {path}: the CPUs started at {m.group(1)}, not EL2 (no virtualization "
                    "extensions offered), so KVM cannot initialise")
    elif machine == "x86_64":
        if cpuinfo is None:
            try:
                with open("/proc/cpuinfo") as fh:
                    cpuinfo = fh.read()
            except OSError:
                cpuinfo = ""
        flags = set(re.findall(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)[0].split()) \
            if re.search(r"^flags", cpuinfo, re.MULTILINE) else set()
        if flags and not flags & {"svm", "vmx"}:
            return f"no {path}: the CPU has neither svm nor vmx, so KVM cannot initialise"
    if not os.path.exists("/sys/module/kvm") and not re.search(r"\bkvm\b", log):
        return f"no {path}: this kernel has no KVM (no kvm module, no kvm line in its log)"
    return None


class VcpuHang(Exception):
    """KVM_RUN did not return within its bound; carries the vCPU state for the report."""

    def __init__(self, message: str, state: dict):
        super().__init__(message)
        self.state = state


class _Alarm(BaseException):
    pass


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


@dataclass
class Exit:
    """One KVM_RUN return, decoded from struct kvm_run."""
    code: int
    reason: str
    elapsed_s: float = 0.0
    type: str | None = None          # SYSTEM_EVENT
    ndata: int | None = None
    data: list[int] = field(default_factory=list)
    flags: int | None = None         # SYSTEM_EVENT: the pre-5.18 `flags` (data[0]'s place)
    # MMIO and IO fields stay 0 on other exits: summary() shows only the reason's own
    phys_addr: int = 0               # MMIO
    is_write: bool = False           # MMIO, IO (direction OUT)
    len: int = 0                     # MMIO, IO (bytes per access: kvm_run.io.size)
    value: int = 0                   # MMIO
    port: int = 0                    # IO
    count: int = 0                   # IO: accesses (a string instruction makes several)
    data_offset: int = 0             # IO: where in the kvm_run page the data is
    raw: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The fields a test compares: reason and whatever the reason carries."""
        if self.reason == "SYSTEM_EVENT":
            return {"reason": self.reason, "type": self.type, "ndata": self.ndata,
                    "data": self.data}
        if self.reason == "MMIO":
            return {"reason": self.reason, "phys_addr": self.phys_addr,
                    "is_write": self.is_write, "len": self.len, "value": self.value}
        if self.reason == "IO":
            return {"reason": self.reason, "port": self.port, "is_write": self.is_write,
                    "len": self.len, "count": self.count}
        return {"reason": self.reason, **self.raw}


def decode_run(buf: bytes | mmap.mmap) -> Exit:
    """Decode the exit in a kvm_run buffer (pure: unit-tested on golden bytes)."""
    (code,) = uapi.RUN_EXIT_REASON.unpack_from(buf, 0)
    ex = Exit(code=code, reason=uapi.KVM_EXIT_NAMES.get(code, f"exit-{code}"))
    off = uapi.UNION_OFFSET
    if code == uapi.KVM_EXIT_SYSTEM_EVENT:
        typ, ndata, *data = uapi.RUN_SYSTEM_EVENT.unpack_from(buf, off)
        ex.type = uapi.SYSTEM_EVENT_NAMES.get(typ, f"type-{typ}")
        ex.ndata = ndata
        ex.data = list(data[:min(ndata, 16)])
        ex.flags = data[0]
    elif code == uapi.KVM_EXIT_MMIO:
        addr, data, length, is_write = uapi.RUN_MMIO.unpack_from(buf, off)
        ex.phys_addr, ex.len, ex.is_write = addr, length, bool(is_write)
        ex.value = int.from_bytes(data[:length], "little")
    elif code == uapi.KVM_EXIT_IO:
        direction, size, port, count, data_offset = uapi.RUN_IO.unpack_from(buf, off)
        ex.is_write = direction == uapi.KVM_EXIT_IO_OUT
        ex.len, ex.port, ex.count, ex.data_offset = size, port, count, data_offset
    elif code == uapi.KVM_EXIT_HYPERCALL:
        nr, *rest = uapi.RUN_HYPERCALL.unpack_from(buf, off)
        ex.raw = {"nr": nr, "args": rest[:6]}
    elif code == uapi.KVM_EXIT_FAIL_ENTRY:
        reason, cpu = uapi.RUN_FAIL_ENTRY.unpack_from(buf, off)
        ex.raw = {"hardware_entry_failure_reason": reason, "cpu": cpu}
    elif code == uapi.KVM_EXIT_INTERNAL_ERROR:
        sub, ndata, *data = uapi.RUN_INTERNAL.unpack_from(buf, off)
        ex.raw = {"suberror": sub, "data": data[:min(ndata, 16)]}
    return ex


def _addr(obj) -> int:
    return ctypes.addressof(obj)


class Kvm:
    """An open /dev/kvm."""

    def __init__(self, path: str = "/dev/kvm"):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            why = why_no_kvm(path)
            if why:
                raise KvmUnavailable(why) from None
            tail = [ln for ln in kmsg.log() if "kvm" in ln.lower()][-3:]
            raise KvmBroken(f"no {path}, although the machine can run KVM and the kernel "
                            f"has it; its kvm log lines: {tail}") from None
        except OSError as e:
            raise KvmBroken(f"cannot open {path}: {_errname(e)}") from None
        version = fcntl.ioctl(self.fd, uapi.KVM_GET_API_VERSION)
        if version != uapi.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmBroken(f"{path} speaks KVM API {version}, not {uapi.KVM_API_VERSION}")
        self.vcpu_mmap_size = fcntl.ioctl(self.fd, uapi.KVM_GET_VCPU_MMAP_SIZE)
        # which kvm_run.system_event layout this kernel writes (ndata/data, or flags)
        self.system_event_data = self.check_extension(uapi.KVM_CAP_SYSTEM_EVENT_DATA) > 0

    def check_extension(self, cap: int) -> int:
        return fcntl.ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap)

    def create_vm(self) -> Vm:
        return Vm(self, fcntl.ioctl(self.fd, uapi.KVM_CREATE_VM, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Vm:
    def __init__(self, kvm: Kvm, fd: int):
        self.kvm, self.fd = kvm, fd
        self.vcpus: list[Vcpu] = []
        self._maps: list[mmap.mmap] = []
        self._views: list[ctypes.Array] = []    # ctypes views pin the maps' addresses
        self.devices: list[Device] = []

    def check_extension(self, cap: int) -> int:
        return fcntl.ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap)

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        a = (list(args) + [0, 0, 0, 0])[:4]
        fcntl.ioctl(self.fd, uapi.KVM_ENABLE_CAP, uapi.ENABLE_CAP.pack(cap, flags, *a))

    def add_memory(self, slot: int, gpa: int, size: int) -> mmap.mmap:
        """Anonymous host memory mapped at guest physical address `gpa`."""
        return self._slot(slot, gpa, mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                               mmap.PROT_READ | mmap.PROT_WRITE))

    def _slot(self, slot: int, gpa: int, mem: mmap.mmap) -> mmap.mmap:
        view = (ctypes.c_char * len(mem)).from_buffer(mem)
        fcntl.ioctl(self.fd, uapi.KVM_SET_USER_MEMORY_REGION,
                    uapi.USERSPACE_MEMORY_REGION.pack(slot, 0, gpa, len(mem), _addr(view)))
        self._maps.append(mem)
        self._views.append(view)
        return mem

    def add_file_memory(self, slot: int, gpa: int, path: str, size: int) -> mmap.mmap:
        """The file at `path` (created or extended to `size`, sparse) mapped shared at
        `gpa`: what the guest writes there outlives the VM (a pmem region)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            mem = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return self._slot(slot, gpa, mem)

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        vcpu = Vcpu(self, vcpu_id, fcntl.ioctl(self.fd, uapi.KVM_CREATE_VCPU, vcpu_id))
        self.vcpus.append(vcpu)
        return vcpu

    def irq_line(self, irq: int, level: bool) -> None:
        fcntl.ioctl(self.fd, uapi.KVM_IRQ_LINE, uapi.IRQ_LEVEL.pack(irq, int(level)))

    def create_device(self, dev_type: int) -> Device:
        buf = bytearray(uapi.CREATE_DEVICE.pack(dev_type, 0, 0))
        fcntl.ioctl(self.fd, uapi.KVM_CREATE_DEVICE, buf)
        dev = Device(uapi.CREATE_DEVICE.unpack(buf)[1])
        self.devices.append(dev)
        return dev

    def close(self) -> None:
        for v in self.vcpus:
            v.close()
        self.vcpus.clear()
        for d in self.devices:
            d.close()
        self.devices.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._views.clear()         # drop the exports first, or mmap.close() refuses
        for mem in self._maps:
            mem.close()
        self._maps.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Device:
    """A KVM device fd (KVM_CREATE_DEVICE): the in-kernel vGIC."""

    def __init__(self, fd: int):
        self.fd = fd
        self._val = ctypes.c_uint64(0)

    def set_attr(self, group: int, attr: int, value: int | None = None) -> None:
        """KVM_SET_DEVICE_ATTR; `value` (a u64, or a u32 for 32-bit attributes, which
        KVM reads from the low half on little-endian hosts) or none."""
        addr = 0
        if value is not None:
            self._val.value = value
            addr = _addr(self._val)
        fcntl.ioctl(self.fd, uapi.KVM_SET_DEVICE_ATTR, uapi.DEVICE_ATTR.pack(0, group, attr, addr))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


KICK_SIGNAL = signal.SIGUSR1


def install_kick_handler() -> None:
    """Let Vcpu.kick() interrupt KVM_RUN in another thread: a handler that does nothing
    (the default action of SIGUSR1 would end the process).  Main thread only, once."""
    signal.signal(KICK_SIGNAL, lambda signum, frame: None)


class Vcpu:
    def __init__(self, vm: Vm, vcpu_id: int, fd: int):
        self.vm, self.id, self.fd = vm, vcpu_id, fd
        self.run_page = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self._reg = ctypes.c_uint64(0)
        # called for the report when a run hangs
        self.state_hook: Callable[[], dict] | None = None
        self._thread: int | None = None     # the thread that runs it (run_in_thread)

    # --------------------------------------------------------- registers
    def get_reg(self, reg_id: int) -> int:
        fcntl.ioctl(self.fd, uapi.KVM_GET_ONE_REG, uapi.ONE_REG.pack(reg_id, _addr(self._reg)))
        return self._reg.value

    def set_reg(self, reg_id: int, value: int) -> None:
        self._reg.value = value & 0xFFFFFFFFFFFFFFFF
        fcntl.ioctl(self.fd, uapi.KVM_SET_ONE_REG, uapi.ONE_REG.pack(reg_id, _addr(self._reg)))

    @property
    def mp_state(self) -> str:
        buf = bytearray(uapi.MP_STATE.size)
        fcntl.ioctl(self.fd, uapi.KVM_GET_MP_STATE, buf)
        (v,) = uapi.MP_STATE.unpack(buf)
        return uapi.MP_STATE_NAMES.get(v, f"mp-state-{v}")

    def set_mp_state(self, state: int) -> None:
        fcntl.ioctl(self.fd, uapi.KVM_SET_MP_STATE, uapi.MP_STATE.pack(state))

    # --------------------------------------------------------- running
    def run(self, timeout: float = 10.0) -> Exit:
        """KVM_RUN once, bounded: past `timeout` a SIGALRM kicks the vCPU out (EINTR)
        and VcpuHang reports its state. Signals need the main thread.

        A hang is counted only when KVM_RUN itself was interrupted, which KVM records
        as exit_reason KVM_EXIT_INTR (it writes KVM_EXIT_UNKNOWN on entry): an exit that
        completes just as the alarm fires is that exit, not a hang.  exit_reason is
        never written here: KVM reads it on entry to complete a pending MMIO access."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Vcpu.run() must run in the main thread: its bound is SIGALRM")
        fired = False

        def on_alarm(signum, frame):
            nonlocal fired
            fired = True
            raise _Alarm()

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        t0 = time.monotonic()
        try:
            fcntl.ioctl(self.fd, uapi.KVM_RUN, 0)
        except _Alarm:
            pass
        except InterruptedError:
            if not fired:
                raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        elapsed = time.monotonic() - t0
        (reason,) = uapi.RUN_EXIT_REASON.unpack_from(self.run_page, 0)
        if fired and reason in (uapi.KVM_EXIT_INTR, uapi.KVM_EXIT_UNKNOWN):
            state = self.state_hook() if self.state_hook else {"vcpu": self.id}
            raise VcpuHang(f"KVM_RUN on vCPU {self.id} did not return within {timeout:g} s",
                           state)
        ex = decode_run(self.run_page)
        ex.elapsed_s = elapsed
        return ex

    # --------------------------------------------------------- one thread per vCPU
    def run_in_thread(self) -> Exit | None:
        """KVM_RUN once from the vCPU's own thread, unbounded: None when kick() ended it.

        The bound belongs to whoever owns the threads (a VMM's main loop): it kicks
        the vCPU out with a signal plus kvm_run.immediate_exit, as api.rst describes,
        so a kick that lands before KVM_RUN is entered is not lost.  A STOPPED or
        SUSPENDED vCPU sleeps inside KVM_RUN; kicking it is how its state is read
        (KVM_GET_MP_STATE waits for the vCPU's mutex, which KVM_RUN holds).  An x86
        application processor waiting for its SIPI leaves KVM_RUN with EAGAIN when an
        event (its INIT) woke it: no exit, None too, and the caller runs it again."""
        self._thread = threading.get_ident()
        t0 = time.monotonic()
        try:
            fcntl.ioctl(self.fd, uapi.KVM_RUN, 0)
        except InterruptedError:
            self.run_page[uapi.RUN_IMMEDIATE_EXIT] = 0
            return None
        except BlockingIOError:
            return None
        ex = decode_run(self.run_page)
        ex.elapsed_s = time.monotonic() - t0
        return ex

    def kick(self) -> None:
        """Make the vCPU's thread leave (or not enter) KVM_RUN; any thread may call it."""
        self.run_page[uapi.RUN_IMMEDIATE_EXIT] = 1
        if self._thread is not None:
            try:
                signal.pthread_kill(self._thread, KICK_SIGNAL)
            except ProcessLookupError:      # the thread has ended
                pass

    def complete_mmio_read(self, value: int, length: int) -> None:
        """Hand KVM the value of the MMIO read that just exited; the next KVM_RUN
        writes it to the guest register and moves PC on (never touch PC here)."""
        self.run_page[uapi.RUN_MMIO_DATA:uapi.RUN_MMIO_DATA + length] = \
            (value & ((1 << (8 * length)) - 1)).to_bytes(length, "little")

    def io_data(self, ex: Exit) -> bytes:
        """The bytes of an IO exit (`count` accesses of `len` bytes): what an OUT wrote."""
        return bytes(self.run_page[ex.data_offset:ex.data_offset + ex.len * ex.count])

    def complete_io_in(self, ex: Exit, data: bytes) -> None:
        """Hand KVM the bytes of the IN that just exited; the next KVM_RUN loads them."""
        self.run_page[ex.data_offset:ex.data_offset + len(data)] = data

    def close(self) -> None:
        if self.fd >= 0:
            self.run_page.close()
            os.close(self.fd)
            self.fd = -1
