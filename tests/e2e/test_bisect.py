"""`guestpm build` and `guestpm bisect` on a real tree with a real regression.

The history is made here, on Debian's linux-source-7.2 (fetched once):

  base        linux-source-7.2 as Debian ships it                       PASS
  doc         a documentation line                                      PASS
  regression  PSCI_FEATURES stops advertising the SMC32 SYSTEM_SUSPEND   FAIL
  comment     a comment in arch/arm64/kvm/psci.c (rebuilds psci.o)      FAIL

and bisected with the PSCI test that sees it.  The builds (arm64, allnoconfig + the
default fragments) and boots are real; the first one is cold (several minutes on two
cores, niced so that the rest of the suite keeps its pace), each later step rebuilds
psci.o and relinks.  The commits have fixed dates, so their ids are the same on every
machine and a re-run builds incrementally.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cache
from harness.kernel import debian_sources
from harness.progress import progress

pytestmark = [pytest.mark.e2e, pytest.mark.harness_selftest,
              pytest.mark.needs_build_tools("arm64"), pytest.mark.xdist_group("kernel-build"),
              pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
SELECTOR = ["tests/e2e/test_psci.py", "-k", "system_suspend_features_with_the_cap and not nvhe"]
PSCI_C = "arch/arm64/kvm/psci.c"
FEATURES_OK = """\t\tcase PSCI_1_0_FN_SYSTEM_SUSPEND:
\t\tcase PSCI_1_0_FN64_SYSTEM_SUSPEND:
\t\t\tif (test_bit(KVM_ARCH_FLAG_SYSTEM_SUSPEND_ENABLED, &kvm->arch.flags))
\t\t\t\tval = 0;
\t\t\tbreak;
"""
FEATURES_BROKEN = """\t\tcase PSCI_1_0_FN64_SYSTEM_SUSPEND:
\t\t\tif (test_bit(KVM_ARCH_FLAG_SYSTEM_SUSPEND_ENABLED, &kvm->arch.flags))
\t\t\t\tval = 0;
\t\t\tbreak;
"""


@dataclass
class History:
    tree: Path
    shas: dict[str, str]


def git(tree: Path, *args: str, date: str | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="guestpm", GIT_AUTHOR_EMAIL="guestpm@localhost",
               GIT_COMMITTER_NAME="guestpm", GIT_COMMITTER_EMAIL="guestpm@localhost")
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer contains the expected code: update this test"
    tmp = path.with_suffix(".guestpm-tmp")
    tmp.write_text(text.replace(old, new, 1))
    os.replace(tmp, path)


def make_history(src: Path, tree: Path) -> dict[str, str]:
    if not (tree / ".git").is_dir():
        progress(f"bisect history: copying {src} and committing it (about a minute)")
        with cache.staging_dir(tree) as tmp:
            subprocess.run(["cp", "-a", f"{src}/.", str(tmp)], check=True)
            gi = tmp / ".gitignore"       # Debian's own stanza ignores the whole tree
            text = gi.read_text()
            if "# Debian packaging" in text:
                gi.write_text(text[:text.index("#\n# Debian packaging")])
            git(tmp, "init", "-q", "-b", "main")
            git(tmp, "config", "gc.auto", "0")      # no background repack of 600 MB
            git(tmp, "add", "-A")
            git(tmp, "commit", "-q", "-m", f"{src.name} as Debian ships it",
                date="2026-01-01T00:00:00Z")
            git(tmp, "tag", "guestpm-base")
    if (tree / ".git/BISECT_START").exists():
        git(tree, "bisect", "reset")
    git(tree, "checkout", "-q", "-f", "main")
    git(tree, "reset", "-q", "--hard", "guestpm-base")
    shas = {"base": git(tree, "rev-parse", "HEAD")}
    doc = tree / "Documentation/virt/kvm/arm/hypercalls.rst"
    steps = [
        ("doc", "Documentation: KVM: arm64: a line about PSCI", lambda: _edit(
            doc, "\n", "\n.. guestpm: PSCI SYSTEM_SUSPEND is advertised with the cap.\n")),
        ("regression", "KVM: arm64: advertise only the SMC64 SYSTEM_SUSPEND in PSCI_FEATURES",
         lambda: _edit(tree / PSCI_C, FEATURES_OK, FEATURES_BROKEN)),
        ("comment", "KVM: arm64: psci: a comment", lambda: _edit(
            tree / PSCI_C, "static unsigned long kvm_psci_vcpu_suspend",
            "/* guestpm: a comment-only change */\nstatic unsigned long kvm_psci_vcpu_suspend")),
    ]
    for i, (name, subject, change) in enumerate(steps, 1):
        change()
        git(tree, "commit", "-q", "-a", "-m", subject, date=f"2026-01-0{i + 1}T00:00:00Z")
        shas[name] = git(tree, "rev-parse", "HEAD")
    return shas


@pytest.fixture(scope="module")
def made(request) -> History:
    src = debian_sources.source("7.2", progress)
    tree = cache.cache_dir() / "bisect-tree-7.2"
    with cache.locked(tree):
        return History(tree, make_history(src, tree))


@pytest.fixture
def history(made: History):
    """The tree, held exclusively for one test.  These tests share one tree and must not
    overlap, and pytest-xdist may place them on different workers: with pytest 9.2,
    xdist 3.8's xdist_group sets item._nodeid, which pytest no longer reads, so the
    module's group mark does not keep them together."""
    with cache.locked(made.tree):
        yield made


