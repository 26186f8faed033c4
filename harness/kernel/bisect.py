"""guestpm bisect: `git bisect run` where each step builds, boots and runs tests.

  guestpm bisect --tree ~/linux --arch arm64 --good v7.1 --bad HEAD -- \\
      tests/e2e/test_psci.py -k system_suspend_features

Each step (this module run as `python -m harness.kernel.bisect STATE`) builds the checked-out
commit incrementally in one O= directory, runs the selected tests against it with
`--kernel build:DIR` and exits with git bisect's convention:

  0    good  the selected tests PASS (or XFAIL: their known defect is still there)
  1    bad   one of them FAILs or ERRORs (a guest panic during a test is an error)
  125  skip  the build fails, or every selected test SKIPs (the feature is absent)
  128  abort the harness cannot judge (host set-up error, no test selected, usage)

With `--change TEST BASE PATCHED` (a row of `guestpm compare`: the test's id without
its target and its two outcomes) the test is that one verdict instead: good where TEST
is BASE, bad where it is PATCHED, skip where it is neither or was not judged; the
selector defaults to TEST's function.

Each step reads the run's verdict record (harness.results.verdicts).  Per-step logs go
to LOGS/NN-<sha>/ (build.log link, pytest.log, the run's results directory, whose
`latest` holds verdicts.jsonl and junit.xml); LOGS/steps.jsonl has one record per step.
The tree is left as it was found: `git bisect reset` runs on every exit path, Ctrl-C
included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import profiles
from harness.children import run_logged, stop
from harness.errors import GuestpmError, SetupError
from harness.kernel import build, kconfig
from harness.results import runs, verdicts

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
TEST_TIMEOUT = 3600          # one step's tests; every wait inside them is bounded already
WORDS = {GOOD: "good", BAD: "bad", SKIP: "skip", ABORT: "abort"}


class BisectError(GuestpmError):
    pass


# ---------------------------------------------------------------- verdict mapping

@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)      # failures and errors
    skipped: list[str] = field(default_factory=list)     # "test: reason"
    xfailed: list[str] = field(default_factory=list)
    setup_errors: list[str] = field(default_factory=list)   # the harness, not the kernel


def outcome_of(record: verdicts.Record) -> Outcome:
    """Per-test outcomes from a run's verdict record."""
    out = Outcome()
    for v in record.verdicts:
        first = (v.reason or "").strip().splitlines()[:1]
        if v.outcome in ("PASS", "XPASS"):
            out.passed.append(v.test)
        elif v.outcome == "XFAIL":
            out.xfailed.append(v.test)
        elif v.outcome == "SKIP":
            out.skipped.append(f"{v.test}: {v.reason}")
        elif "SetupError:" in v.reason:      # the host, not the kernel
            out.setup_errors.append(f"{v.test}: {first[0] if first else ''}")
        else:
            out.failed.append(f"{v.test}: {first[0] if first else ''}")
    return out


def change_verdict(record: verdicts.Record | None, pytest_rc: int, test: str, base: str,
                   patched: str) -> tuple[int, str, str]:
    """`--change`: good where `test` is `base`, bad where it is `patched`."""
    if pytest_rc == 5:
        return ABORT, "ABORT", "the selector matched no test"
    if record is None or pytest_rc in (2, 3, 4):
        return ABORT, "ABORT", f"pytest exited {pytest_rc} (interrupted, internal or usage error)"
    mine = [v for v in record.verdicts if v.test == test]
    if not mine:
        return SKIP, "SKIP", f"{test} was not judged here (not collected at this commit)"
    got = sorted({v.outcome for v in mine})
    why = verdicts.headline(mine[0])
    detail = f"{test}: {'/'.join(got)}" + (f" ({why})" if why else "")
    if got == [patched]:
        return BAD, patched, detail
    if got == [base]:
        return GOOD, base, detail
    if any("SetupError:" in v.reason for v in mine):
        return ABORT, "ABORT", f"host set-up error: {detail}"
    return SKIP, "/".join(got), detail + f": neither {base} nor {patched}"


def selector_of(test: str) -> list[str]:
    """The pytest selection that judges `test` (test_psci::test_psci[vhe-x]): its function."""
    module, _, func = test.partition("::")
    return [f"tests/e2e/{module}.py::{func.split('[')[0]}"] if func else [test]


