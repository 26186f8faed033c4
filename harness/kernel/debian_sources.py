"""Kernel source trees from Debian (linux-source-X.Y), for the build tests and for a
developer who wants a tree matching a default kernel.

  source(\"7.2\") -> ~/.cache/guestpm/src/linux-source-7.2   (fetched once, then offline)
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import cache
from harness.errors import SetupError
from harness.kernel import aptrepo, build
from harness.kernel.kernels import DEBIAN_LABELS


def source(label: str, progress: Callable[[str], None] = lambda s: None) -> Path:
    if label not in DEBIAN_LABELS:
        raise SetupError(f"no Debian source for {label!r}: known labels {', '.join(DEBIAN_LABELS)}")
    dest = cache.cache_dir() / "src" / f"linux-source-{label}"
    if (dest / "Makefile").is_file():
        return dest
    lacking = [f"{tool} ({pkg})" for tool, pkg in build.SOURCE_TOOLS.items()
               if not shutil.which(tool)]
    if lacking:
        raise SetupError(f"unpacking linux-source-{label} needs {', '.join(lacking)}: "
                         "`guestpm setup --build-tools` installs it")
    with cache.locked(dest):
        if (dest / "Makefile").is_file():
            return dest
        suite = DEBIAN_LABELS[label]
        repo = aptrepo.AptRepo(cache.cache_dir() / "apt" / suite, suite, aptrepo.system_mirror())
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True).stdout.strip() or "amd64"
        pkg = f"linux-source-{label}"
        progress(f"{pkg}: reading Debian {suite} package lists")
        with cache.locked(repo.root):
            repo.update()
        version = repo.show(pkg, arch).get("Version", "?")
        progress(f"{pkg}: downloading {version}")
        with tempfile.TemporaryDirectory(dir=dest.parent) as debs, \
                cache.staging_dir(dest) as tmp:
            deb = repo.download([pkg], arch, Path(debs))[0]
            progress(f"{pkg}: unpacking {deb.name}")
            # deb -> data tar -> usr/src/PKG.tar.xz -> the tree, streamed
            sh = (f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | "
                  f"tar -xO --wildcards './usr/src/{pkg}.tar.*' | "
                  f"tar -xJ --strip-components=1 -C {shlex.quote(str(tmp))}")
            proc = subprocess.run(["bash", "-c", "set -euo pipefail; " + sh],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not (tmp / "Makefile").is_file():
                raise SetupError(f"unpacking {deb.name} failed: {proc.stderr.strip()[-300:]}")
            (tmp / ".guestpm-source").write_text(f"{pkg} {version} (Debian {suite})\n")
    return dest
