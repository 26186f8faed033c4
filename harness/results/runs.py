"""Run directories: every run writes into a directory of its own under the results
directory (`--results`, default ./results), and `latest` points at the newest, so that
no run deletes or mixes with another's artifacts.

  results/20261203-121500/   verdicts.jsonl, junit.xml, guestpm.ktap, summary.md,
                             splats.jsonl, boots.jsonl, tests/, machines/
  results/latest -> 20261203-121500
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from harness.results import verdicts

LATEST = "latest"
ROOT = Path(__file__).resolve().parents[2]


def new_run(parent: Path, now: datetime.datetime | None = None) -> Path:
    """Make a fresh run directory under `parent` (never an existing one) and point
    `latest` at it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        run = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise verdicts.RecordError(f"{parent}: no free run directory name for {stamp}")
    set_latest(parent, run)
    return run


def set_latest(parent: Path, run: Path) -> None:
    """Atomically: a relative link, so that a results directory can be moved or uploaded."""
    tmp = parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.name)
    os.replace(tmp, parent / LATEST)


def resolve(path: Path) -> Path:
    """A run directory, or a results directory whose `latest` is used."""
    path = Path(path)
    if (path / verdicts.FILE).is_file():
        return path
    latest = path / LATEST
    if latest.is_symlink() or latest.is_dir():
        if (latest / verdicts.FILE).is_file():
            return latest.resolve()
        to = os.readlink(latest) if latest.is_symlink() else "?"
        raise verdicts.RecordError(f"{latest} -> {to} has no {verdicts.FILE} (a run still "
                                   "going, or stopped before it judged anything)")
    if not path.is_dir():
        raise verdicts.RecordError(f"{path}: no such results directory")
    raise verdicts.RecordError(f"{path} is neither a run directory (no {verdicts.FILE}) nor a "
                               f"results directory (no {LATEST})")


def latest(parent: Path) -> Path | None:
    p = Path(parent) / LATEST
    return p.resolve() if p.exists() else None


# ------------------------------------------------------------------ the header

def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header(qemus: dict[str, str], accels: list[str],
           started: datetime.datetime | None = None) -> verdicts.Header:
    """`qemus`: each QEMU binary the run used -> its version; `accels`: the profiles'
    -accel values (tcg,thread=multi -> tcg); `started`: when the run began (default: now)."""
    return verdicts.Header(
        guestpm=_git_commit(), qemu=dict(sorted(qemus.items())),
        accel=",".join(sorted({a.split(",")[0] for a in accels})) or "tcg",
        host=f"{platform.node()} ({platform.system()} {platform.release()} "
             f"{platform.machine()}, {os.cpu_count()} cpus)",
        started=(started or datetime.datetime.now(datetime.UTC))
        .isoformat(timespec="seconds"))
