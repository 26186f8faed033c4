"""The guest's initramfs, built in three cached layers and concatenated.

  userland  Debian bookworm packages (guest-rootfs/packages.txt) for the guest arch,
            extracted by `mmdebstrap --variant=extract` (no maintainer scripts, so no
            qemu-user), trimmed, its Python standard library compiled here.  Rebuilt
            only when the package list, the trim or the mirror changes.
  guestpm   /init, /etc files, the guest agent (harness/guest).  Small; hashed.
  modules   the modules the profile needs that this kernel does not build in.

Layers are left uncompressed: gunzip of ~60 MB under TCG costs more guest time
than QEMU copying the bytes into guest RAM.
"""

from __future__ import annotations

import compileall
import io
import py_compile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import cache
from harness.errors import SetupError
from harness.guest.cpio import CpioWriter
from harness.image.module_tree import ModuleTree
from harness.kernel import aptrepo
from harness.kernel.kernels import Kernel, Progress
from harness.profiles import Profile

ROOT = Path(__file__).resolve().parents[2]
GUEST_ROOTFS = ROOT / "guest-rootfs"
GUEST_PACKAGE = ROOT / "harness" / "guest"
USERLAND_SUITE = "bookworm"          # python3.11 on both arches, whatever the kernel
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
         "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists", "usr/lib/python3.11/ensurepip",
         "usr/lib/python3.11/idlelib", "usr/lib/python3.11/pydoc_data",
         "usr/lib/python3.11/lib2to3",
         "usr/lib/*/gconv")           # glibc's iconv modules (8 MB): nothing in the guest uses them


