"""Build a kernel tree for guestpm: fragments -> merge_config.sh -> checked .config -> make.

The build is out of tree (O=) under the cache, one directory per (tree, arch, base,
fragment contents, compiler), so a rebuild of the same tree is incremental and a
bisect reuses the objects of its previous step.  Its result is selected with
`--kernel build:DIR` (or `build:TREE`: the latest build of that tree for the arch).

  DIR/obj/            the O= build (.config, vmlinux, arch/*/boot/...)
  DIR/modules/        INSTALL_MOD_PATH (lib/modules/RELEASE), when CONFIG_MODULES=y
  DIR/build.json      what was built: tree, git revision, fragments, release, timings
  DIR/build.log       make's output of the last build; config.log the config step's
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import cache, profiles
from harness.children import run_logged
from harness.errors import GuestpmError, SetupError
from harness.kernel import kconfig, kconfig_db
from harness.profiles import KbuildArch

Progress = Callable[[str], None]
BASES = ("allnoconfig", "defconfig")


class BuildError(GuestpmError):
    """The tree did not configure or compile; the message ends with the log's path."""


# How Kbuild spells each arch and which cross compiler builds it: profile data
KBUILD: dict[str, KbuildArch] = {p.arch: p.kbuild for p in profiles.PROFILES.values() if p.kbuild}
# Host programs any kernel build runs, by the Debian package that ships them.
HOST_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
              "perl": "perl-base"}


# what unpacking a Debian kernel source (linux-source-X.Y: a .tar.xz in the .deb) execs,
# for the trees the build tests make (harness.kernel.debian_sources); not needed to build
# a developer's own tree, so not a HOST_TOOLS check.  A minimal trixie has no xz.
SOURCE_TOOLS = {"xz": "xz-utils"}


def build_packages(arch: str) -> list[str]:
    """Debian packages a build for this arch needs on this host (setup installs them)."""
    ka = KBUILD[arch]
    pkgs = set(HOST_TOOLS.values()) | set(SOURCE_TOOLS.values()) | \
        {p for _, p in ka.host_libs} | {"libssl-dev", "git"}
    if profiles.host_machine() != ka.host_machine:
        pkgs.add(ka.cross_package)
    return sorted(pkgs)


# ---------------------------------------------------------------- the tree

def tree_version(tree: Path) -> str:
    """'7.2.13' from the top Makefile, or BuildError when TREE is not a kernel tree."""
    mk = tree / "Makefile"
    why = None
    if not tree.is_dir():
        why = "no such directory"
    elif not mk.is_file():
        why = "no top-level Makefile"
    elif not (tree / "scripts/kconfig/merge_config.sh").is_file() or not (tree / "Kconfig").is_file():
        why = "no Kconfig or scripts/kconfig/merge_config.sh"
    if why:
        raise BuildError(f"{tree} is not a Linux kernel tree ({why}): pass --tree the "
                         "directory that holds the kernel's top Makefile")
    head = mk.read_text(errors="replace")[:2000]
    v = {k: re.search(rf"^{k}\s*=\s*(\S*)", head, re.MULTILINE) for k in
         ("VERSION", "PATCHLEVEL", "SUBLEVEL")}
    if not v["VERSION"] or not v["PATCHLEVEL"]:
        raise BuildError(f"{tree} is not a Linux kernel tree (its Makefile sets no "
                         "VERSION/PATCHLEVEL)")
    return ".".join(m[1] for m in v.values() if m and m[1])


def check_source_clean(tree: Path, srcarch: str) -> None:
    """O= builds need a source tree that was never configured in place (the kernel's
    own outputmakefile check)."""
    for p in (".config", "include/config", f"arch/{srcarch}/include/generated"):
        if (tree / p).exists():
            raise BuildError(f"{tree} has been configured in place ({p} exists), which "
                             f"out-of-tree builds refuse: run `make mrproper` in {tree}")


def git_describe(tree: Path) -> dict[str, str] | None:
    if not (tree / ".git").exists() or not shutil.which("git"):
        return None
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *a], capture_output=True,
                              text=True).stdout.strip()
    return {"head": git("rev-parse", "HEAD"), "describe": git("describe", "--always", "--dirty"),
            "subject": git("log", "-1", "--format=%s")}


