"""QEMU and kernel command lines from a profile: pure functions, golden-tested."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import SetupError
from harness.profiles import Profile

# `--qemu DIR`: the QEMU a run uses instead of the system's.  An environment variable,
# so that pytest-xdist workers and every child QEMU see the same choice.
QEMU_DIR_ENV = "GUESTPM_QEMU_DIR"


@dataclass(frozen=True)
class QemuInstall:
    """A QEMU outside the system's: binaries in `bindir`; when it is a Debian package
    tree unpacked beside the system (ROOT/usr/bin), its own data and firmware
    directories (QEMU looks for them at the absolute paths it was built with) and its
    module directory (modules of another QEMU version are refused)."""
    bindir: Path

    @property
    def root(self) -> Path | None:
        b = self.bindir
        return b.parent.parent if b.parts[-2:] == ("usr", "bin") else None

    def data_dirs(self) -> list[Path]:
        if self.root is None:
            return []
        return [d for d in (self.root / "usr/share/qemu", self.root / "usr/share/seabios")
                if d.is_dir()]

    def module_dir(self) -> Path | None:
        if self.root is None:
            return None
        return next(iter(sorted((self.root / "usr/lib").glob("*/qemu"))), None)


def qemu_install() -> QemuInstall | None:
    """The QEMU chosen with --qemu (a directory of qemu-system-* binaries, or the root
    of an unpacked Debian QEMU), or None: the system's on PATH."""
    d = os.environ.get(QEMU_DIR_ENV)
    if not d:
        return None
    path = Path(d).resolve()
    return QemuInstall(path / "usr/bin" if (path / "usr/bin").is_dir() else path)


def use_qemu(directory: str | None) -> None:
    """Select the QEMU of this process and its children (--qemu).  SetupError when
    `directory` holds no qemu-system-* binary."""
    if not directory:
        return
    os.environ[QEMU_DIR_ENV] = str(Path(directory).resolve())
    q = qemu_install()
    assert q is not None        # set just above
    if not any(q.bindir.glob("qemu-system-*")):
        raise SetupError(f"--qemu {directory}: no qemu-system-* binary in {q.bindir}")
    if q.module_dir():
        os.environ["QEMU_MODULE_DIR"] = str(q.module_dir())


def qemu_binary(profile: Profile) -> str:
    """The QEMU binary `profile` runs: the --qemu one, else the name found on PATH."""
    q = qemu_install()
    return str(q.bindir / profile.qemu_binary) if q else profile.qemu_binary


@functools.cache
def _version_of(binary: str, size: int, mtime: float) -> str:
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True)
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    return first[0].removeprefix("QEMU emulator version ").strip() if first else "?"


def qemu_version(profile: Profile) -> str:
    """`qemu-system-X --version`'s version (e.g. "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)")."""
    path = shutil.which(qemu_binary(profile))
    if not path:
        return "missing"
    st = os.stat(path)
    return _version_of(path, st.st_size, st.st_mtime)


def describe_qemus(profiles: list[Profile]) -> str:
    """One line naming the QEMU each profile runs, for the head of a run's summary."""
    q = qemu_install()
    where = f"from --qemu {q.bindir}" if q else "the system's"
    seen = dict.fromkeys(p.qemu_binary for p in profiles)
    by = {p.qemu_binary: p for p in profiles}
    return "QEMU: " + "; ".join(f"{b} {qemu_version(by[b])}" for b in seen) + f" ({where})"


def qemu_identity(profile: Profile) -> str:
    """What a decision about this QEMU's behaviour is cached under: the version and a
    hash of the binary (a rebuilt QEMU of the same version is another QEMU)."""
    path = shutil.which(qemu_binary(profile))
    if not path:
        raise SetupError(f"{qemu_binary(profile)} not found")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{qemu_version(profile).split()[0]}-{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class BootSpec:
    kernel_image: str
    initrd: str
    qmp_fd: int
    console_fd: int
    append: tuple[str, ...] = ()          # extra kernel parameters
    qemu_args: tuple[str, ...] = ()       # extra QEMU arguments (devices, -acpitable, ...)
    extra_qmp_socket: str | None = None   # for `guestpm boot`: a socket a person can attach to
    memory_mb: int | None = None
    hostfwd: tuple[str, ...] = field(default=("tcp:127.0.0.1:0-:22",))


def kernel_append(profile: Profile, extra: tuple[str, ...] = ()) -> str:
    return " ".join((f"console={profile.console}", "panic=-1", "rdinit=/init",
                     *profile.extra_append, *extra))


def qemu_args(profile: Profile, spec: BootSpec) -> list[str]:
    args = [qemu_binary(profile),
            "-M", profile.machine,
            "-accel", profile.accel,
            "-cpu", profile.cpu,
            "-smp", str(profile.smp),
            "-m", str(spec.memory_mb or profile.memory_mb),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", f"socket,id=qmp0,fd={spec.qmp_fd}",
            "-mon", "chardev=qmp0,mode=control",
            "-chardev", f"socket,id=con0,fd={spec.console_fd}",
            "-serial", "chardev:con0"]
    if spec.extra_qmp_socket:
        args += ["-qmp", f"unix:{spec.extra_qmp_socket},server=on,wait=off"]
    for g in profile.globals:
        args += ["-global", g]
    netdev = "user,id=net0" + "".join(f",hostfwd={h}" for h in spec.hostfwd)
    args += ["-netdev", netdev, "-device", f"{profile.nic},netdev=net0"]
    if profile.firmware:
        args += ["-bios", profile.firmware]
    args += ["-kernel", spec.kernel_image, "-initrd", spec.initrd,
             "-append", kernel_append(profile, spec.append)]
    q = qemu_install()
    for d in q.data_dirs() if q else ():
        args += ["-L", str(d)]      # searched before the system's directories
    args += list(spec.qemu_args)
    return args
