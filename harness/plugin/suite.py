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
from collections.abc import Callable
from typing import ClassVar

import pytest

from harness.guest import kselftest
from harness.kernel import kernels
from harness.plugin import history
from harness.plugin.judging import attach_machine, attach_splats, flush_console, note
from harness.vm.machine import Machine


def config_or_none(request: pytest.FixtureRequest, kernel: kernels.Kernel) -> dict | None:
    """The kernel's CONFIG_ options (its config file, else /proc/config.gz in the
    guest), or None when neither can be read."""
    if kernel.config_options():
        return kernel.config_options()
    return request.getfixturevalue("kernel_config") or None


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
    _config: Callable[[], dict[str, str] | None] | None = dataclasses.field(
        default=None, repr=False)
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
              prefix: str = "") -> SuiteHost:
        """For a test: name this machine's artifacts in its report, remember where the
        kernel's config comes from (read only when a promise is at stake) and, once per
        machine, note what a developer's kernel ran before its merge (information)."""
        attach_machine(request, self.machine)
        self.kernel = kernel
        self._config = lambda: config_or_none(request, kernel)
        if not self.noted:
            self.noted = True
            for d in history.information(kernel, self.MERGED, self.run["results"],
                                         self.release):
                note(request, f"{prefix}{d}")
        attach_splats(request, self.run_splats if self._run is not None else [])
        return self

    @property
    def release(self) -> str | None:
        """The release of the kernel the agent ran on (its uname), else the spec's."""
        kernel = getattr(self, "kernel", None)
        return self.run.get("env", {}).get("release") or (kernel.release if kernel else None)

    def config(self) -> dict[str, str] | None:
        return self._config() if self._config else None

    def shown(self) -> dict[str, bool]:
        """What the running kernel shows of the options that can turn a family off, for
        a kernel without a readable config (a subclass knows its agent's evidence)."""
        return {}

    # ------------------------------------------------------------ the checks
    def check_case(self, name: str) -> None:
        """The case's verdict; a SKIP of a family the kernel's release promises is a
        FAIL (harness.plugin.history), unless the kernel's config turns it off."""
        result = self.result(name)
        v = history.judge_case(result, self.MERGED, self.release, self.config, self.shown())
        if v is not None and v.status == "fail":
            pytest.fail(v.message, pytrace=False)
        if v is not None:
            result = {**result, "reason": v.message}
        assert_case(result)

    def check_history(self, kernel: kernels.Kernel) -> None:
        """On every kernel a family merged in release X runs on X and later, unless the
        kernel's config turns it off; on a stock kernel it also SKIPs on releases older
        than its merge (an unmerged one on every release)."""
        release = self.release
        version = kernels.release_version(release)
        assert version, f"no version in release {release!r} of kernel {kernel.spec}"
        off = history.turned_off(self.MERGED, self.config(), self.shown())
        reasons = sorted({r["reason"] for r in self.run["results"] if r["status"] == "skip"})
        wrong = history.differences(self.MERGED, version, self.run["results"], off) \
            if kernel.debian is not None else \
            history.regressions(self.MERGED, version, self.run["results"], off)
        assert not wrong, (f"{'; '.join(wrong)}; kernel {release}; skip reasons {reasons}; "
                           f"environment {self.run['env']}"
                           + (f"; turned off by its config: {sorted(off)}" if off else ""))

    def check_bare_metal(self, *args: str, timeout: float = 300) -> None:
        """`python3 -m harness.guest.AGENT ARGS` (what runs on a bare-metal host) prints
        KTAP with the verdicts of the agent's run, and kselftest's exit status."""
        cmd = shlex.join(["python3", "-m", f"harness.guest.{self.AGENT}", *args])
        r = self.machine.ssh.run(f"cd /opt/guestpm && {cmd}", timeout=timeout)
        statuses = {x["name"]: x["status"] for x in self.run["results"]}
        assert r.output.startswith("KTAP version 1\n"), r.output[:200]
        assert kselftest.parse_ktap(r.output) == statuses, r.output
        assert r.status == kselftest.exit_status(self.run["results"]), r.output + r.stderr