# ---------------------------------------------------------------- the toolchain

@dataclass(frozen=True)
class Toolchain:
    arch: KbuildArch
    cross_compile: str           # '' for a native build
    ccache: str | None

    def make_vars(self) -> list[str]:
        out = [f"ARCH={self.arch.arch}"]
        if self.cross_compile:
            out.append(f"CROSS_COMPILE={self.cross_compile}")
        if self.ccache:
            out.append(f"CC={self.ccache} {self.cross_compile}gcc")
        return out

    def env(self) -> dict[str, str]:
        env = dict(os.environ, ARCH=self.arch.arch, CROSS_COMPILE=self.cross_compile, LC_ALL="C")
        if self.ccache:
            # depend mode: a third of the default mode's cold-build overhead (docs/figures.md)
            env.setdefault("CCACHE_DEPEND", "1")
        return env


def toolchain(arch: str, cross_compile: str | None = None, use_ccache: bool = True,
              which: Callable[[str], str | None] = shutil.which,
              exists: Callable[[str], bool] = os.path.exists,
              host_machine: str | None = None) -> Toolchain:
    """The compiler for ARCH on this host, or SetupError naming every missing package."""
    ka = KBUILD[arch]
    host = host_machine or profiles.host_machine()
    if cross_compile is None:
        cross_compile = "" if host == ka.host_machine else ka.cross_prefix
    missing = []
    for tool, pkg in HOST_TOOLS.items():
        if not which(tool):
            missing.append(f"{tool} ({pkg})")
    if cross_compile:
        pkg = ka.cross_package if cross_compile == ka.cross_prefix else \
            f"a toolchain providing {cross_compile}gcc"
        for tool in ("gcc", "ld"):
            if not which(cross_compile + tool):
                missing.append(f"{cross_compile}{tool} ({pkg})")
    for header, pkg in ka.host_libs:
        if not exists(header):
            missing.append(f"{header} ({pkg})")
    if missing:
        pkgs = sorted({m[m.index("(") + 1:-1] for m in missing if "toolchain" not in m})
        raise SetupError(f"cannot build for {arch}: missing {', '.join(dict.fromkeys(missing))}"
                         + (f"; install with `apt-get install {' '.join(pkgs)}`" if pkgs else ""))
    return Toolchain(ka, cross_compile, which("ccache") if use_ccache else None)


# ---------------------------------------------------------------- where builds live

def builds_dir() -> Path:
    return cache.cache_dir() / "builds"


def build_key(tree: Path, arch: str, base: str, fragments: list[Path], tc: Toolchain) -> str:
    # ccache changes $(CC), which Kbuild records per object: a build with and one
    # without it must not share objects, or every switch rebuilds everything
    parts = [str(tree.resolve()), arch, base, tc.cross_compile] + (["ccache"] if tc.ccache else [])
    for p in fragments:     # its options, not its comments: a reworded comment rebuilds nothing
        parts += [p.name, "\n".join(ln.strip() for ln in p.read_text().splitlines()
                                    if ln.strip() and not ln.lstrip().startswith("#"))]
    return cache.digest(*parts)[:12]


def latest_link(tree: Path, arch: str) -> Path:
    return builds_dir() / "latest" / f"{cache.digest(str(tree.resolve()))[:12]}-{arch}"


@dataclass
class Build:
    dir: Path
    meta: dict

    @property
    def image(self) -> Path:
        return self.dir / "obj" / self.meta["image"]

    @property
    def modules(self) -> Path | None:
        m = self.meta.get("modules")
        return self.dir / m if m else None

    @property
    def config(self) -> Path:
        return self.dir / "obj" / ".config"


def find(path: Path, arch: str) -> Build:
    """A build directory, or the latest build of a kernel tree for ARCH."""
    path = path.expanduser()
    if (path / "build.json").is_file():
        b = Build(path.resolve(), json.loads((path / "build.json").read_text()))
        if b.meta["arch"] != arch:
            raise BuildError(f"{path} is a build for {b.meta['arch']}, not {arch}")
        return b
    link = latest_link(path, arch)
    if (path / "Makefile").is_file() and (link / "build.json").is_file():
        return find(link.resolve(), arch)
    raise BuildError(f"no guestpm build at {path} for {arch}: run `guestpm build --tree "
                     f"{path} --arch {arch}` first (or pass the directory it printed)")


