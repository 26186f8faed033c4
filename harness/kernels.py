"""Where a kernel under test comes from.

Specs:
  debian:6.1 | debian:6.12 | debian:7.2   stock Debian kernels (bookworm, trixie, sid),
                                          fetched once with apt, then used offline
  path:IMAGE[,modules=DIR]                your own bzImage / arm64 Image; DIR is
                                          lib/modules/VERSION or an INSTALL_MOD_PATH root
  build:DIR | build:TREE                  a `guestpm build` (its directory, or the latest
                                          build of TREE for the arch), with its modules
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import aptrepo, cache
from .errors import KernelError, SetupError
from .profiles import Profile

DEBIAN_LABELS = {"6.1": "bookworm", "6.12": "trixie", "7.2": "sid"}
DEFAULT_KERNELS = tuple(f"debian:{label}" for label in DEBIAN_LABELS)
SCHEMES = ("debian:<label>", "path:IMAGE[,modules=DIR]", "build:DIR|TREE")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Kernel:
    spec: str
    arch: str                    # profile arch it was resolved for
    image: Path
    release: str | None          # what `uname -r` must say, when known
    modules: Path | None         # .../lib/modules/RELEASE
    config: Path | None
    origin: str                  # human description (package and version, or path)
    debian: tuple[str, str] | None = None   # (suite, source version) of a stock Debian kernel

    def config_options(self) -> dict[str, str]:
        if not self.config or not self.config.exists():
            return {}
        opts = {}
        for line in self.config.read_text(errors="replace").splitlines():
            m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
            if m:
                opts[m[1]] = m[2]
        return opts


# ---------------------------------------------------------------- image headers

def identify_image(head: bytes) -> str:
    """'bzImage' or 'arm64-Image' from the first bytes of a kernel file, else KernelError."""
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return "bzImage"
    if len(head) >= 0x3C and head[0x38:0x3C] == b"ARM\x64":
        return "arm64-Image"
    if head[:4] == b"\x7fELF":
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        name = {0x3E: "x86_64", 0xB7: "aarch64"}.get(machine, hex(machine))
        raise KernelError(f"this is an ELF vmlinux ({name}): boot arch/x86/boot/bzImage or "
                          "arch/arm64/boot/Image instead")
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        raise KernelError("this is an EFI zboot image (vmlinuz.efi): boot arch/arm64/boot/Image")
    if head[:2] == b"\x1f\x8b":
        raise KernelError("this is a gzip file: decompress it first (arm64 Image.gz -> Image)")
    raise KernelError("not a Linux kernel image (no bzImage 'HdrS' or arm64 'ARM\\x64' magic)")


def image_release(data: bytes, fmt: str) -> str | None:
    """The kernel release string embedded in an image, when it can be read."""
    if fmt == "bzImage" and len(data) > 0x210:
        off = int.from_bytes(data[0x20E:0x210], "little")
        if off:
            raw = data[off + 0x200: off + 0x200 + 256].split(b"\0")[0]
            return raw.decode(errors="replace").split(" ")[0] or None
    m = re.search(rb"Linux version (\S+) \(", data)
    return m[1].decode(errors="replace") if m else None


def release_version(release: str | None) -> tuple[int, int] | None:
    """(major, minor) of a release string: "6.1.0-50-arm64" -> (6, 1)."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m[1]), int(m[2])) if m else None


