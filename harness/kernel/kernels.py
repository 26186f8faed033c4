"""Where a kernel under test comes from.

Specs:
  debian:6.1 | debian:6.12 | debian:7.2   stock Debian kernels (bookworm, trixie, sid),
                                          the defaults; fetched once with apt, then offline
  debian:X.Y | debian:SUITE               any kernel version or suite the system's mirror
                                          carries (debian:5.10, debian:bullseye,
                                          debian:bookworm-backports)
  path:IMAGE[,modules=DIR]                your own bzImage / arm64 Image (or Image.gz);
                                          DIR is lib/modules/VERSION or an
                                          INSTALL_MOD_PATH root; /boot/vmlinuz-RELEASE
                                          finds config-RELEASE and /lib/modules/RELEASE
  build:DIR | build:TREE                  a `guestpm build` (its directory, or the latest
                                          build of TREE for the arch), with its modules
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.errors import KernelError, SetupError
from harness.kernel import aptrepo, kconfig
from harness.profiles import Profile

DEBIAN_LABELS = {"6.1": "bookworm", "6.12": "trixie", "7.2": "sid"}
DEFAULT_KERNELS = tuple(f"debian:{label}" for label in DEBIAN_LABELS)
SCHEMES = ("debian:X.Y|SUITE", "path:IMAGE[,modules=DIR]", "build:DIR|TREE")

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
        return parse_config(self.config.read_text(errors="replace"))


def parse_config(text: str) -> dict[str, str]:
    """The options a .config (or /proc/config.gz) sets, as CONFIG_X -> value (kconfig's
    parser; an option that "is not set" is absent, as in the kernel's own tests)."""
    return {f"CONFIG_{sym}": v for sym, v in kconfig.parse_config(text, strict=False).items()
            if v != "n"}


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
        raise KernelError("this is a gzip file that holds no kernel image")
    raise KernelError("not a Linux kernel image (no bzImage 'HdrS' or arm64 'ARM\\x64' magic)")


def expected_size(data: bytes, fmt: str) -> int | None:
    """The length the image's own header promises, or None when it says nothing.

    bzImage: the real-mode setup sectors plus the protected-mode part (boot protocol
    2.04+: `syssize` in 16-byte paragraphs).  arm64 Image: the end of the furthest
    section of its PE header (EFI stub kernels); not `image_size`, which includes BSS
    and so exceeds the file (7.2: 49,283,072 in the header, 48,271,296 on disk)."""
    if fmt == "bzImage" and len(data) >= 0x1F8:
        setup_sects = data[0x1F1] or 4
        return (setup_sects + 1) * 512 + int.from_bytes(data[0x1F4:0x1F8], "little") * 16
    if fmt == "arm64-Image" and len(data) >= 0x40:
        pe = int.from_bytes(data[0x3C:0x40], "little")
        if not pe or data[pe:pe + 4] not in (b"PE\0\0", b""):
            return None                                   # no EFI stub: nothing to go by
        if len(data) < pe + 24:
            return pe + 24
        sections = int.from_bytes(data[pe + 6:pe + 8], "little")
        table = pe + 24 + int.from_bytes(data[pe + 20:pe + 22], "little")
        end = table + 40 * sections
        for i in range(sections):
            entry = data[table + 40 * i: table + 40 * i + 40]
            if len(entry) < 40:
                return end
            size, ptr = int.from_bytes(entry[16:20], "little"), int.from_bytes(entry[20:24], "little")
            end = max(end, ptr + size)
        return end
    return None


def _a(fmt: str) -> str:
    return f"an {fmt}" if fmt[0] in "aeiou" else f"a {fmt}"


@dataclass(frozen=True)
class ImageInfo:
    format: str                # bzImage | arm64-Image
    release: str | None        # embedded release string
    compressed: bool = False   # a gzip'd arm64 Image (QEMU decompresses it itself)


def inspect_image(path: Path, want: str | None = None) -> ImageInfo:
    """Identify a kernel file and check it is whole (and of format `want`), before
    anything boots it."""
    if not path.exists():
        raise KernelError(f"kernel image {path} does not exist")
    if not path.is_file():
        raise KernelError(f"kernel image {path} is not a file")
    data = path.read_bytes()
    compressed = data[:2] == b"\x1f\x8b"
    if compressed:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise KernelError(f"{path} is a damaged or truncated gzip file ({e})") from None
    try:
        fmt = identify_image(data[:4096])
    except KernelError as e:
        raise KernelError(f"{path}: {e}") from None
    if compressed and fmt != "arm64-Image":
        raise KernelError(f"{path} is a gzip'd {fmt}: only arm64 Images may be gzip'd")
    if want and fmt != want:
        raise KernelError(f"{path} is {_a(fmt)} but this profile boots {_a(want)}: "
                          "wrong architecture")
    promised = expected_size(data, fmt)
    if promised is not None and len(data) < promised:
        raise KernelError(f"{path} is truncated: its {fmt} header promises {promised} bytes, "
                          f"the {'decompressed ' if compressed else ''}file has {len(data)}")
    return ImageInfo(fmt, image_release(data, fmt), compressed)


def image_mentions(image: Path, text: bytes) -> bool:
    """Whether an (uncompressed or gzip'd) arm64 Image holds `text`: how a test learns
    that a kernel knows a boot parameter, e.g. b"kvm-arm.mode" (a bzImage's payload is
    compressed, so this says nothing for x86)."""
    data = image.read_bytes()
    return text in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


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


def check_image(path: Path, profile: Profile) -> ImageInfo:
    try:
        return inspect_image(path, profile.image_format)
    except KernelError as e:
        raise KernelError(str(e).replace("this profile", f"--arch {profile.name}")) from None


# ---------------------------------------------------------------- resolution

def debian_kind(value: str) -> str:
    """'label' (a default, no look-up), 'suite' (a Debian suite name) or 'version'."""
    if value in DEBIAN_LABELS:
        return "label"
    if re.fullmatch(r"\d+\.\d+", value):
        return "version"
    base, _, pocket = value.partition("-")
    if base in aptrepo.DEBIAN_SUITES and pocket in ("", "backports"):
        return "suite"
    raise KernelError(f"unknown kernel 'debian:{value}': take a version (debian:5.10, "
                      f"debian:6.1, ...) or a Debian suite (debian:bullseye, "
                      f"debian:bookworm-backports, ...); the defaults are "
                      f"{', '.join(DEFAULT_KERNELS)}")


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ("debian", "path", "build"):
        raise KernelError(f"unknown kernel {spec!r}: use one of "
                          f"{', '.join(DEFAULT_KERNELS)} or {' / '.join(SCHEMES)}")
    if scheme == "debian":
        debian_kind(rest)
        return scheme, rest, {}
    if scheme == "build":
        if not rest:
            raise KernelError(f"{spec!r}: build: takes the directory `guestpm build` printed, "
                              "or the kernel tree it built")
        return scheme, rest, {}
    value, *opts = rest.split(",")
    if not value:
        raise KernelError(f"{spec!r}: path: takes a kernel image file")
    options = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k != "modules":
            raise KernelError(f"bad option {o!r} in {spec!r}: path: takes only modules=DIR")
        options[k] = v
    return scheme, value, options


def check_spec(spec: str, profile: Profile) -> None:
    """Everything about a spec that can be checked before anything starts: the scheme;
    for path: and build: the image itself (there, arch, whole); for a debian:X.Y that
    is not a default, that some suite carries X.Y (a look at the package lists, cached
    after the first time).  Raises KernelError."""
    scheme, value, _ = parse_spec(spec)
    if scheme in ("path", "build"):
        resolve(spec, profile)
    elif scheme == "debian" and debian_kind(value) == "version" and \
            not _cached_version(value, profile):
        suite_for(value, profile, lambda s: None)


def _cached_version(version: str, profile: Profile) -> bool:
    """Whether a kernel X.Y for the arch is in the cache already (no look-up needed)."""
    for meta in (cache.cache_dir() / "kernels").glob(f"debian-*-{profile.deb_arch}/kernel.json"):
        try:
            if json.loads(meta.read_text())["release"].startswith(version + "."):
                return True
        except (OSError, ValueError, KeyError):
            continue
    return False


def resolve(spec: str, profile: Profile, progress: Progress = lambda s: None) -> Kernel:
    scheme, value, options = parse_spec(spec)
    if scheme == "debian":
        return _debian(spec, value, profile, progress)
    if scheme == "build":
        return _build(spec, Path(value).expanduser(), profile)
    return _path(spec, Path(value).expanduser(), options.get("modules"), profile)


def _path(spec: str, image: Path, modules: str | None, profile: Profile) -> Kernel:
    info = check_image(image, profile)
    release = info.release
    # Debian and Fedora install /boot/vmlinuz-RELEASE beside config-RELEASE, with the
    # modules in /lib/modules/RELEASE
    named = image.name.partition("-")[2] if image.name.startswith("vmlinuz-") else None
    release = release or named
    mod_dir = None
    if modules:
        mod_dir = Path(modules).expanduser()
        if release and (mod_dir / "lib/modules" / release).is_dir():
            mod_dir = mod_dir / "lib/modules" / release
        if not (mod_dir / "kernel").is_dir() and not (mod_dir / "modules.builtin").exists():
            raise KernelError(f"{mod_dir} is not a modules directory (lib/modules/VERSION)")
    elif named and image.parent.name == "boot":
        for root in (image.parent.parent / "lib/modules", image.parent.parent / "usr/lib/modules"):
            if (root / named / "modules.builtin").exists():
                mod_dir = root / named
                break
    # a Debian-style modules dir carries `config`; /boot has config-RELEASE beside the
    # image; a build tree has .config above it
    candidates = ([mod_dir / "config"] if mod_dir else []) + \
        [image.parent / f"config-{r}" for r in {named, release} if r] + \
        [d / ".config" for d in list(image.resolve().parents)[:4]]
    config = next((c for c in candidates if c.is_file()), None)
    return Kernel(spec, profile.arch, image.resolve(), release, mod_dir, config, str(image))


def _build(spec: str, path: Path, profile: Profile) -> Kernel:
    from harness.kernel import build
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


# Where debian:X.Y looks when X.Y is not a default: main suites first (oldest first),
# then backports, so that a version in a release and in a backports suite comes from
# the release.
SEARCH_SUITES = ("bullseye", "bookworm", "trixie", "forky", "sid",
                 "bullseye-backports", "bookworm-backports", "trixie-backports")


def _repo(suite: str) -> aptrepo.AptRepo:
    return aptrepo.AptRepo(cache.cache_dir() / "apt" / suite, suite, aptrepo.system_mirror())


def updated_repo(suite: str, why: str) -> aptrepo.AptRepo:
    """`suite`'s package index, updated under the cache lock (`why` names it in an
    error)."""
    repo = _repo(suite)
    try:
        with cache.locked(repo.root):
            repo.update()
    except SetupError as e:
        raise SetupError(f"{why} is not cached and could not be fetched: {e}") from None
    return repo


def suite_for(version: str, profile: Profile, progress: Progress) -> str:
    """The first suite of SEARCH_SUITES whose kernel for the arch is `version`.x."""
    arch, seen = profile.deb_arch, []
    for suite in SEARCH_SUITES:
        progress(f"debian:{version} {arch}: looking in Debian {suite}")
        try:
            # lists already fetched are read as they are: rewriting the repo's apt
            # configuration makes apt rebuild its cache, seconds per suite
            repo = _repo(suite)
            if not repo.conf.exists() or not repo._has_lists():
                repo = updated_repo(suite, f"Debian {suite}")
            have = repo.show(f"linux-image-{arch}", arch).get("Version", "?")
        except SetupError:
            seen.append(f"{suite}: not on the mirror")
            continue
        if have.startswith(version + "."):
            return suite
        seen.append(f"{suite}: {have}")
    raise KernelError(f"no Debian suite on this mirror has a {version} kernel for {arch} "
                      f"({'; '.join(seen)})")


def _debian(spec: str, value: str, profile: Profile, progress: Progress) -> Kernel:
    kind = debian_kind(value)
    version = None if kind == "suite" else value
    suite = value if kind == "suite" else \
        DEBIAN_LABELS.get(value) or suite_for(value, profile, progress)
    dest = cache.cache_dir() / "kernels" / f"debian-{suite}-{profile.deb_arch}"
    meta_path = dest / "kernel.json"
    if not meta_path.exists():
        with cache.locked(dest):
            if not meta_path.exists():
                _fetch(spec, suite, profile, dest, progress)
    meta = json.loads(meta_path.read_text())
    if version and not meta["release"].startswith(version + "."):
        raise SetupError(f"Debian {suite}'s kernel is {meta['release']}, not {version}.x: "
                         "the label table in harness/kernel/kernels.py needs updating")
    image = dest / meta["image"]
    return Kernel(spec, profile.arch, image, meta["release"], dest / meta["modules"],
                  dest / meta["config"] if meta.get("config") else None,
                  f"Debian {suite} {', '.join(meta['packages'])}",
                  debian=(suite, meta["packages"][0].partition("=")[2]))


def _fetch(spec: str, suite: str, profile: Profile, dest: Path, progress: Progress) -> None:
    arch = profile.deb_arch
    progress(f"{spec} {arch}: reading Debian {suite} package lists")
    repo = updated_repo(suite, f"{spec} for {arch}")
    packages = kernel_packages(lambda n: repo.show(n, arch), arch)
    versions = {p: repo.show(p, arch).get("Version", "?") for p in packages}
    progress(f"{spec} {arch}: downloading {', '.join(packages)} from Debian {suite}")
    with cache.staging_dir(dest) as tmp:
        debs = repo.download(packages, arch, tmp / "debs")
        for deb in debs:
            progress(f"{spec} {arch}: extracting {deb.name}")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
            deb.unlink()
        image, mods, release = locate(tmp / "root")
        check_image(image, profile)
        config = next((p for p in (mods / "config", tmp / "root/boot" / f"config-{release}")
                       if p.exists()), None)
        (tmp / "kernel.json").write_text(json.dumps({
            "spec": spec, "suite": suite, "arch": arch, "release": release,
            "packages": [f"{p}={v}" for p, v in versions.items()],
            "image": str(image.relative_to(tmp)), "modules": str(mods.relative_to(tmp)),
            "config": str(config.relative_to(tmp)) if config else None,
        }, indent=1))
        # dtbs and firmware are not needed to boot QEMU's virt machine
        for junk in (mods / "dtb",):
            if junk.is_dir():
                subprocess.run(["rm", "-rf", str(junk)], check=True)
    progress(f"{spec} {arch}: Linux {release} from Debian {suite}")