def verdict(outcome: Outcome | None, pytest_rc: int) -> tuple[int, str, str]:
    """(exit code for git bisect, PASS/FAIL/SKIP/ABORT, one-line detail)."""
    if pytest_rc == 5:
        return ABORT, "ABORT", "the selector matched no test"
    if outcome is None or pytest_rc in (2, 3, 4):
        return ABORT, "ABORT", f"pytest exited {pytest_rc} (interrupted, internal or usage error)"
    if outcome.setup_errors:
        return ABORT, "ABORT", f"host set-up error: {outcome.setup_errors[0]}"
    if outcome.failed:
        return BAD, "FAIL", "; ".join(outcome.failed[:3]) + \
            (f" (+{len(outcome.failed) - 3} more)" if len(outcome.failed) > 3 else "")
    if not outcome.passed and not outcome.xfailed:
        return SKIP, "SKIP", outcome.skipped[0] if outcome.skipped else "no test ran"
    n = len(outcome.passed)
    extra = f", {len(outcome.xfailed)} xfailed" if outcome.xfailed else ""
    extra += f", {len(outcome.skipped)} skipped" if outcome.skipped else ""
    return GOOD, "PASS", f"{n} passed{extra}"


def first_bad(git_output: str) -> str | None:
    """The sha git bisect names as the first bad commit, if it named one."""
    for line in git_output.splitlines():
        if line.endswith(" is the first bad commit"):
            return line.split()[0]
    return None


# ---------------------------------------------------------------- git