def check_image(path: Path, profile: Profile) -> str:
    if not path.is_file():
        raise KernelError(f"kernel image {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    fmt = identify_image(head)
    if fmt != profile.image_format:
        raise KernelError(f"{path} is an {fmt} but --arch {profile.name} boots an "
                          f"{profile.image_format}: wrong architecture")
    return fmt


# ---------------------------------------------------------------- resolution

def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ("debian", "path", "build"):
        raise KernelError(f"unknown kernel {spec!r}: use one of "
                          f"{', '.join(DEFAULT_KERNELS)} or {' / '.join(SCHEMES)}")
    if scheme == "debian":
        if rest not in DEBIAN_LABELS:
            raise KernelError(f"unknown kernel {spec!r}: known Debian labels are "
                              f"{', '.join(DEFAULT_KERNELS)}")
        return scheme, rest, {}
    if scheme == "build":
        if not rest:
            raise KernelError(f"{spec!r}: build: takes the directory `guestpm build` printed, "
                              "or the kernel tree it built")
        return scheme, rest, {}
    value, *opts = rest.split(",")
    options = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k != "modules":
            raise KernelError(f"bad option {o!r} in {spec!r}: path: takes only modules=DIR")
        options[k] = v
    return scheme, value, options


def resolve(spec: str, profile: Profile, progress: Progress = lambda s: None) -> Kernel:
    scheme, value, options = parse_spec(spec)
    if scheme == "debian":
        return _debian(value, profile, progress)
    if scheme == "build":
        return _build(spec, Path(value), profile)
    return _path(spec, Path(value).expanduser(), options.get("modules"), profile)


def _path(spec: str, image: Path, modules: str | None, profile: Profile) -> Kernel:
    fmt = check_image(image, profile)
    release = image_release(image.read_bytes(), fmt)
    mod_dir = None
    if modules:
        mod_dir = Path(modules).expanduser()
        if release and (mod_dir / "lib/modules" / release).is_dir():
            mod_dir = mod_dir / "lib/modules" / release
        if not (mod_dir / "kernel").is_dir() and not (mod_dir / "modules.builtin").exists():
            raise KernelError(f"{mod_dir} is not a modules directory (lib/modules/VERSION)")
    # a Debian-style modules dir carries `config`; a build tree has .config above the image
    candidates = ([mod_dir / "config"] if mod_dir else []) + \
        [d / ".config" for d in list(image.resolve().parents)[:4]]
    config = next((c for c in candidates if c.is_file()), None)
    return Kernel(spec, profile.arch, image.resolve(), release, mod_dir, config, str(image))


def _build(spec: str, path: Path, profile: Profile) -> Kernel:
    from . import build
    try:
        b = build.find(path, profile.arch)
    except build.BuildError as e:
        raise KernelError(str(e)) from None
    check_image(b.image, profile)
    git = b.meta.get("git") or {}
    where = f"{b.meta['tree']} at {git['describe']}" if git else b.meta["tree"]
    return Kernel(spec, profile.arch, b.image, b.meta["release"], b.modules, b.config,
                  f"guestpm build of {where} ({b.dir})")


def kernel_packages(show: Callable[[str], dict[str, str]], deb_arch: str) -> list[str]:
    """The versioned packages behind Debian's linux-image-ARCH meta package.

    bookworm/trixie: linux-image-VER-ARCH.  sid (7.x): linux-image-VER-ARCH is itself a
    meta package over linux-binary-, linux-modules- and linux-base-VER-ARCH."""
    todo, seen, wanted = [f"linux-image-{deb_arch}"], set(), []
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        stanza = show(name)
        if re.search(r"\d", name.removesuffix(f"-{deb_arch}")):   # versioned, not a meta package
            wanted.append(name)
        for dep in aptrepo.hard_depends(stanza.get("Depends", "")):
            if dep.startswith("linux-") and dep.endswith(f"-{deb_arch}"):
                todo.append(dep)
    if not wanted:
        raise SetupError(f"linux-image-{deb_arch} depends on no versioned kernel package")
    return wanted


def locate(root: Path) -> tuple[Path, Path, str]:
    """(image, modules dir, release) in an extracted Debian kernel package set."""
    for mods in sorted(root.glob("lib/modules/*")) + sorted(root.glob("usr/lib/modules/*")):
        release = mods.name
        for image in (mods / "vmlinuz", root / "boot" / f"vmlinuz-{release}"):
            if image.is_file():
                return image, mods, release
    raise SetupError(f"no vmlinuz found in the extracted packages under {root}")


def _debian(label: str, profile: Profile, progress: Progress) -> Kernel:
    suite = DEBIAN_LABELS[label]
    dest = cache.cache_dir() / "kernels" / f"debian-{label}-{profile.deb_arch}"
    meta_path = dest / "kernel.json"
    if not meta_path.exists():
        with cache.locked(dest):
            if not meta_path.exists():
                _fetch(label, suite, profile, dest, progress)
    meta = json.loads(meta_path.read_text())
    image = dest / meta["image"]
    return Kernel(f"debian:{label}", profile.arch, image, meta["release"], dest / meta["modules"],
                  dest / meta["config"] if meta.get("config") else None,
                  f"Debian {suite} {', '.join(meta['packages'])}",
                  debian=(suite, meta["packages"][0].partition("=")[2]))


def _fetch(label: str, suite: str, profile: Profile, dest: Path, progress: Progress) -> None:
    arch = profile.deb_arch
    repo = aptrepo.AptRepo(cache.cache_dir() / "apt" / suite, suite, aptrepo.system_mirror())
    progress(f"debian:{label} {arch}: reading Debian {suite} package lists")
    try:
        with cache.locked(repo.root):
            repo.update()
    except SetupError as e:
        raise SetupError(f"debian:{label} for {arch} is not cached and could not be fetched: {e}") \
            from None
    packages = kernel_packages(lambda n: repo.show(n, arch), arch)
    versions = {p: repo.show(p, arch).get("Version", "?") for p in packages}
    progress(f"debian:{label} {arch}: downloading {', '.join(packages)}")
    with cache.staging_dir(dest) as tmp:
        debs = repo.download(packages, arch, tmp / "debs")
        for deb in debs:
            progress(f"debian:{label} {arch}: extracting {deb.name}")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
            deb.unlink()
        image, mods, release = locate(tmp / "root")
        if not release.startswith(label + "."):
            raise SetupError(f"Debian {suite}'s kernel is {release}, not {label}.x: "
                             "the label table in harness/kernels.py needs updating")
        check_image(image, profile)
        config = next((p for p in (mods / "config", tmp / "root/boot" / f"config-{release}")
                       if p.exists()), None)
        (tmp / "kernel.json").write_text(json.dumps({
            "label": label, "suite": suite, "arch": arch, "release": release,
            "packages": [f"{p}={v}" for p, v in versions.items()],
            "image": str(image.relative_to(tmp)), "modules": str(mods.relative_to(tmp)),
            "config": str(config.relative_to(tmp)) if config else None,
        }, indent=1))
        # dtbs and firmware are not needed to boot QEMU's virt machine
        for junk in (mods / "dtb",):
            if junk.is_dir():
                subprocess.run(["rm", "-rf", str(junk)], check=True)
