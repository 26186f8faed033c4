"""The accelerator of a target (--accel tcg|kvm|auto): a fact of its profile.

tcg (the default until a KVM run of the suite has been verified): QEMU emulates the CPU,
EL2 / SVM included, so KVM runs nested in the kernel under test on any host.  kvm: a
target whose arch is the host's runs under the host's KVM with nested virtualization
(profiles.under_kvm); a target of another arch stays on TCG.  auto: KVM only after a
probe proved it on this kernel: a real boot to the ready line and KVM_CREATE_VM inside
the guest; otherwise TCG, and one line saying why.

The probe's verdict is shared by the run's xdist workers through a file in the results
directory (results/targets/SLUG.accel), written under a lock by the first worker that
needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path

from harness import profiles
from harness.errors import GuestpmError
from harness.profiles import Profile

KVM_DEV = "/dev/kvm"
# what QEMU prints when the host's KVM cannot run the guest (it then stops the VM, so the
# console just stays silent: the probe reads QEMU's stderr instead of waiting that out)
QEMU_KVM_ERROR = re.compile(r"KVM internal error.*|kvm run failed.*|error: failed to set MSR.*"
                            r"|qemu-system-\S+: .*(kvm|KVM).*")


def host_arch() -> str:
    """The host's kernel architecture as the profiles spell it."""
    m = profiles.host_machine()
    return {"aarch64": "arm64"}.get(m, m)


def qemu_version(binary: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cannot(p: Profile, arch: str, kvm_dev: bool, qemu: tuple[int, int] | None,
           cpu_flags: set[str], arm_mode: str | None) -> str | None:
    """Why the host cannot run `p` under KVM with nested virtualization, from what can be
    read without booting (pure); None: worth a probe."""
    if arch != p.arch:
        return f"the host is {arch}, the target {p.arch}"
    if not kvm_dev:
        return f"{KVM_DEV} cannot be opened"
    if p.kvm_min_qemu and qemu is not None and qemu < p.kvm_min_qemu:
        return f"QEMU {qemu[0]}.{qemu[1]} < {p.kvm_min_qemu[0]}.{p.kvm_min_qemu[1]} " \
               f"(needs {p.kvm_host_needs})"
    if p.arch == "x86_64" and not cpu_flags & {"vmx", "svm"}:
        return f"the host CPU shows neither vmx nor svm (needs {p.kvm_host_needs})"
    if p.arch == "arm64" and arm_mode != "nested":
        return f"the host kernel's kvm-arm.mode is {arm_mode or 'not nested'} " \
               f"(needs {p.kvm_host_needs})"
    return None


def host_facts(p: Profile) -> tuple[bool, tuple[int, int] | None, set[str], str | None]:
    """What `cannot` reads from this host for `p`: /dev/kvm opens, QEMU's version, the
    CPU flags, the arm64 KVM mode from the host's command line."""
    try:
        os.close(os.open(KVM_DEV, os.O_RDWR))
        dev = True
    except OSError:
        dev = False
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    mode = None
    try:
        found = re.search(r"kvm-arm\.mode=(\S+)", open("/proc/cmdline").read())
        mode = found.group(1) if found else None
    except OSError:
        pass
    return dev, qemu_version(p.qemu_binary), flags, mode


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no stderr)"
    return lines[-1] if lines else "(no stderr)"


def kvm_profile(p: Profile) -> Profile:
    return profiles.under_kvm(p, profiles.host_cpu_vendor())


def probe(p: Profile, kernel, initrd: Path, workdir: Path, timeout: float = 180) -> str | None:
    """Boot `kernel` under the host's KVM (`p` is the KVM profile) to its ready line and
    have the guest create a VM: None when both worked, else why not (one line)."""
    from harness.vm.boot import READY
    from harness.vm.machine import Machine
    m = Machine(p, kernel, initrd, workdir, boot_timeout=timeout)
    try:
        m.launch()

        silent = min(timeout, p.silent_after_s)

        def kvm_error() -> str | None:
            err = QEMU_KVM_ERROR.search(m.stderr_log.read_text(errors="replace")) \
                if m.stderr_log.exists() else None
            if err:
                return f"QEMU under KVM: {err.group(0).strip()}"
            assert m.qmp is not None, "asked only of a launched machine"
            status = m.qmp.execute("query-status")["status"]
            if status in ("internal-error", "guest-panicked", "shutdown", "io-error"):
                return f"QEMU under KVM stopped the guest ({status}): {last_line(m.stderr_log)}"
            console = m.console_log.read_text(errors="replace")
            if not console and time.monotonic() - t0 > silent:
                return f"the kernel printed nothing under KVM in {silent:.0f} s " \
                       f"(QEMU: {last_line(m.stderr_log)})"
            return None

        def ready_or_error():
            return kvm_error() or READY.search(m.console_log.read_text(errors="replace"))
        t0 = time.monotonic()
        got = m.wait_until(ready_or_error, timeout, "the KVM probe's ready line")
        if isinstance(got, str):
            return got
        m.wait_ready(timeout)
        kvm = m.agent("facts")["kvm"]
        if kvm.get("create_vm") != "ok":
            return f"KVM_CREATE_VM inside the guest: {kvm.get('create_vm') or kvm}"
        return None
    except GuestpmError as e:
        return f"the boot under KVM failed: {str(e).strip().splitlines()[0]}"
    finally:
        m.close(graceful=False)


def choose(accel: str, p: Profile, state: Path, run_probe) -> tuple[Profile, str | None]:
    """The profile a target runs with under --accel `accel`, and the line to print when
    `auto` (or `kvm` for another arch) keeps TCG.  `run_probe(kvm_profile)` boots the
    probe (auto only); its verdict is kept in `state` for the other workers."""
    if accel == "tcg":
        return p, None
    arch = host_arch()
    if accel == "kvm":
        if arch != p.arch:
            return p, f"--accel kvm: TCG for {p.name} (the host is {arch})"
        return kvm_profile(p), None
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # one probe per target and run
        if state.exists():
            why = json.loads(state.read_text())["why"]
        else:
            why = cannot(p, arch, *host_facts(p))
            if why is None:
                why = run_probe(kvm_profile(p))
            state.write_text(json.dumps({"why": why}))
    if why is None:
        return kvm_profile(p), None
    return p, f"--accel auto: TCG for {p.name}: {why}"


def check(accel: str) -> None:
    if accel not in profiles.ACCELS:
        raise GuestpmError(f"unknown --accel {accel!r}: {', '.join(profiles.ACCELS)}")