# ---------------------------------------------------------------- steps

_COMPILER = re.compile(r"(: (fatal )?error:|undefined reference to|No rule to make target|"
                       r"multiple definition of|ld: .*error)")
_CONTEXT = re.compile(r": (In function|In file included from|At top level)")


def error_excerpt(log_text: str, limit: int = 12) -> list[str]:
    """Why make failed: the compiler's and linker's errors (with their 'In function'
    line) and make's first '***' line; make's '***' lines alone when no compiler
    error is there (a config or environment failure); else the log's tail."""
    lines = [ln for ln in log_text.splitlines() if ln.strip() and not ln.startswith("$ ")]
    picked: list[str] = []
    for i, ln in enumerate(lines):
        if _COMPILER.search(ln):
            if i and _CONTEXT.search(lines[i - 1]) and lines[i - 1] not in picked:
                picked.append(lines[i - 1])
            if ln not in picked:
                picked.append(ln)
    make = [ln for ln in lines if "***" in ln and "Waiting for unfinished jobs" not in ln]
    picked += make[:1] if picked else make
    picked = picked or lines[-limit:]
    if len(picked) > limit:
        picked = picked[: limit - 3] + ["..."] + picked[-2:]
    return picked


class _Progress:
    """A line every `every` seconds while make runs: steps (compile, link, ...) done,
    elapsed, and a percentage of the most steps a build of this directory took."""

    def __init__(self, say: Progress, what: str, previous: int | None, every: float = 15.0):
        self.say, self.what, self.previous, self.every = say, what, previous, every
        self.count, self.last = 0, ""
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def line(self, text: str) -> None:
        m = re.match(r"^\s+(CC|AS|LD|AR|CC \[M\]|HOSTCC|OBJCOPY)\s+(\S+)", text)
        if m:
            self.count += 1
            self.last = m[2]

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            pct = (f", ~{min(99, 100 * self.count // self.previous)}% of a full build"
                   if self.previous else "")
            self.say(f"{self.what}: {self.count} steps in {time.monotonic() - self.t0:.0f}s"
                     f"{pct} (last: {self.last or '-'})")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def configure(tree: Path, obj: Path, tc: Toolchain, base: str, fragments: list[Path],
              log: Path, stamp: str, say: Progress) -> None:
    """.config from BASE + fragments through merge_config.sh, then olddefconfig.  Skipped
    (olddefconfig only) when the same inputs configured this directory before."""
    env, mk = tc.env(), ["make", f"O={obj}", *tc.make_vars()]
    stamp_file = obj / ".guestpm-config-stamp"
    if (obj / ".config").is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        steps = [mk + ["olddefconfig"]]
    else:
        merge = [str(tree / "scripts/kconfig/merge_config.sh"), "-O", str(obj)]
        frags = [str(f) for f in fragments]
        if base == "allnoconfig":
            steps = [merge + ["-n", *frags], mk + ["olddefconfig"]]
        else:
            steps = [mk + ["defconfig"], merge + ["-m", str(obj / ".config"), *frags],
                     mk + ["olddefconfig"]]
        say(f"configuring: {base} + {', '.join(kconfig.fragment_name(str(f)) for f in fragments)}"
            " (merge_config.sh)")
    log.write_text("")
    for cmd in steps:
        if run_logged(cmd, log, tree, env) != 0:
            what = "merge_config.sh" if cmd[0].endswith("merge_config.sh") else f"make {cmd[-1]}"
            raise BuildError(f"configuring {tree} failed at {what}:\n  "
                             + "\n  ".join(error_excerpt(log.read_text())) + f"\nfull log: {log}")
    stamp_file.write_text(stamp)


def survival(tree: Path, obj: Path, arch: KbuildArch, req: kconfig.Requested) -> list[kconfig.Lost]:
    final = kconfig.parse_config((obj / ".config").read_text(), str(obj / ".config"))
    if all(kconfig.same_value(v, final.get(s, "n")) for s, v in req.values.items()):
        return []
    db = kconfig_db.load_kconfig(tree, arch.srcarch)
    return kconfig.check(req, final, db, arch.arch)


