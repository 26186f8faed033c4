"""The end-of-run matrix (harness.plugin.summary) and the fail-fast record of a dead target."""

import dataclasses
from pathlib import Path

import pytest

from harness.errors import BootError, SilentMachine
from harness.plugin import summary
from harness.results.verdicts import Verdict

GOLDEN = Path(__file__).parent / "golden" / "summary"
RELEASES = {"debian:6.1/arm64": "6.1.0-50-arm64", "debian:7.2/x86_64": "7.2.13+deb14-amd64"}
WORDS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "xfailed": "XFAIL",
         "error": "ERROR"}


def V(row: str, family: str, outcome: str, nodeid: str, link: str | None = None,
      release: bool = False) -> Verdict:
    """A record line as the reporter writes it (row: a target, a stand-in row or
    SELF_TEST)."""
    kind = "self-test" if row == summary.SELF_TEST else \
        "stand-in" if row.startswith(summary.STAND_IN) else "kernel"
    target = row.removeprefix(f"{summary.STAND_IN} ") if kind != "self-test" else ""
    kernel, _, profile = target.rpartition("/")
    return Verdict(test=nodeid, outcome=WORDS[outcome], nodeid=nodeid, kernel=kernel,
                   profile=profile, family=family, kind=kind, artifacts=link,
                   release=RELEASES.get(target, "") if release else "")


def verdicts() -> list[Verdict]:
    a, b = "debian:6.1/arm64", "debian:7.2/x86_64"
    return [
        V(a, "boot", "passed", "tests/e2e/test_boot.py::test_ssh[debian:6.1/arm64]"),
        V(a, "psci", "passed", "tests/e2e/test_psci.py::test_psci[vhe-a-debian:6.1/arm64]"),
        V(a, "psci", "skipped", "tests/e2e/test_psci.py::test_psci[vhe-off2-debian:6.1/arm64]"),
        V(a, "hibernate", "xfailed", "tests/e2e/test_hibernate.py::test_rt[debian:6.1/arm64]"),
        V(b, "s3", "failed", "tests/e2e/test_s3.py::test_b[debian:7.2/x86_64]", "tests/s3-b"),
        V(b, "s3", "failed", "tests/e2e/test_s3.py::test_c[debian:7.2/x86_64]", "tests/s3-c"),
        V(b, "s3", "passed", "tests/e2e/test_s3.py::test_a[debian:7.2/x86_64]"),
        V(b, "boot", "error", "tests/e2e/test_boot.py::test_qmp[debian:7.2/x86_64]"),
        V(summary.SELF_TEST, "harness", "passed", "tests/e2e/test_harness_faults.py::t"),
        V(summary.SELF_TEST, "unit", "passed", "tests/unit/test_ktap.py::t"),
    ]


SPLATS = [
    {"target": "debian:7.2/x86_64", "when": "test", "kind": "warning",
     "test": "tests/e2e/test_s3.py::test_b[debian:7.2/x86_64]", "machine": "machines/m-1",
     "title": "WARNING: CPU: 0 PID: 1 at kernel/power/suspend.c:42 f+0x1/0x2",
     "log": "machines/m-1/console.log", "line": 312, "allowed": None},
    {"target": "debian:7.2/x86_64", "when": "between", "kind": "lockdep",
     "test": "tests/e2e/test_s3.py::test_b[debian:7.2/x86_64]", "machine": "machines/m-1",
     "title": "WARNING: possible circular locking dependency detected",
     "log": "machines/m-1/console.log", "line": 420, "allowed": None},
    {"target": "debian:6.1/arm64", "when": "test", "kind": "rcu-stall",
     "test": "tests/e2e/test_boot.py::test_ssh[debian:6.1/arm64]", "machine": "machines/m-2",
     "title": "rcu: INFO: rcu_preempt self-detected stall on CPU",
     "log": "machines/m-2/console.log", "line": 7, "allowed": "an example allowance"},
]


def test_matrix_golden():
    accels = {"debian:6.1/arm64": "tcg", "debian:7.2/x86_64": "kvm"}
    m = summary.Matrix.of([dataclasses.replace(v, release=RELEASES.get(v.target, ""),
                                               accel=accels.get(v.target, ""))
                           for v in verdicts()])
    m.splats = SPLATS
    assert m.text() + "\n" == (GOLDEN / "matrix.txt").read_text()
    assert m.markdown() == (GOLDEN / "summary.md").read_text()


def test_cells_show_the_worst_verdict_with_counts():
    m = summary.Matrix.of(verdicts())
    cells = m.rows["debian:7.2/x86_64"]
    assert cells["s3"].text() == "FAIL 2/3"
    assert cells["s3"].first_bad.nodeid.endswith("test_b[debian:7.2/x86_64]")
    assert m.rows["debian:6.1/arm64"]["psci"].text() == "SKIP 1/2"
    assert m.rows["debian:6.1/arm64"]["boot"].text() == "PASS 1"
    assert m.totals("debian:7.2/x86_64") == {"PASS": 1, "FAIL": 3, "SKIP": 0, "XFAIL": 0}
    assert m.families() == ["boot", "psci", "s3", "hibernate", "harness", "unit"]


