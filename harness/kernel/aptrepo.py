"""A private apt configuration for fetching Debian packages of any suite/arch.

Never installs anything: used only for `apt-get update`, `apt-cache show` and
`apt-get download` into guestpm's cache.  The mirror URI and keyring are taken
from the system's own apt sources, so the project names no registry host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SetupError

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky", "sid",
                 "stable", "testing", "unstable", "oldstable")


@dataclass(frozen=True)
class Mirror:
    uri: str
    keyring: str
    origin: str            # the file it was read from, for error messages


def _is_debian_main(suites: list[str], components: list[str]) -> bool:
    return "main" in components and any(
        s.split("-")[0] in DEBIAN_SUITES and not s.endswith("-security") for s in suites)


def parse_deb822(text: str, origin: str) -> list[Mirror]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        suites, comps = fields.get("suites", "").split(), fields.get("components", "").split()
        if not _is_debian_main(suites, comps):
            continue
        keyring = fields.get("signed-by", "").strip()
        if not keyring or keyring.startswith("-----"):   # inline keys: fall back to the default
            keyring = DEFAULT_KEYRING
        for uri in fields.get("uris", "").split():
            found.append(Mirror(uri.rstrip("/"), keyring, origin))
    return found


_ONE_LINE = re.compile(r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.*)$")


def parse_one_line(text: str, origin: str) -> list[Mirror]:
    found = []
    for line in text.splitlines():
        m = _ONE_LINE.match(line.split("#", 1)[0])
        if not m or not _is_debian_main([m["suite"]], m["comps"].split()):
            continue
        keyring = DEFAULT_KEYRING
        for opt in (m["opts"] or "").split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                keyring = v
        found.append(Mirror(m["uri"].rstrip("/"), keyring, origin))
    return found


def system_mirror(etc: Path = Path("/etc/apt")) -> Mirror:
    """The first Debian 'main' mirror configured on this machine."""
    candidates: list[Mirror] = []
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*"))
    for f in files:
        if not f.is_file():
            continue
        if f.suffix == ".sources":
            candidates += parse_deb822(f.read_text(), str(f))
        elif f.suffix == ".list" or f.name == "sources.list":
            candidates += parse_one_line(f.read_text(), str(f))
    if not candidates:
        raise SetupError(f"no Debian 'main' source found in {etc}/sources.list(.d): guestpm takes "
                         "its mirror from the system's apt configuration; add one")
    return candidates[0]


def parse_control(text: str) -> list[dict[str, str]]:
    """apt-cache show / Packages stanzas."""
    stanzas = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        key = None
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def hard_depends(depends: str) -> list[str]:
    """Package names of a Depends field, skipping alternatives ('a | b')."""
    names = []
    for group in depends.split(","):
        group = group.strip()
        if not group or "|" in group:
            continue
        names.append(re.split(r"[\s(:]", group, maxsplit=1)[0])
    return names


class AptRepo:
    """One suite, both architectures, its own state under `root`."""

    def __init__(self, root: Path, suite: str, mirror: Mirror,
                 architectures: tuple[str, ...] = ("amd64", "arm64")):
        self.root, self.suite, self.mirror = Path(root), suite, mirror
        self.architectures = architectures
        self.conf = self.root / "apt.conf"

    def _write_config(self) -> None:
        for d in ("lists/partial", "archives/partial", "etc/preferences.d",
                  "etc/apt.conf.d", "etc/trusted.gpg.d"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        (self.root / "etc/sources.list").write_text(
            f"deb [signed-by={self.mirror.keyring}] {self.mirror.uri} {self.suite} main\n")
        archs = " ".join(f'"{a}";' for a in self.architectures)
        r = self.root
        self.conf.write_text(f"""\
Dir::Etc "{r}/etc/";
Dir::Etc::sourcelist "{r}/etc/sources.list";
Dir::Etc::sourceparts "{r}/etc/sources.list.d";
Dir::Etc::preferencesparts "{r}/etc/preferences.d";
Dir::Etc::trustedparts "{r}/etc/trusted.gpg.d";
Dir::Etc::main "/dev/null";
Dir::Etc::parts "{r}/etc/apt.conf.d";
Dir::State "{r}/";
Dir::State::lists "{r}/lists/";
Dir::State::status "{r}/status";
Dir::Cache "{r}/";
Dir::Cache::archives "{r}/archives/";
APT::Architecture "{self.architectures[0]}";
APT::Architectures {{ {archs} }};
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::http::Timeout "20";
Acquire::Retries "1";
// Signatures are checked; only Valid-Until is not: mirrors frozen at a snapshot
// (as on CI machines) serve Release files that are past it for sid.
Acquire::Check-Valid-Until "false";
""")

    def _fail(self, what: str, output: str) -> SetupError:
        lines = [ln for ln in output.splitlines() if ln.startswith(("E:", "W:", "Err"))] \
            or output.strip().splitlines()[-3:]
        return SetupError(f"{what} for Debian {self.suite} from {self.mirror.uri} (mirror taken "
                          f"from {self.mirror.origin}) failed: " + " | ".join(lines[-3:]))

    def _apt(self, *args: str, cwd: Path | None = None) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.conf), LC_ALL="C")
        proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise self._fail(" ".join(args[:2]), proc.stderr + proc.stdout)
        return proc.stdout + proc.stderr

    def _has_lists(self) -> bool:
        return any((self.root / "lists").glob("*Packages*"))

    def update(self, force: bool = False) -> None:
        if not shutil.which("apt-get"):
            raise SetupError("apt-get not found: guestpm fetches Debian kernels with apt")
        self._write_config()
        if force or not self._has_lists():
            out = self._apt("apt-get", "update", "-q")
            if not self._has_lists():      # apt-get update exits 0 when it "ignored" a mirror
                raise self._fail("apt-get update", out)

    def show(self, package: str, arch: str) -> dict[str, str]:
        out = self._apt("apt-cache", "show", "--no-all-versions", f"{package}:{arch}")
        stanzas = parse_control(out)
        if not stanzas:
            raise SetupError(f"Debian {self.suite} has no package {package} for {arch}")
        return stanzas[0]

    def download(self, packages: list[str], arch: str, dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.glob("*.deb"))
        self._apt("apt-get", "download", "-q", *[f"{p}:{arch}" for p in packages], cwd=dest)
        return sorted(set(dest.glob("*.deb")) - before) or sorted(dest.glob("*.deb"))
