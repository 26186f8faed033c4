"""A test's report, completed after it ran: the kernel splats printed on the machines it
used (each console flushed first) and in the shared evidence it read judged under
--splats, and its artifacts named in a failure.  Tests and fixtures hand in what is to
be judged with `attach_machine` and `attach_splats`, and information with `note`."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from harness.errors import first_line
from harness.plugin.known_defects import explains
from harness.plugin.pool import as_test_failure, record_splats, retire_if_splatted, splats_fail
from harness.plugin.targets import target_of
from harness.vm.machine import Machine

MACHINES = pytest.StashKey[list]()        # the machines a test used, judged after it
ARTIFACTS = pytest.StashKey[Path]()       # the test's results/RUN/tests/ directory
SHARED_SPLATS = pytest.StashKey[list]()   # splats in evidence it read but did not make
FLUSH_TIMEOUT = 10


def note(request: pytest.FixtureRequest, text: str) -> None:
    """Information about the target, not a verdict: shown under the summary matrix."""
    request.node.user_properties.append(("info", text))


def attach_machine(request: pytest.FixtureRequest, m: Machine) -> None:
    """Name `m`'s artifacts in the test's failure report and results/tests/ links."""
    request.node.stash.setdefault(MACHINES, []).append(m)


def attach_splats(request: pytest.FixtureRequest, found: list) -> None:
    """Splats in evidence the test reads but did not make: an L2 run or an agent run
    that an earlier test started.  They fail this test as they failed the first reader
    (which claimed them from the machine)."""
    request.node.stash.setdefault(SHARED_SPLATS, []).extend(found)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    as_test_failure(report, call)
    if call.when == "call" or (call.when == "setup" and not report.passed):
        judge_splats(item, report)
    if report.failed:
        lines = [f"test artifacts: {item.stash.get(ARTIFACTS, '(none)')}"]
        for m in item.stash.get(MACHINES, []):
            files = sorted(p.name for p in m.workdir.iterdir()) if m.workdir.is_dir() else []
            lines.append(f"machine {m.workdir}: {', '.join(files) or '(empty)'}")
        report.sections.append(("guestpm artifacts", "\n".join(lines)))


def judge_splats(item: pytest.Item, report: pytest.TestReport) -> None:
    """The splats printed on the test's machines since the last claim are the test's
    (each console flushed first, so what the test made is read before its verdict), and
    so are those of the shared evidence it read (attach_splats): with --splats=fail
    each one that is not allowed FAILs it, quoting the splat."""
    found, flushed = [], []
    for m in dict.fromkeys(item.stash.get(MACHINES, [])):
        flushed.append(flush_console(m))
        mine = m.splats.claim()
        if mine:
            record_splats(item.config, target_of(item), m, mine, "test", item.nodeid)
            retire_if_splatted(item.config, m, mine, f"a kernel splat during {item.nodeid}")
            found += mine
    took = [f for f in flushed if isinstance(f, float)]
    if took:
        item.user_properties.append(("console_flush_s", round(sum(took), 3)))
    problems = [f for f in flushed if isinstance(f, str)]
    if problems:
        report.sections.append(("console flush", "\n".join(problems)))
    found = list({(s.source, s.log, s.line): s
                  for s in found + item.stash.get(SHARED_SPLATS, [])}.values())
    if not found:
        return
    # a known defect the test XFAILs on may print splats as part of its symptom: only
    # those of its own occurrence (the hung CPU's lockup and stall reports) are excused
    reason = getattr(report, "wasxfail", None)
    explained = [s for s in found if reason is not None and explains(reason, s)]
    bad = [s for s in found if not s.allowed and s not in explained]
    text = "\n\n".join(s.quote() + (f"\n  (allowed: {s.allowed.reason})" if s.allowed else
                                     "\n  (part of the known defect this test XFAILs on)"
                                     if s in explained else "")
                        for s in found)
    report.sections.append(("kernel splats", text))
    if not bad or not splats_fail(item.config):
        return
    first = bad[0]
    report.guestpm_reason = f"kernel splat ({first.kind}): {first.title}" + \
        (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")
    if report.failed:
        return                            # its own failure stays the message
    if hasattr(report, "wasxfail"):       # an xfail names another symptom: this is new
        del report.wasxfail
    report.outcome = "failed"
    report.longrepr = (f"{len(bad)} kernel splat(s) during the test (--splats=fail):\n\n"
                       + "\n\n".join(s.quote() for s in bad))


def flush_console(m: Machine) -> float | str | None:
    """Write a marker into the kernel log of a live machine the test used over ssh and
    wait until its console reader has read it back: every record logged before it
    (a splat the test caused) is then in the machine's SplatLog, claimed by this test
    instead of the next.  The seconds it took; why not, if the marker never came back;
    None for a machine that cannot say (not running, crashed, never reached over ssh)
    or need not (nothing acted on it since its last flush: no ssh command, QMP command
    or console output; most tests that read a shared agent run)."""
    if not m.alive() or m.console is None or m.console.fatal_index is not None \
            or m.ssh_commands is None:
        return None
    if m.flushed_at == _activity(m):
        return None
    token = f"guestpm: console flush {secrets.token_hex(6)}"
    t0 = time.monotonic()
    try:
        # a guest left paused or suspended cannot answer; it is not waited for
        if m.qmp.execute("query-status", timeout=5)["status"] != "running":
            return None
        # level 0: printed at every console loglevel (a test may lower it to 1)
        m.ssh.run(f"echo '<0>{token}' > /dev/kmsg", timeout=FLUSH_TIMEOUT).check()
        m.wait_until(lambda: m.console.has_line(token), FLUSH_TIMEOUT,
                     "the console flush marker", interval=0.05)
    except Exception as e:
        return f"{m.workdir.name}: the console flush marker did not come back: " \
               f"{first_line(e)}"
    m.flushed_at = _activity(m)
    return time.monotonic() - t0


def _activity(m: Machine) -> tuple:
    """What changes when anything acts on the guest or it prints."""
    def size(p) -> int:
        try:
            return p.stat().st_size
        except OSError:
            return -1
    assert m.console is not None
    return m.ssh_commands, m.console.size, size(m.qmp_log)
