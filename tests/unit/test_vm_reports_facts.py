"""harness/vm owns machines and reports what they did; it does not judge.  Its modules
import no pytest and raise no AssertionError: they raise typed errors that carry the
facts, and the test side (the plugin, tests/e2e/conftest.py) makes the verdict.  The L2
host, driven against a fake L1 machine, hands its judges what they need and keeps its
runs in the pool, per machine."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_dead_targets import Config, FakeMachine

from harness import profiles
from harness.errors import GuestMisbehaved
from harness.plugin import l2_judge, pool
from harness.plugin.targets import Target
from harness.vm import l2
from harness.vm.splats import SplatLog, scan

VM = Path(__file__).resolve().parents[2] / "harness" / "vm"
MODULES = sorted(VM.glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_no_vm_module_imports_pytest():
    def imports(path: Path) -> list[str]:
        nodes = list(ast.walk(_tree(path)))
        return [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names] + \
            [n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)]
    assert [(p.name, m) for p in MODULES for m in imports(p)
            if m.split(".")[0] in ("pytest", "_pytest")] == []


def test_no_vm_module_raises_assertion_errors():
    """Nor asserts with a message: an assert that explains itself is a verdict.  (A
    bare assert that narrows a type for the checker states an invariant.)"""
    found = []
    for path in MODULES:
        nodes = list(ast.walk(_tree(path)))
        found += [(path.name, n.lineno, "raise") for n in nodes if isinstance(n, ast.Raise)
                  and n.exc is not None and "AssertionError" in ast.unparse(n.exc)]
        found += [(path.name, n.lineno, "assert") for n in nodes
                  if isinstance(n, ast.Assert) and n.msg is not None]
        mod = importlib.import_module(f"harness.vm.{path.stem}")
        classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
                   if c.__module__ == mod.__name__]
        found += [(path.name, c.__name__, "class") for c in classes
                  if issubclass(c, AssertionError)]
    assert found == []


def test_what_the_guest_did_wrong_is_a_guest_misbehaviour():
    from harness.vm import guest_events, machine, power
    from harness.vm.console import CommandFailed, CommandResult
    for cls in (power.NeverSuspended, power.NeverWoke, power.WokeEarly, power.EndedInReset,
                power.NeverHibernated, CommandFailed, machine.AgentFailed,
                guest_events.ListenerDied, l2.VmmFailed, l2.NoReport, l2.NotShutDown):
        assert issubclass(cls, GuestMisbehaved) and not issubclass(cls, AssertionError), cls
    with pytest.raises(CommandFailed, match=r"(?s)`false` exited 1:\nout\nerr"):
        CommandResult("false", 1, "out\n", "err").check()


# ------------------------------------------------------------------ the L2 host

OOPS = (Path(__file__).parent / "golden" / "oops" / "virtio-net-restore-6.1-amd64.txt").read_text()
WARN = "[    5.000001] WARNING: CPU: 0 PID: 1 at drivers/x.c:12 f+0x8/0x10\n"
SUSPEND_CAP = "KVM_CAP_ARM_SYSTEM_SUSPEND absent: this host KVM cannot forward PSCI " \
              "SYSTEM_SUSPEND to the VMM"


class FakeL1:
    """An L1 host machine whose reference VMM exits `status` at once, printing `stderr`
    and leaving `console` as the L2 console."""

    def __init__(self, tmp_path: Path, status: int = 0, stderr: str = "", console: str = ""):
        self.workdir, self.splats, self.retired = tmp_path, SplatLog(), None
        self.ssh, self.status, self.stderr, self.console = self, status, stderr, console
        self.started = 0

    def start(self, cmd: str):
        self.started += 1
        result = {"outcome": "shutdown", "detail": "", "exits": []}
        return SimpleNamespace(done=lambda: True, wait=lambda timeout: SimpleNamespace(
            status=self.status, stderr=self.stderr, output=json.dumps(result) + "\n"))

    def run(self, cmd: str, timeout: float = 60):
        plain = cmd.endswith("/console.log 2>/dev/null") and "relaunch" not in cmd
        return SimpleNamespace(output=self.console if plain else "")

    def wait_until(self, predicate, timeout, what, also=None, interval=0.5, fail=None):
        assert predicate(), what


def _host(m: FakeL1, **judges) -> l2.L2Host:
    guest = SimpleNamespace(release="7.2.13+deb14-arm64")
    return l2.L2Host("vhe", m, guest, l2.GuestDisks((), None), **judges)


def test_a_refusal_goes_to_the_judge_which_skips_or_fails_by_the_host_release(tmp_path):
    m = FakeL1(tmp_path, status=4, stderr=f"vmm: {SUSPEND_CAP}\n")
    with pytest.raises(l2.VmmRefused) as e:             # nobody judges: the fact
        _host(m).run("honour", "--suspend", "honour")
    assert e.value.why == SUSPEND_CAP
    with pytest.raises(pytest.skip.Exception) as skipped:
        _host(m, on_refused=lambda why: l2_judge.refused(why, "5.18.0-1-arm64")).run("honour")
    assert skipped.value.msg == SUSPEND_CAP              # the SKIP names what is missing
    with pytest.raises(pytest.fail.Exception, match="where KVM_CAP_ARM_SYSTEM_SUSPEND was merged"):
        _host(m, on_refused=lambda why: l2_judge.refused(why, "7.2.13+deb14-arm64")).run("x")


def test_a_failed_vmm_says_its_exit_where_its_logs_are_and_the_l2_crash(tmp_path):
    m = FakeL1(tmp_path, status=1, stderr="Traceback: boom\n", console=OOPS)
    with pytest.raises(l2.VmmFailed) as e:
        _host(m).run("honour")
    said = str(e.value)
    assert said.startswith("the reference VMM failed (exit 1): Traceback: boom (VMM exit log "
                           f"and L2 console: {tmp_path / 'l2-vhe-0-honour'})")
    assert "; the L2 kernel crashed:\n" in said and "Oops: 0003 [#1]" in said


def test_the_runs_are_the_pools_per_machine_and_each_read_is_judged(tmp_path):
    m = FakeL1(tmp_path, console=WARN + OOPS)
    runs: dict = {}
    reads = []
    a, b = _host(m, runs=runs, on_read=reads.append), _host(m, runs=runs)
    run = a.run("honour", "--suspend", "honour")
    assert b.run("honour", "--suspend", "honour") is run and m.started == 1
    assert a.run("honour", "--suspend", "honour") is run and reads == [run, run]
    assert b.run("other") is not run and m.started == 2 and \
        (tmp_path / "l2-vhe-1-other" / "result.json").exists()      # numbered on
    assert [s.kind for s in run.splats] == ["warning"] and not run.splats[0].own
    assert m.splats.unclaimed() == run.splats and not hasattr(m, "l2_runs")
    with pytest.raises(pytest.fail.Exception, match=r"the L2 kernel crashed in run honour"):
        l2_judge.fail_on_crash(run)


# ------------------------------------------------------------------ the pool keeps

def test_the_pool_keeps_each_machine_s_last_test_and_runs_until_it_closes(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(pool, "Machine", FakeMachine)
    monkeypatch.setattr(FakeMachine, "script", ["ok", "ok"])
    monkeypatch.setattr(FakeMachine, "made", [])
    monkeypatch.setattr(pool, "CURRENT_TEST", [""])
    kernel = SimpleNamespace(image=Path("/k/Image"))
    p = pool.MachinePool(Config(tmp_path), Target("debian:7.2", "arm64"),
                         profiles.get("arm64"), kernel, Path("/i"))
    pool.CURRENT_TEST[0] = "t.py::test_a"
    m = p.get((), tag="shared")
    m.splats = SplatLog()
    assert p.l2_runs(m) is p.l2_runs(m) == {}
    pool.CURRENT_TEST[0] = "t.py::test_b"
    p.reuse("host", lambda: SimpleNamespace(machine=m))
    for s in scan(WARN, "console", tmp_path / "console.log"):
        m.splats.add(s)                    # printed after test_b, before the next test
    pool.CURRENT_TEST[0] = "t.py::test_c"
    fresh = p.get((), tag="shared")        # the splat retired it: a fresh one
    rec = [json.loads(ln) for ln in (tmp_path / "splats.jsonl").read_text().splitlines()]
    assert [(r["when"], r["test"]) for r in rec] == [("between", "t.py::test_b")]
    assert fresh is not m and m.closed and m not in p.last_test and m not in p.runs
    assert p.last_test == {fresh: "t.py::test_c"} and not hasattr(m, "last_test")
