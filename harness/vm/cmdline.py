"""QEMU and kernel command lines from a profile: pure functions, golden-tested."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.profiles import Profile


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
    args = [profile.qemu_binary,
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
    args += list(spec.qemu_args)
    return args