def build(tree: Path, arch: str, roles: list[str], base: str = "allnoconfig",
          jobs: int | None = None, cross_compile: str | None = None, use_ccache: bool = True,
          nice: int = 0, say: Progress = lambda s: None, progress_every: float = 15.0) -> Build:
    tree = tree.expanduser().resolve()
    version = tree_version(tree)
    tc = toolchain(arch, cross_compile, use_ccache)
    check_source_clean(tree, tc.arch.srcarch)
    if base not in BASES:
        raise BuildError(f"unknown base {base!r}: {' or '.join(BASES)}")
    fragments = kconfig.fragment_paths(arch, roles)
    req = kconfig.requested(fragments)
    key = build_key(tree, arch, base, fragments, tc)
    out = builds_dir() / f"{tree.name}-{arch}-{key}"
    obj = out / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    rev = git_describe(tree)
    at = f"{tree} ({rev['describe']})" if rev else str(tree)
    with cache.locked(out):
        prev = json.loads((out / "build.json").read_text()) if (out / "build.json").is_file() \
            else None
        # until this build succeeds, the directory holds no runnable kernel: a stale
        # Image from the last good build must not be booted as this tree's
        (out / "build.json").unlink(missing_ok=True)
        t0 = time.monotonic()
        configure(tree, obj, tc, base, fragments, out / "config.log",
                  cache.digest(base, *[f.read_bytes() for f in fragments]), say)
        lost = survival(tree, obj, tc.arch, req)
        if lost:
            (obj / ".guestpm-config-stamp").unlink(missing_ok=True)
            raise BuildError(f"{len(lost)} requested option(s) did not survive olddefconfig "
                             f"for {arch} in {at}; the build stops:\n  "
                             + "\n  ".join(str(x) for x in lost)
                             + f"\nconfig: {obj / '.config'}; log: {out / 'config.log'}")
        t_config = time.monotonic() - t0
        final = kconfig.parse_config((obj / ".config").read_text())
        modules = final.get("MODULES") == "y"
        targets = [tc.arch.target] + (["modules"] if modules else [])
        jobs = jobs or os.cpu_count() or 1
        log = out / "build.log"
        log.write_text("")
        say(f"building {version} for {arch} in {obj} (make -j{jobs} {' '.join(targets)}"
            f"{', ccache' if tc.ccache else ''})")
        t1 = time.monotonic()
        with _Progress(say, f"building {tree.name} for {arch}",
                       prev.get("full_steps") if prev else None, progress_every) as prog:
            rc = run_logged(["make", f"O={obj}", f"-j{jobs}", *tc.make_vars(), *targets],
                            log, tree, tc.env(), nice, prog.line)
        t_build = time.monotonic() - t1
        if rc != 0:
            raise BuildError(f"build of {at} for {arch} failed (make exit {rc}) after "
                             f"{t_build:.0f}s:\n  " + "\n  ".join(error_excerpt(log.read_text()))
                             + f"\nfull log: {log}")
        release = (obj / "include/config/kernel.release").read_text().strip()
        mod_rel = None
        if modules:
            inst = out / "modules"
            shutil.rmtree(inst, ignore_errors=True)
            if run_logged(["make", f"O={obj}", *tc.make_vars(), f"INSTALL_MOD_PATH={inst}",
                            "DEPMOD=true", "modules_install"], log, tree, tc.env()) != 0:
                raise BuildError("modules_install failed:\n  "
                                 + "\n  ".join(error_excerpt(log.read_text())) + f"\nfull log: {log}")
            mod_rel = f"modules/lib/modules/{release}"
        meta = {"tree": str(tree), "arch": arch, "version": version, "release": release,
                "base": base, "fragments": [str(f) for f in fragments], "git": rev,
                "image": tc.arch.image, "modules": mod_rel, "steps": prog.count,
                "full_steps": max(prog.count, (prev or {}).get("full_steps", 0)),
                "cross_compile": tc.cross_compile, "ccache": bool(tc.ccache),
                "seconds": {"config": round(t_config, 1), "build": round(t_build, 1)}}
        cache.write_atomic(out / "build.json", json.dumps(meta, indent=1).encode())
    link = latest_link(tree, arch)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(link.name + f".{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(out)
    os.replace(tmp, link)
    say(f"built {release} in {t_build:.0f}s ({prog.count} steps; config {t_config:.0f}s)")
    return Build(out, meta)
