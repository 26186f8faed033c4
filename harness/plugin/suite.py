"""The host side of an in-guest suite (harness.guest.psci, .vfio): one agent run per
machine, and the three checks every such suite gets: a case's verdict, the verdicts
against upstream history, and the bare-metal entry point's KTAP against the agent's.

A test file subclasses `SuiteHost` for its machine and writes thin tests that call
these; what differs between suites (the agent's arguments, the KTAP command line, the
merge history) is data on the subclass.  `assert_case` turns one case's result back
into a pytest verdict: each check is asserted again, so a FAIL shows the check, the
expected and the actual value, and the case's account."""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import ClassVar

import pytest

from harness.guest import kselftest
from harness.kernel import kernels
from harness.plugin import history
from harness.plugin.hooks import attach_machine, attach_splats, flush_console, note
from harness.vm.machine import Machine


def _show(v) -> str:
    return json.dumps(v, sort_keys=True)


def assert_case(result: dict) -> None:
    """FAIL on the first differing check (expected vs actual), even in a case that
    then skipped; SKIP with the guest's reason; FAIL on an error or a hang (with the
    vCPU state) and on a case that checked nothing; otherwise PASS on evidence."""
    name = result["name"]
    checks = result.get("checks", [])
    # a check recorded before the case skipped is evidence too: a mismatch FAILs even
    # when the case then said the feature is absent
    for c in checks:
        assert c["actual"] == c["expected"], (
            f"{name}: {c['what']}\n  expected {_show(c['expected'])}\n"
            f"  actual   {_show(c['actual'])}\n  ({result.get('doc', '')})")
    if result["status"] == "skip":
        pytest.skip(result["reason"])
    if result["status"] != "pass":
        detail = [f"{name}: {result.get('reason', result['status'])}"]
        if "vcpu_state" in result:
            detail.append(f"vCPU state: {_show(result['vcpu_state'])}")
        if "traceback" in result:
            detail.append(result["traceback"])
        pytest.fail("\n".join(detail), pytrace=False)
    assert checks, f"{name}: the case recorded no check"


@dataclasses.dataclass
class SuiteHost:
    """A booted machine that runs one in-guest suite.  Subclasses set AGENT (the agent
    scenario and `harness.guest` module), MERGED (family -> release it was merged in,
    None: unmerged) and may add agent arguments (agent_args) or a note prefix."""
    machine: Machine
    AGENT: ClassVar[str] = ""
    MERGED: ClassVar[dict] = {}
    _run: dict | None = dataclasses.field(default=None, repr=False)
    noted: bool = False
    # the machine's splats printed during the agent run: every test that reads the run
    # answers for them, not only the first (which claims them from the machine)
    run_splats: list = dataclasses.field(default_factory=list, repr=False)

    def agent_args(self) -> dict:
        return {}

    def before_run(self) -> None:
        """Called once before the agent runs (say, to load a module it uses)."""

    @property
    def run(self) -> dict:
        """All cases in one agent call per machine."""
        if self._run is None:
            self.before_run()
            before = len(self.machine.splats)
            self._run = self.machine.agent(self.AGENT, **self.agent_args())
            flush_console(self.machine)
            self.run_splats = self.machine.splats.since(before)
        return self._run

    def result(self, name: str, run: dict | None = None) -> dict:
        return next(r for r in (run or self.run)["results"] if r["name"] == name)

    def serve(self, request: pytest.FixtureRequest, kernel: kernels.Kernel,
              prefix: str = "") -> "SuiteHost":
        """For a test: name this machine's artifacts in its report and, once per
        machine, note how a developer's kernel compares with upstream history
        (information, not verdicts)."""
        attach_machine(request, self.machine)
        if not self.noted:
            self.noted = True
            for d in history.information(kernel, self.MERGED, self.run["results"]):
                note(request, f"{prefix}{d}")
        attach_splats(request, self.run_splats if self._run is not None else [])
        return self

    # ------------------------------------------------------------ the checks
    def check_case(self, name: str) -> None:
        assert_case(self.result(name))

    def check_history(self, kernel: kernels.Kernel) -> None:
        """On a stock kernel a family SKIPs exactly on releases older than its merge
        (an unmerged one on every release)."""
        version = kernels.release_version(kernel.release)
        assert version, f"no version in release {kernel.release!r} of a stock kernel"
        reasons = sorted({r["reason"] for r in self.run["results"] if r["status"] == "skip"})
        assert not history.differences(self.MERGED, version, self.run["results"]), \
            f"kernel {kernel.release}; skip reasons {reasons}; environment {self.run['env']}"

    def check_bare_metal(self, *args: str, timeout: float = 300) -> None:
        """`python3 -m harness.guest.AGENT ARGS` (what runs on a bare-metal host) prints
        KTAP with the verdicts of the agent's run, and kselftest's exit status."""
        cmd = shlex.join(["python3", "-m", f"harness.guest.{self.AGENT}", *args])
        r = self.machine.ssh.run(f"cd /opt/guestpm && {cmd}", timeout=timeout)
        statuses = {x["name"]: x["status"] for x in self.run["results"]}
        assert r.output.startswith("KTAP version 1\n"), r.output[:200]
        assert kselftest.parse_ktap(r.output) == statuses, r.output
        assert r.status == kselftest.exit_status(self.run["results"]), r.output + r.stderr
