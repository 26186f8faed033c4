"""/dev/kvm from stdlib Python: uapi numbers, arch-neutral VM/vCPU objects (vm.py), the
arm64-only calls and an aarch64 encoder (arm64.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from . import uapi


def probe(path: str = "/dev/kvm") -> dict:
    """What /dev/kvm is and whether a VM can be created: evidence, not a verdict."""
    out: dict = {"path": path, "exists": os.path.exists(path)}
    if not out["exists"]:
        return out
    st = os.stat(path)
    out["char_device"] = stat.S_ISCHR(st.st_mode)
    out["major"], out["minor"] = os.major(st.st_rdev), os.minor(st.st_rdev)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        out["open_errno"] = errno.errorcode.get(e.errno or 0, e.errno)
        return out
    try:
        out["api_version"] = fcntl.ioctl(fd, uapi.KVM_GET_API_VERSION)
        try:
            vm = fcntl.ioctl(fd, uapi.KVM_CREATE_VM, 0)
            os.close(vm)
            out["create_vm"] = "ok"
        except OSError as e:
            out["create_vm"] = errno.errorcode.get(e.errno or 0, str(e.errno))
    finally:
        os.close(fd)
    return out