def guestpm(*args: str, log: Path, timeout: float = 3000,
            on_line=None) -> tuple[int, str]:
    """Run the CLI from the checkout (so test selectors resolve), output to LOG too."""
    cmd = [sys.executable, "-m", "harness.cli", *args]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        out = []
        deadline = time.monotonic() + timeout
        try:
            assert proc.stdout
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                out.append(line)
                if on_line:
                    on_line(proc, line)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"guestpm {args[0]} ran over {timeout}s; log {log}")
            return proc.wait(), "".join(out)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def assert_tree_as_found(h: History) -> None:
    assert git(h.tree, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(h.tree, "rev-parse", "HEAD") == h.shas["comment"]
    assert git(h.tree, "status", "--porcelain", "--untracked-files=no") == ""
    assert not (h.tree / ".git/BISECT_START").exists()


def test_bisect_names_the_commit_that_broke_the_verdict(history, tmp_path):
    logs = tmp_path / "bisect"
    rc, out = guestpm("bisect", "--tree", str(history.tree), "--arch", "arm64",
                      "--good", "guestpm-base", "--bad", "main", "--logs", str(logs),
                      "--nice", "10", "--", *SELECTOR, log=tmp_path / "bisect.out")
    where = f"(output: {tmp_path / 'bisect.out'}, step logs: {logs})"
    assert rc == 0, f"guestpm bisect exited {rc} {where}\n{out[-3000:]}"
    bad = history.shas["regression"]
    assert (logs / "first-bad").read_text().strip() == bad, where
    assert f"first bad commit: {bad} KVM: arm64: advertise only the SMC64" in out, where
    steps = [json.loads(x) for x in (logs / "steps.jsonl").read_text().splitlines()]
    by_commit = {}
    for s in steps:
        by_commit.setdefault(s["commit"], set()).add((s["verdict"], s["exit"]))
        assert (Path(s["dir"]) / "pytest.log").is_file() and (Path(s["dir"]) / "build.log").exists()
    # the ends were checked, and each commit bisect visited has the verdict its code gives
    assert steps[0]["label"] == "bad" and steps[0]["verdict"] == "FAIL", steps[0]
    assert "PSCI_FEATURES(0x8400000e), cap on" in steps[0]["detail"], steps[0]
    assert steps[1]["label"] == "good" and steps[1]["verdict"] == "PASS", steps[1]
    assert by_commit[bad] == {("FAIL", 1)}, steps
    for name in ("base", "doc"):
        assert by_commit.get(history.shas[name], {("PASS", 0)}) == {("PASS", 0)}, steps
    assert "guestpm bisect: [" in out          # per-step lines reach the developer
    assert_tree_as_found(history)


def test_a_build_that_fails_shows_its_errors_and_log(history, tmp_path):
    psci = history.tree / PSCI_C
    _edit(psci, "static unsigned long kvm_psci_vcpu_suspend",
          "static unsigned long kvm_psci_vcpu_suspend_typo(void) { return undeclared_guestpm; }"
          "\nstatic unsigned long kvm_psci_vcpu_suspend")
    try:
        rc, out = guestpm("build", "--tree", str(history.tree), "--arch", "arm64", "--nice", "10",
                          log=tmp_path / "build.out", timeout=1800)
    finally:
        git(history.tree, "checkout", "-q", "--", PSCI_C)
    assert rc == 2, out[-2000:]
    assert "failed (make exit 2)" in out, out[-2000:]
    assert re.search(r"psci.c:\d+:\d+: error: .undeclared_guestpm. undeclared", out), out[-2000:]
    log = out.split("full log: ")[1].split()[0]
    assert Path(log).is_file() and "undeclared_guestpm" in Path(log).read_text()


def test_ctrl_c_mid_bisect_leaves_the_tree_as_found(history, tmp_path):
    sent = []

    def interrupt_once_building(proc, line):
        if not sent and "building" in line and "[1]" in line:
            time.sleep(2)
            proc.send_signal(signal.SIGINT)
            sent.append(time.monotonic())

    rc, out = guestpm("bisect", "--tree", str(history.tree), "--arch", "arm64",
                      "--good", "guestpm-base", "--bad", "main", "--trust-ends",
                      "--logs", str(tmp_path / "logs"), "--", *SELECTOR,
                      log=tmp_path / "bisect.out", on_line=interrupt_once_building, timeout=600)
    assert sent, f"the bisect never reached its first build:\n{out[-2000:]}"
    assert rc == 130, f"exit {rc} after Ctrl-C:\n{out[-2000:]}"
    assert time.monotonic() - sent[0] < 90, "Ctrl-C took more than 90 s to take effect"
    assert "tree left at" in out
    assert_tree_as_found(history)
    # any make of any build of this tree (the cache may hold several of its builds)
    left = _processes_with(f"O={cache.cache_dir() / 'builds'}/bisect-tree-7.2-arm64-")
    assert not left, f"make still running after Ctrl-C: pids {left}"


def _processes_with(text: str) -> list[int]:
    """The pids whose command line contains `text`, from /proc (pgrep is procps, which a
    minimal Debian does not have)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:                 # gone meanwhile
                continue
            if text in cmd:
                pids.append(int(d.name))
    return pids


def test_bisect_refuses_a_dirty_tree(history, tmp_path):
    psci = history.tree / PSCI_C
    before = psci.read_text()
    _edit(psci, "static unsigned long kvm_psci_vcpu_suspend",
          "/* uncommitted */\nstatic unsigned long kvm_psci_vcpu_suspend")
    try:
        rc, out = guestpm("bisect", "--tree", str(history.tree), "--arch", "arm64",
                          "--good", "guestpm-base", "--bad", "main", "--logs",
                          str(tmp_path / "logs"), "--", *SELECTOR, log=tmp_path / "out",
                          timeout=60)
        assert rc == 2 and "uncommitted changes to tracked files (arch/arm64/kvm/psci.c)" in out
        assert "/* uncommitted */" in psci.read_text()      # left alone
    finally:
        git(history.tree, "checkout", "-q", "--", PSCI_C)
    assert psci.read_text() == before
    assert_tree_as_found(history)