def packages() -> list[str]:
    return [ln.strip() for ln in (GUEST_ROOTFS / "packages.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def userland(profile: Profile, progress: Progress = lambda s: None) -> Path:
    mirror = aptrepo.system_mirror()
    key = cache.digest(USERLAND_SUITE, profile.deb_arch, mirror.uri, *packages(), *_TRIM,
                       f"bytecode {sys.implementation.cache_tag}")[:16]
    out = cache.cache_dir() / "rootfs" / f"userland-{profile.deb_arch}-{key}.cpio"
    if out.exists():
        return out
    if not shutil.which("mmdebstrap"):
        raise SetupError("mmdebstrap not found: run `guestpm setup` or apt-get install mmdebstrap")
    with cache.locked(out):
        if out.exists():
            return out
        progress(f"userland {profile.deb_arch}: mmdebstrap {USERLAND_SUITE} "
                 f"({', '.join(packages())})")
        with cache.staging_dir(out.with_suffix(".d")) as tmp:
            root = tmp / "root"
            cmd = ["mmdebstrap", "--quiet", "--variant=extract", f"--arch={profile.deb_arch}",
                   f"--include={','.join(packages())}", f"--keyring={mirror.keyring}",
                   USERLAND_SUITE, str(root), f"deb {mirror.uri} {USERLAND_SUITE} main"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SetupError(f"mmdebstrap failed for {profile.deb_arch}: "
                                 + " | ".join(proc.stderr.strip().splitlines()[-3:]))
            for pattern in _TRIM:
                for path in root.glob(pattern):
                    shutil.rmtree(path)
            compile_stdlib(root)
            buf = io.BytesIO()
            w = CpioWriter(buf)
            w.tree(root)
            w.close()
            cache.write_atomic(out, buf.getvalue())
    return out


def compile_stdlib(root: Path) -> None:
    """Bytecode for the guest's Python standard library, compiled here.  Debian ships
    none (python3's maintainer script compiles it; `--variant=extract` runs none), so
    the first `python3` of every fresh guest compiled each module it imported under TCG
    (x86_64 6.12, `import harness.guest.agent` over ssh: 2.7-3.7 s the first time in a
    guest, 0.8 s the second; 1.0-1.8 s the first time with this).  Unchecked hashes: an
    image's sources never change (its cache key names the packages).  Only where this
    interpreter is the guest's version: bytecode of another version would be ignored."""
    for lib in sorted((root / "usr" / "lib").glob("python3.*")):
        tag = "cpython-" + lib.name.removeprefix("python").replace(".", "")
        if tag == sys.implementation.cache_tag:
            unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
            compileall.compile_dir(lib, ddir=f"/usr/lib/{lib.name}", quiet=2, workers=0,
                                   invalidation_mode=unchecked)


def guestpm_layer(authorized: bool = True) -> bytes:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("dev", "proc", "sys", "run", "root", "etc/guestpm", "opt/guestpm/harness",
              "lib/modules/guestpm"):
        w.directory(d)
    w.directory("tmp", 0o1777)
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    w.file("init", (GUEST_ROOTFS / "init").read_bytes(), 0o755)
    for name in ("passwd", "group", "profile"):
        w.file(f"etc/{name}", (GUEST_ROOTFS / name).read_bytes())
    w.file("opt/guestpm/harness/__init__.py", (GUEST_PACKAGE.parent / "__init__.py").read_bytes())
    for path in sorted(GUEST_PACKAGE.rglob("*.py")):
        rel = path.relative_to(GUEST_PACKAGE.parent)
        w.directory(f"opt/guestpm/harness/{rel.parent}")
        w.file(f"opt/guestpm/harness/{rel}", path.read_bytes())
        cache_dir = f"opt/guestpm/harness/{rel.parent}/__pycache__"
        w.directory(cache_dir)
        w.file(f"{cache_dir}/{rel.stem}.{sys.implementation.cache_tag}.pyc",
               _pyc(path, f"/opt/guestpm/harness/{rel}"))
    w.close()
    return buf.getvalue()


def _pyc(source: Path, guest_path: str) -> bytes:
    """Bytecode for the guest, hash-checked (no mtimes: the layer stays deterministic).
    Compiling under TCG costs ~2 s of the first agent call; a guest whose python3 is
    another version than the host's looks for another cache tag and ignores this."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.pyc"
        py_compile.compile(str(source), cfile=str(out), dfile=guest_path, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        return out.read_bytes()


def modules_layer(kernel: Kernel, names: tuple[str, ...], directories: bool = False) -> bytes:
    """The named modules with their dependencies, in load order
    (/lib/modules/guestpm/*.ko), plus /etc/guestpm/modules naming that order.
    `directories`: with the directories they go in, for an initramfs that lacks them
    (the L2 guest's busybox one, harness/vm/l2.py)."""
    buf = io.BytesIO()
    w = CpioWriter(buf)
    if directories:
        for d in ("lib", "lib/modules", "lib/modules/guestpm", "etc", "etc/guestpm"):
            w.directory(d)
    order = ModuleTree(kernel.modules).closure(list(names)) if kernel.modules and names else []
    for name, data in order:
        w.file(f"lib/modules/guestpm/{name}.ko", data)
    w.file("etc/guestpm/modules", "".join(f"{n}\n" for n, _ in order).encode())
    w.close()
    return buf.getvalue()


def initramfs(kernel: Kernel, profile: Profile, progress: Progress = lambda s: None) -> Path:
    """The concatenated initramfs for this kernel and profile (cached by content)."""
    base = userland(profile, progress)
    layers = [guestpm_layer(), modules_layer(kernel, profile.modules)]
    key = cache.digest(base.name, *layers)[:16]
    out = cache.cache_dir() / "initramfs" / f"{profile.deb_arch}-{key}.cpio"
    if not out.exists():
        with cache.locked(out):
            if not out.exists():
                cache.write_atomic(out, base.read_bytes() + b"".join(layers))
    return out


def with_modules(initrd: Path, modules: list[tuple[str, bytes, str]], dest: Path) -> Path:
    """`initrd` plus a layer with a test's own modules, (name, .ko bytes, parameters),
    which /init loads before it reports ready: written to `dest`."""
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("lib/modules/guestpm-extra")
    for name, data, _ in modules:
        w.file(f"lib/modules/guestpm-extra/{name}.ko", data)
    w.file("etc/guestpm/extra-modules",
           "".join(f"{n} {params}\n" for n, _, params in modules).encode())
    w.close()
    dest.write_bytes(initrd.read_bytes() + buf.getvalue())
    return dest
