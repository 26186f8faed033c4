"""The run's report, in the controlling process only: the verdict record
(results/RUN/verdicts.jsonl), and from it the KTAP file, the verdict matrix
(results/RUN/summary.md and the terminal), each verdict with its reason and artifacts."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

from harness import profiles
from harness.plan.targets import Target
from harness.plugin import ktap, summary
from harness.plugin.pool import read_splats
from harness.plugin.targets import NOTES, artifacts_dir_of
from harness.results import runs, verdicts
from harness.results.verdicts import Header, Verdict
from harness.vm.cmdline import describe_qemus, qemu_binary, qemu_version


def reason_of(report: pytest.TestReport) -> str:
    splat = getattr(report, "guestpm_reason", None)
    if splat and report.failed and isinstance(report.longrepr, str):
        return splat
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    if hasattr(report, "wasxfail"):
        return report.wasxfail
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr or "").strip().splitlines()[-1:][0] if report.longrepr else ""


def test_name(nodeid: str, target: str) -> str:
    """The test's name without its target (the KTAP subtest): other parameters stay."""
    path, _, func = nodeid.partition("::")
    func, _, params = func.partition("[")
    params = params.rstrip("]")
    if target:
        params = params.replace(f"-{target}-", "-").replace(target, "").strip("-")
    return f"{Path(path).stem}::{func}" + (f"[{params}]" if params else "")


def unowned_splats(records: list[dict]) -> list[dict]:
    """The splats no test answers for: printed between tests (after a test's verdict,
    or while a machine shut down) and not allowed.  They make the run's exit status
    non-zero (pure)."""
    return [r for r in records if r.get("when") == "between" and not r.get("allowed")]