def git(tree: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise BisectError(f"`git {' '.join(args)}` failed in {tree}: "
                          + (p.stderr.strip().splitlines() or ["?"])[-1])
    return p.stdout.strip()


def bisecting(tree: Path) -> bool:
    return Path(tree, git(tree, "rev-parse", "--git-path", "BISECT_START")).exists()


def check_tree(tree: Path) -> None:
    """A kernel tree with git history, not dirty, not mid-bisect: else BisectError."""
    build.tree_version(tree)
    if not shutil.which("git"):
        raise SetupError("git is not installed: `apt-get install git`")
    if subprocess.run(["git", "-C", str(tree), "rev-parse", "--git-dir"],
                      capture_output=True).returncode != 0:
        raise BisectError(f"{tree} is not a git repository: bisect needs the tree's history")
    if git(tree, "rev-parse", "--show-toplevel") != str(tree.resolve()):
        raise BisectError(f"{tree} is inside another repository: pass its top level "
                          f"({git(tree, 'rev-parse', '--show-toplevel')})")
    if bisecting(tree):
        raise BisectError(f"a bisect is already in progress in {tree}: finish it or run "
                          "`git bisect reset` there first")
    dirty = git(tree, "status", "--porcelain", "--untracked-files=no").splitlines()
    if dirty:
        raise BisectError(f"{tree} has uncommitted changes to tracked files "
                          f"({', '.join(d.split(maxsplit=1)[-1] for d in dirty[:4])}"
                          f"{', ...' if len(dirty) > 4 else ''}): bisecting checks out other "
                          "revisions and would carry or lose them; commit or stash them first")


def rev(tree: Path, name: str) -> str:
    sha = git(tree, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
    if not sha:
        raise BisectError(f"{name!r} is not a commit in {tree}")
    return sha


# ---------------------------------------------------------------- one step

def step(state_path: Path, label: str | None = None) -> int:
    """Build HEAD, run the selected tests on it, record and return the bisect code."""
    st = json.loads(state_path.read_text())
    tree, logs = Path(st["tree"]), Path(st["logs"])
    head = git(tree, "rev-parse", "HEAD")
    subject = git(tree, "log", "-1", "--format=%s")
    steps = logs / "steps.jsonl"
    n = len(steps.read_text().splitlines()) + 1 if steps.exists() else 1
    d = logs / f"{n:02d}-{label or 'step'}-{head[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rec = {"n": n, "label": label or "step", "commit": head, "subject": subject, "dir": str(d)}

    def out(msg: str) -> None:
        print(f"guestpm bisect: {msg}", flush=True)

    out(f"[{n}] {head[:12]} {subject[:60]}: building")
    try:
        b = build.build(tree, st["arch"], st["roles"], base=st["base"], jobs=st["jobs"],
                        cross_compile=st["cross_compile"], use_ccache=st["ccache"],
                        nice=st["nice"], say=lambda s: out(f"[{n}]   {s}"),
                        progress_every=30.0)
    except (build.BuildError, kconfig.FragmentError) as e:
        (d / "build-error.txt").write_text(str(e) + "\n")
        code, word, detail = SKIP, "BUILD FAILED", str(e).splitlines()[0]
        rec.update(build_s=round(time.monotonic() - t0, 1))
    except SetupError as e:
        code, word, detail = ABORT, "ABORT", str(e)
    else:
        rec["build_s"] = round(time.monotonic() - t0, 1)
        rec["build"] = str(b.dir)
        for name in ("build.log", "config.log"):
            try:
                os.symlink(b.dir / name, d / name)
            except OSError:
                pass
        out(f"[{n}]   built {b.meta['release']} in {rec['build_s']:.0f}s; running the tests")
        code, word, detail = _run_tests(st, b, d)
    rec.update(exit=code, verdict=word, detail=detail, seconds=round(time.monotonic() - t0, 1))
    with open(steps, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    out(f"[{n}] {head[:12]} {word}: {detail} -> {WORDS[code]} ({code}); logs {d}")
    return code


def _run_tests(st: dict, b: build.Build, d: Path) -> tuple[int, str, str]:
    cmd = [sys.executable, "-m", "pytest", *st["selector"], f"--kernel=build:{b.dir}",
           f"--arch={st['profile']}", f"--results={d / 'results'}",
           "-p", "no:cacheprovider", "-q", "-rfEs"]
    with open(d / "pytest.log", "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=st["cwd"], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=TEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            return ABORT, "ABORT", (f"the selected tests ran over {TEST_TIMEOUT}s (the harness's "
                                    f"own waits are bounded: see {d / 'pytest.log'})")
        finally:
            stop(proc, 20)
    try:
        record = verdicts.read(runs.resolve(d / "results")) if rc not in (2, 3, 4) else None
    except verdicts.RecordError:
        record = None
    if st.get("change"):
        return change_verdict(record, rc, *st["change"])
    outcome = outcome_of(record) if record is not None else None
    if outcome:
        (d / "outcome.json").write_text(json.dumps(asdict(outcome), indent=1))
    return verdict(outcome, rc)


# ---------------------------------------------------------------- the driver

def _steps(logs: Path) -> list[dict]:
    p = logs / "steps.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@dataclass(frozen=True)
class Request:
    """What `guestpm bisect` is asked: the tree and its two ends, the tests that judge a
    commit (pytest arguments; or one row of `guestpm compare`: TEST BASE PATCHED), and
    how each step builds (as `guestpm build`)."""
    tree: Path
    arch: str
    good: str
    bad: str
    selector: list[str] = field(default_factory=list)
    change: tuple[str, str, str] | None = None
    fragments: list[str] = field(default_factory=list)
    default_fragments: bool = True
    base: str = "allnoconfig"
    jobs: int = 0                          # make -j (0: the cores)
    cross_compile: str | None = None
    ccache: bool = True
    nice: int = 0
    logs: Path | None = None               # None: results/bisect-<time>
    trust_ends: bool = False               # do not check that good is good and bad bad


@dataclass(frozen=True)
class _Plan:
    tree: Path
    profile: profiles.Profile
    selector: list[str]
    good: str                              # the ends as commits
    bad: str
    state: Path                            # what each step reads (LOGS/state.json)


def main(req: Request, say: Callable[[str], None]) -> int:
    plan = _prepare(req)
    tree, good, bad, logs, change = plan.tree, plan.good, plan.bad, plan.state.parent, \
        req.change
    orig_ref = git(tree, "symbolic-ref", "-q", "HEAD", check=False)
    orig = git(tree, "rev-parse", "HEAD")
    say(f"bisecting {tree} ({git(tree, 'describe', '--always', orig)}) between good "
        f"{good[:12]} and bad {bad[:12]} for {plan.profile.name}; logs in {logs}")
    say(f"tests: {' '.join(plan.selector)}" + (f"; good: {change[0]} {change[1]}, bad: "
                                            f"{change[2]}" if change else ""))
    result = 1
    try:
        if not req.trust_ends:
            _check_ends(req, plan)
            _restore(tree, orig_ref, orig)
        git(tree, "bisect", "start", bad, good)
        rc = _child(["git", "-C", str(tree), "bisect", "run", sys.executable, "-m",
                     "harness.kernel.bisect", str(plan.state)], logs / "bisect-run.log")
        result = _conclude(tree, logs, rc, say)
    except KeyboardInterrupt:
        say("interrupted: resetting the bisect")
        result = 130
    finally:
        if bisecting(tree):
            git(tree, "bisect", "reset", check=False)
        _restore(tree, orig_ref, orig)
        say(f"tree left at {git(tree, 'describe', '--always', '--all', 'HEAD')} "
            f"({git(tree, 'rev-parse', '--short=12', 'HEAD')}), as found")
    return result


def _prepare(req: Request) -> _Plan:
    """Everything checked that can be before the tree is touched (the change, the
    tests, the tree, its ends, the fragments, the toolchain), and the steps' state file
    written."""
    tree = Path(req.tree).expanduser().resolve()
    profile = profiles.get(req.arch)
    change = req.change
    if change:
        test, base, patched = change
        bad_words = [o for o in (base, patched) if o not in verdicts.OUTCOMES]
        if bad_words or base == patched:
            raise BisectError(f"--change {test} {base} {patched}: two different outcomes of "
                              f"{', '.join(verdicts.OUTCOMES)}")
    selector = list(req.selector) or (selector_of(change[0]) if change else [])
    if not selector:
        raise BisectError("no tests: give pytest arguments after --, or --change TEST BASE "
                          "PATCHED")
    check_tree(tree)
    good, bad = rev(tree, req.good), rev(tree, req.bad)
    if good == bad:
        raise BisectError("--good and --bad are the same commit")
    roles = kconfig.roles(req.fragments, defaults=req.default_fragments)
    kconfig.fragment_paths(profile.arch, roles)                 # bad fragments: now, not per step
    build.toolchain(profile.arch, req.cross_compile, req.ccache)  # missing compiler too
    logs = Path(req.logs or f"results/bisect-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    if (logs / "steps.jsonl").exists():
        raise BisectError(f"{logs} holds another bisect's logs: pass a fresh --logs")
    state = logs / "state.json"
    state.write_text(json.dumps({
        "tree": str(tree), "arch": profile.arch, "profile": profile.name, "roles": roles,
        "base": req.base, "jobs": req.jobs or None, "cross_compile": req.cross_compile,
        "ccache": req.ccache, "nice": req.nice, "selector": selector,
        "change": list(change) if change else None,
        "cwd": os.getcwd(), "logs": str(logs)}, indent=1))
    return _Plan(tree, profile, selector, good, bad, state)


def _check_ends(req: Request, plan: _Plan) -> None:
    """BisectError unless the step says bad at --bad and good at --good."""
    logs = plan.state.parent
    for name, sha, want in (("bad", plan.bad, BAD), ("good", plan.good, GOOD)):
        git(plan.tree, "checkout", "-q", "--detach", sha)
        got = _child([sys.executable, "-m", "harness.kernel.bisect", str(plan.state), name],
                     logs / "ends.log")
        if got != want:
            s = _steps(logs)[-1] if _steps(logs) else {}
            raise BisectError(
                f"--{name} {getattr(req, name)} is not {name}: the step there said "
                f"{s.get('verdict', '?')} ({s.get('detail', '')}); see {s.get('dir', logs)}")


def _conclude(tree: Path, logs: Path, rc: int, say: Callable[[str], None]) -> int:
    """What `git bisect run` found, said and kept (LOGS/first-bad): 0 with a first bad
    commit, 1 when only skipped commits are left, 2 when it ended without one."""
    (logs / "bisect.log").write_text(git(tree, "bisect", "log", check=False) + "\n")
    text = (logs / "bisect-run.log").read_text()
    sha = first_bad(text)
    _summary(logs, say)
    if sha:
        rec = next((s for s in reversed(_steps(logs)) if s["commit"].startswith(sha)), None)
        say(f"first bad commit: {sha} {git(tree, 'log', '-1', '--format=%s', sha)}")
        if rec:
            say(f"  verdict there: {rec['verdict']}: {rec['detail']} (logs {rec['dir']})")
        (logs / "first-bad").write_text(sha + "\n")
        return 0
    if "only 'skip'ped commits left" in text:
        say("no single first bad commit: the candidates could not be built or tested "
            "(skipped); they are listed in " + str(logs / "bisect-run.log"))
        return 1
    say(f"git bisect run ended without a first bad commit (exit {rc}); see "
        f"{logs / 'bisect-run.log'}")
    return 2


def _restore(tree: Path, orig_ref: str, orig: str) -> None:
    target = orig_ref.removeprefix("refs/heads/") if orig_ref else orig
    if git(tree, "rev-parse", "HEAD") != orig or \
            git(tree, "symbolic-ref", "-q", "HEAD", check=False) != orig_ref:
        git(tree, "checkout", "-q", *([] if orig_ref else ["--detach"]), target)


def _child(cmd: list[str], log: Path) -> int:
    """Run CMD, its output both shown and appended to LOG; on Ctrl-C (or any exception)
    its whole process group is terminated (SIGTERM, 30 s to clean up) before we go on."""
    def show(line: str) -> None:
        sys.stderr.write(line)
        sys.stderr.flush()
    return run_logged(cmd, log, on_line=show, grace=30)


def _summary(logs: Path, say: Callable[[str], None]) -> None:
    say("steps:")
    for s in _steps(logs):
        say(f"  {s['n']:>2} {s['label']:<5} {s['commit'][:12]} {WORDS[s['exit']]:<5} "
            f"{s['verdict']:<12} {s.get('build_s', 0):>5.0f}s build  {s['subject'][:50]}")


if __name__ == "__main__":
    from harness.signals import install_signal_handlers
    install_signal_handlers()
    try:
        sys.exit(step(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
    except KeyboardInterrupt:
        sys.exit(ABORT + 2)
    except GuestpmError as e:
        print(f"guestpm bisect: error: {e}", file=sys.stderr)
        sys.exit(ABORT)
