"""Firmware tables the harness adds to guests: ASL from guest-rootfs/acpi/ compiled to AML.

iasl (Debian's acpica-tools) compiles each source once per source text and iasl binary;
the AML is cached by that digest."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import cache
from harness.errors import SetupError

ASL_DIR = Path(__file__).resolve().parents[2] / "guest-rootfs" / "acpi"


class AslError(SetupError):
    """iasl rejected an ASL source; the message carries iasl's own error lines."""


def iasl() -> str:
    path = shutil.which("iasl")
    if not path:
        raise SetupError("iasl not found: apt-get install acpica-tools (or run `guestpm setup`), "
                         "needed to compile the guest's ACPI tables from guest-rootfs/acpi/")
    return path


def compile_asl(source: Path) -> Path:
    """The AML for `source`, compiled once per source text and iasl binary."""
    compiler = iasl()
    text = source.read_bytes()
    key = cache.digest(text, Path(compiler).read_bytes())[:16]
    aml = cache.cache_dir() / "acpi" / f"{source.stem}-{key}.aml"
    if aml.exists():
        return aml
    with tempfile.TemporaryDirectory(prefix="guestpm-iasl-") as tmp:
        src = Path(tmp) / source.name
        src.write_bytes(text)
        proc = subprocess.run([compiler, "-p", str(Path(tmp) / source.stem), "-vi", str(src)],
                              capture_output=True, text=True, cwd=tmp)
        out = Path(tmp) / f"{source.stem}.aml"
        if proc.returncode != 0 or not out.exists():
            raise AslError(f"iasl could not compile {source}:\n"
                           + asl_errors(proc.stdout + proc.stderr).replace(str(src), str(source)))
        cache.write_atomic(aml, out.read_bytes())
    return aml


def asl_errors(output: str) -> str:
    """iasl's diagnostics without its banner: the lines a developer needs."""
    keep = [ln for ln in output.splitlines()
            if ln.strip() and not re.match(r"\s*(Intel ACPI Component|ASL\+ Optimizing|"
                                            r"Copyright|Compiler aborting|ASL Input:|"
                                            r"AML Output:|Compilation complete)", ln)]
    return "\n".join(keep) or output.strip() or "(iasl printed nothing)"