class Reporter:
    """Runs in the controlling process only: the record, the KTAP file and the matrix."""

    def __init__(self, config: pytest.Config, res: Path | None):
        """`res`: the run directory; None: a run that keeps no results (notes only)."""
        self.config, self.res = config, res
        self.outcomes: dict[str, tuple[str, str]] = {}      # nodeid -> (outcome, reason)
        self.durations: dict[str, float] = {}
        self.props: dict[str, list[tuple]] = {}             # nodeid -> user_properties
        self.worker_notes: list[str] = []
        self.record: list[Verdict] = []
        self.started = datetime.datetime.now(datetime.UTC)

    def pytest_testnodedown(self, node, error) -> None:
        """xdist: what a worker did not collect (every worker collects the same)."""
        notes = getattr(node, "workeroutput", {}).get("guestpm_notes", [])
        if notes and not self.worker_notes:
            self.worker_notes = list(notes)

    def notes(self) -> list[str]:
        return self.worker_notes or self.config.stash.get(NOTES, [])

    def qemu_line(self) -> str:
        """Which QEMU judged the run's targets (the system's, or --qemu's) and its version."""
        arches = self.config.getoption("arch") or profiles.DEFAULT_ARCHES
        return describe_qemus([profiles.PROFILES[a] for a in sorted(set(arches))
                               if a in profiles.PROFILES])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.res is None:
            return
        nodeid = report.nodeid
        self.props[nodeid] = list(report.user_properties)
        self.durations[nodeid] = self.durations.get(nodeid, 0.0) + (report.duration or 0.0)
        prev = self.outcomes.get(nodeid)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            elif report.when == "setup" and report.failed:
                outcome = "error"
            else:
                outcome = report.outcome
            self.outcomes[nodeid] = (verdicts.label(outcome), reason_of(report))
        elif report.when == "teardown" and report.failed and prev is not None:
            self.outcomes[nodeid] = ("ERROR", "teardown: " + reason_of(report))

    @property
    def run_dir(self) -> Path:
        """`res` where a run keeps results (a record exists only then)."""
        assert self.res is not None, "a run that keeps no results has no record"
        return self.res

    def verdicts(self) -> list[Verdict]:
        splats: dict[str, list[dict]] = {}
        for s in read_splats(self.run_dir):
            if s.get("test"):
                splats.setdefault(s["test"], []).append(
                    {k: s.get(k) for k in ("kind", "title", "when", "allowed")})
        out = []
        for nodeid, (outcome, reason) in self.outcomes.items():
            props = dict(self.props.get(nodeid, []))
            target = props.get("target", "")
            kernel, _, profile = target.rpartition("/") if "/" in target else ("", "", "")
            art = artifacts_dir_of(self.config, nodeid, Target(kernel, profile) if kernel
                                   else None)
            kind = props.get("kind") or "kernel"
            out.append(verdicts.Verdict(
                test=test_name(nodeid, target), outcome=outcome, nodeid=nodeid,
                file=nodeid.split("::")[0], kernel=kernel, release=props.get("release", ""),
                arch=profiles.get(profile).arch if profile in profiles.PROFILES else profile,
                profile=profile, guest=props.get("guest"), accel=props.get("accel", ""),
                family=props.get("family") or "unit",
                kind=kind, reason=reason, splats=tuple(splats.get(nodeid, ())),
                artifacts=str(art.relative_to(self.run_dir)) if art.exists() else None,
                # microseconds: a test that took under half a millisecond is still a
                # measured duration (> 0) for the scheduler, not an unmeasured one
                duration=round(self.durations.get(nodeid, 0.0), 6),
                info=tuple(v for k, v in self.props.get(nodeid, []) if k == "info")))
        return out

    def _header(self, record: list[Verdict]) -> Header:
        used = [profiles.get(p) for p in dict.fromkeys(v.profile for v in record)
                if p in profiles.PROFILES]
        return runs.header({qemu_binary(p): qemu_version(p) for p in used},
                           [p.accel for p in used], self.started)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.res is None:
            return
        mine = self.verdicts()
        (self.res / verdicts.FILE).write_text(verdicts.dumps(self._header(mine), mine))
        # everything below reads the record back, as any later command does
        self.record = verdicts.read(self.res).verdicts
        (self.res / "guestpm.ktap").write_text(ktap.render(verdicts.by_row(self.record)))
        if self.record:
            (self.res / "summary.md").write_text(self.matrix().markdown().replace(
                "\n", f"\n\n{self.qemu_line()}\n", 1))
        self.unowned = unowned_splats(read_splats(self.res)) \
            if self.config.getoption("splats", "fail") == "fail" else []
        if self.unowned and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def matrix(self) -> summary.Matrix:
        m = summary.Matrix.of(self.record)
        m.splats = read_splats(self.run_dir)
        return m

    def pytest_terminal_summary(self, terminalreporter) -> None:
        groups = verdicts.by_row(self.record)
        tr = terminalreporter
        if not groups:
            for note in self.notes():
                tr.write_line(note)
            return
        tr.section("guestpm verdicts (kernel x arch x test)")
        width = min(max(len(r.test) for rs in groups.values() for r in rs), 72)
        cols = shutil.get_terminal_size((160, 20)).columns
        for target, rs in groups.items():
            kernel, _, arch = target.rpartition("/") if "/" in target else (target, "", "-")
            for r in rs:
                line = f"{kernel:<12} {arch:<10} {r.test:<{width}}  {r.outcome:<5}"
                if r.outcome != "PASS" and r.reason:   # only the reason is cut to fit
                    line += "  " + r.reason.splitlines()[0][:max(cols - len(line) - 2, 60)]
                tr.write_line(line.rstrip())
        tr.section("guestpm summary (kernel x arch x family)")
        tr.write_line(self.qemu_line())
        tr.write_line(self.matrix().text())
        for note in self.notes():
            tr.write_line(note)
        for r in getattr(self, "unowned", []):
            tr.write_line(f"exit status 1: a kernel splat no test claimed, in {r.get('target')} "
                          f"after {r.get('test') or 'boot'}: ({r.get('kind')}) {r.get('title')} "
                          f"[{r.get('log')}:{r.get('line')}]")
        res = self.run_dir
        tr.write_line(f"verdicts: {res / verdicts.FILE}   KTAP: {res / 'guestpm.ktap'}"
                      f"   JUnit: {getattr(self.config.option, 'xmlpath', None)}   "
                      f"summary: {res / 'summary.md'}   artifacts: {res}")