@pytest.mark.parametrize("module,family", [
    ("tests/e2e/test_acpi_events.py", "acpi"), ("tests/e2e/test_acpi_arm64.py", "acpi"),
    ("tests/e2e/test_s2idle.py", "s2idle"), ("tests/e2e/test_boot.py", "boot"),
    ("tests/unit/test_bad_input.py", "unit")])
def test_family_of(module, family):
    assert summary.family_of(module) == family


class FakeMachine:
    """Launches and, like Machine.wait_ready, reports silence to on_silent."""

    def __init__(self, error=None):
        from harness import profiles
        from harness.vm.boot import BootInfo
        from harness.vm.splats import SplatLog
        self.error, self.launched, self.on_silent, self.proc = error, 0, None, None
        self.splats = SplatLog()
        self.profile, self.workdir = profiles.get("arm64"), Path("/r/machines/fake-0")
        self.boot = BootInfo(1.0, 1.0, "7.2.0")

    def launch(self):
        self.launched += 1

    def wait_ready(self):
        if isinstance(self.error, SilentMachine) and self.on_silent:
            self.on_silent(self.error)
        if self.error:
            raise self.error


def test_a_silent_target_fails_the_rest_at_once(pytestconfig, tmp_path, monkeypatch):
    """Two launches stand for two xdist workers: they share the results directory."""
    from harness.plugin import pool as plugin
    monkeypatch.setattr(plugin, "results_dir", lambda config: tmp_path)
    t = plugin.Target("path:/x/vmlinuz", "arm64")
    w1 = w2 = pytestconfig
    monkeypatch.setattr(plugin, "CURRENT_TEST", ["tests/e2e/test_boot.py::test_a[x]"])
    with pytest.raises(SilentMachine):
        plugin.launch(FakeMachine(SilentMachine("console stayed silent")), w1, t, shared=False,
                      why="first")
    m = FakeMachine()
    with pytest.raises(BootError, match=r"target did not boot: see tests/e2e/test_boot.py::"
                                        r"test_a\[x\] \(console stayed silent\)"):
        plugin.launch(m, w2, t, shared=False, why="first")
    assert m.launched == 0
    other = plugin.Target("debian:7.2", "arm64")         # other targets are not touched
    assert plugin.launch(FakeMachine(), w2, other, shared=True, why="first").launched == 1


def test_only_the_shared_machine_or_silence_marks_a_target_dead(pytestconfig, tmp_path,
                                                                 monkeypatch):
    """A variant that panics (say, one kernel parameter) fails its own tests only."""
    from harness.plugin import pool as plugin
    monkeypatch.setattr(plugin, "results_dir", lambda config: tmp_path)
    t, dead = plugin.Target("debian:7.2", "arm64"), plugin.DeadTargets(pytestconfig)
    with pytest.raises(BootError):
        plugin.launch(FakeMachine(BootError("panic")), pytestconfig, t, shared=False, why="first")
    dead.check(t)                                          # still alive
    with pytest.raises(BootError):
        plugin.launch(FakeMachine(BootError("panic")), pytestconfig, t, shared=True, why="first")
    with pytest.raises(BootError, match="target did not boot"):
        dead.check(t)


def test_target_slugs_are_short_and_unique():
    from harness.plugin.targets import Target
    long = "path:/some/very/long/directory/" + "x" * 200 + "/vmlinuz-6.6.0-rc1,modules=/" + \
        "y" * 200
    assert Target("debian:6.1", "arm64").slug == "debian-6.1-arm64"
    s1, s2 = Target(long, "arm64").slug, Target(long + "z", "arm64").slug
    assert len(s1) < 60 and s1.startswith("vmlinuz-6.6.0-rc1-arm64-") and s1 != s2


def test_long_specs_are_shortened_for_the_table():
    spec = "path:/tmp/userkern/Image-7.2.gz,modules=/root/.cache/guestpm/kernels/x/lib/modules/7"
    assert summary.short_spec(spec) == "path:…/Image-7.2.gz"
    assert summary.short_spec("debian:bookworm-backports") == "debian:bookworm-backports"
    m = summary.Matrix.of([V(f"{spec}/arm64", "boot", "passed", "t"),
                           V(f"stand-in {spec}/arm64", "s2idle", "passed", "u")])
    rows = m.text().splitlines()
    assert rows[1].startswith("path:…/Image-7.2.gz ") and "arm64" in rows[1]
    assert rows[2].startswith("stand-in path:…/Image-7.2.gz ")
