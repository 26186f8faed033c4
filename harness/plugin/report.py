"""The run's report, in the controlling process only: the KTAP file, the verdict matrix
(results/summary.md and the terminal), each verdict with its reason and artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.plugin import ktap, summary
from harness.plugin.pool import read_splats
from harness.plugin.targets import NOTES, Target, artifacts_dir_of


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


class Reporter:
    """Runs in the controlling process only: KTAP file and the verdict matrix."""

    def __init__(self, config: pytest.Config, res: Path):
        self.config, self.res = config, res
        self.results: dict[str, ktap.Result] = {}
        self.target_of: dict[str, str] = {}
        self.props: dict[str, dict] = {}
        self.worker_notes: list[str] = []

    def pytest_testnodedown(self, node, error) -> None:
        """xdist: what a worker did not collect (every worker collects the same)."""
        notes = getattr(node, "workeroutput", {}).get("guestpm_notes", [])
        if notes and not self.worker_notes:
            self.worker_notes = list(notes)

    def notes(self) -> list[str]:
        return self.worker_notes or self.config.stash.get(NOTES, [])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = self.props[report.nodeid] = dict(report.user_properties)
        target, kind = props.get("target", ""), props.get("kind")
        # the kernel's verdicts, apart from guestpm's self-tests and from stand-ins (our
        # code playing an unmerged series: a PASS there is not the kernel's)
        self.target_of[report.nodeid] = summary.SELF_TEST if not target or kind == "self-test" \
            else f"{summary.STAND_IN} {target}" if kind == "stand-in" else target
        path, _, func = report.nodeid.partition("::")
        # the target is the KTAP subtest; other parameters stay in the test's name
        func, _, params = func.partition("[")
        params = params.rstrip("]").replace(target, "").strip("-") if target else \
            params.rstrip("]")
        name = f"{Path(path).stem}::{func}" + (f"[{params}]" if params else "")
        prev = self.results.get(report.nodeid)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            elif report.when == "setup" and report.failed:
                outcome = "error"
            else:
                outcome = report.outcome
            self.results[report.nodeid] = ktap.Result(name, outcome, reason_of(report))
        elif report.when == "teardown" and report.failed and prev is not None:
            self.results[report.nodeid] = ktap.Result(name, "error",
                                                      "teardown: " + reason_of(report))

    def groups(self) -> dict[str, list[ktap.Result]]:
        out: dict[str, list[ktap.Result]] = {}
        for nodeid, r in sorted(self.results.items()):   # stable order whatever xdist did
            out.setdefault(self.target_of[nodeid], []).append(r)
        return out

    def matrix(self) -> summary.Matrix:
        verdicts, releases, accels = [], {}, {}
        for nodeid, r in self.results.items():
            props = self.props.get(nodeid, {})
            target, row = props.get("target"), self.target_of[nodeid]
            if row != summary.SELF_TEST and "release" in props:
                releases[row] = props["release"]
            if row != summary.SELF_TEST and "accel" in props:
                accels[row] = props["accel"]
            art = artifacts_dir_of(self.config, nodeid, self._target(target))
            link = str(art.relative_to(self.res)) if art.exists() else None
            verdicts.append(summary.Verdict(row, props.get("family") or "unit", r.outcome,
                                            nodeid, link))
        m = summary.Matrix.of(verdicts, releases, accels)
        m.splats = read_splats(self.res)
        m.info = sorted({f"{self.target_of[n]}: {v}" for n, props in self.props.items()
                         for k, v in props.items() if k == "info"})
        return m

    @staticmethod
    def _target(target_id: str | None) -> Target | None:
        if not target_id or "/" not in target_id:
            return None
        kernel, _, arch = target_id.rpartition("/")
        return Target(kernel, arch)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        (self.res / "guestpm.ktap").write_text(ktap.render(self.groups()))
        if self.results:
            (self.res / "summary.md").write_text(self.matrix().markdown())

    def pytest_terminal_summary(self, terminalreporter) -> None:
        groups = self.groups()
        tr = terminalreporter
        if not groups:
            for note in self.notes():
                tr.write_line(note)
            return
        tr.section("guestpm verdicts (kernel x arch x test)")
        width = min(max(len(r.name) for rs in groups.values() for r in rs), 72)
        label = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP",
                 "xfailed": "XFAIL", "xpassed": "XPASS"}
        cols = shutil.get_terminal_size((160, 20)).columns
        for target, rs in groups.items():
            kernel, _, arch = target.rpartition("/") if "/" in target else (target, "", "-")
            for r in rs:
                line = f"{kernel:<12} {arch:<10} {r.name:<{width}}  {label[r.outcome]:<5}"
                if r.outcome != "passed" and r.reason:   # only the reason is cut to fit
                    line += "  " + r.reason.splitlines()[0][:max(cols - len(line) - 2, 60)]
                tr.write_line(line.rstrip())
        tr.section("guestpm summary (kernel x arch x family)")
        tr.write_line(self.matrix().text())
        for note in self.notes():
            tr.write_line(note)
        tr.write_line(f"KTAP: {self.res / 'guestpm.ktap'}   JUnit: "
                      f"{getattr(self.config.option, 'xmlpath', None)}   "
                      f"summary: {self.res / 'summary.md'}   artifacts: {self.res}")
