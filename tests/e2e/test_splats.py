"""A kernel splat fails the test during which it is printed: proof with a fixture module.

tests/fixtures/splat (built for the kernel under test: Debian's linux-headers, or the
O= directory of a `guestpm build`) prints a WARN_ON, a lockdep report or a KASAN report
on demand.  An inner pytest session, with this plugin, on the target under test, runs
tests that fire them; this test then reads the inner session's verdicts and
results/splats.jsonl:

  * the test during which a splat fires FAILs, and its message quotes the splat's
    title, call trace and console line;
  * the next test gets a fresh machine and PASSes (it does not inherit the splat);
  * a splat read only through `dmesg` over ssh (console loglevel 1) is found too;
  * a splat printed after a test ended is recorded "between" tests and blamed on none;
  * a splat during boot fails the boot;
  * with --splats=warn the same splat is counted but fails nothing.

The lockdep and KASAN cases need CONFIG_PROVE_LOCKING / CONFIG_KASAN: on a stock kernel
they SKIP in the inner session, naming the option (build with --fragment debug /
--fragment kasan to run them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.image import fixture_modules
from harness.plugin.targets import ROOT
from harness.progress import progress

pytestmark = [pytest.mark.e2e, pytest.mark.harness_selftest]

FIXTURE = ROOT / "tests" / "fixtures" / "splat"
INNER_TIMEOUT = 1200        # s: up to 8 boots under TCG, the debug builds' included

INNER = textwrap.dedent('''
    """Inner session of tests/e2e/test_splats.py: each test fires what its name says."""
    import os, time
    import pytest
    from harness.errors import BootError

    KO = open(os.environ["GUESTPM_SPLAT_KO"], "rb").read()
    TRIGGER = "/sys/kernel/debug/guestpm_splat/trigger"

    def load(m):
        m.ssh.put(KO, "/tmp/splat.ko")
        m.ssh.run("grep -q '^guestpm_splat ' /proc/modules || insmod /tmp/splat.ko").check()

    def fresh(m):
        """A machine on which no splat fixture was loaded."""
        assert m.ssh.run("grep -c '^guestpm_splat ' /proc/modules").output.strip() == "0", \\
            "this machine is the one that splatted"

    def fire(m, kind):
        load(m)
        m.ssh.run(f"echo {kind} > {TRIGGER}").check()
        m.ssh.run("sleep 1").check()        # the console reader catches up

    def test_01_warn(machine):
        fire(machine, "warn")

    def test_02_next_is_fresh(machine):
        fresh(machine)

    @pytest.mark.needs_config("PROVE_LOCKING")
    def test_03_lockdep(machine):
        fire(machine, "lockdep")

    def test_04_next_is_fresh(machine):
        fresh(machine)

    @pytest.mark.needs_config("KASAN")
    def test_05_kasan(machine):
        fire(machine, "kasan")

    def test_06_next_is_fresh(machine):
        fresh(machine)

    def test_07_warn_seen_only_by_dmesg(machine):
        load(machine)
        machine.ssh.run(f"dmesg -n 1; echo warn > {TRIGGER}").check()   # console quiet
        machine.ssh.run("dmesg | tail -n 60").check()

    def test_08_warn_after_the_test(machine):
        """Fires 3 s after this test returned: between tests."""
        fresh(machine)
        load(machine)
        machine.ssh.run(f"(sleep 3; echo warn > {TRIGGER}) >/dev/null 2>&1 &").check()

    def test_09_no_machine_while_it_fires(target):   # (target: keeps pytest's order)
        time.sleep(8)

    def test_10_next_is_fresh(machine):
        fresh(machine)

    def test_11_boot(machine_factory):
        m = machine_factory.booted(extra_modules=[("guestpm_splat", KO, "at_load=warn")])
''')


def _inner(tmp: Path, target, ko: Path, *options: str) -> tuple[dict, list[dict], Path]:
    """Run the inner session; (verdict and message per test, splat records, results)."""
    (tmp / "test_inner.py").write_text(INNER)
    res = tmp / "results" / "latest"          # the inner run's own directory
    cmd = [sys.executable, "-m", "pytest", str(tmp / "test_inner.py"), "-q",
           "-p", "no:cacheprovider", "--rootdir", str(tmp), f"--results={tmp / 'results'}",
           "--junitxml", str(tmp / "junit.xml"), f"--kernel={target.kernel}",
           f"--arch={target.arch}", *options]
    env = dict(os.environ, GUESTPM_SPLAT_KO=str(ko), PYTHONPATH=str(ROOT))
    with open(tmp / "inner.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(INNER_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the inner session did not end within {INNER_TIMEOUT} s "
                        f"({tmp / 'inner.log'})")
        finally:
            if proc.poll() is None:        # our own child's group: its QEMUs die with it
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    verdicts = {}
    for case in ET.parse(tmp / "junit.xml").iter("testcase"):
        name = case.get("name").split("[")[0]
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        verdicts[name] = ("failed", bad.get("message", "") + "\n" + (bad.text or "")) \
            if bad is not None else ("skipped", skip.get("message", "")) \
            if skip is not None else ("passed", "")
    path = res / "splats.jsonl"
    records = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    return verdicts, records, res


@pytest.fixture(scope="module")
def ko(request) -> Path:
    kernel = request.getfixturevalue("kernel")
    profile = request.getfixturevalue("profile")
    try:
        return fixture_modules.build(FIXTURE, kernel, profile.deb_arch, progress)
    except fixture_modules.Unbuildable as e:
        pytest.skip(f"the splat fixture module cannot be built: {e}")


def test_a_splat_fails_its_test_and_no_other(target, ko, tmp_path):
    v, records, res = _inner(tmp_path, target, ko)
    where = f"(inner session: {tmp_path / 'inner.log'}, {res})"

    outcome, msg = v["test_01_warn"]
    assert outcome == "failed", f"a WARN_ON during the test left it {outcome} {where}"
    assert "kernel splat (warning)" in msg and "WARNING: " in msg, msg
    assert "splat_warn" in msg, f"the call trace is not quoted: {msg}"
    assert "console.log:" in msg, f"the console line is not named: {msg}"
    for fresh in ("test_02_next_is_fresh", "test_04_next_is_fresh", "test_06_next_is_fresh",
                  "test_10_next_is_fresh"):
        assert v[fresh][0] == "passed", f"{fresh}: {v[fresh]} {where}"

    for case, option, kind in (("test_03_lockdep", "PROVE_LOCKING", "lockdep"),
                               ("test_05_kasan", "KASAN", "kasan")):
        outcome, msg = v[case]
        if outcome == "skipped":
            assert f"CONFIG_{option}" in msg, msg
            continue
        assert outcome == "failed", f"{case}: {outcome} on a {option} kernel {where}"
        assert f"kernel splat ({kind})" in msg, msg

    outcome, msg = v["test_07_warn_seen_only_by_dmesg"]
    assert outcome == "failed", f"a WARN seen only by dmesg over ssh: {outcome} {where}"
    assert "kernel splat (warning)" in msg, msg
    assert [r["source"] for r in records if "test_07" in (r["test"] or "")] == \
        ["dmesg over ssh"], records

    assert v["test_08_warn_after_the_test"][0] == "passed", v["test_08_warn_after_the_test"]
    assert v["test_09_no_machine_while_it_fires"][0] == "passed"
    between = [r for r in records if r["when"] == "between"]
    assert [r["test"].split("::")[-1].split("[")[0] for r in between] == \
        ["test_08_warn_after_the_test"], f"splats between tests: {between} {where}"
    assert between[0]["kind"] == "warning"

    outcome, msg = v["test_11_boot"]
    assert outcome == "failed" and "kernel splat during boot" in msg, f"{outcome}: {msg}"

    summary = (res / "summary.md").read_text()
    assert "Kernel splats:" in summary and "between tests" in summary, summary


def test_warn_mode_counts_splats_and_fails_nothing(target, ko, tmp_path):
    v, records, res = _inner(tmp_path, target, ko, "--splats=warn", "-k", "test_01")
    assert v["test_01_warn"][0] == "passed", v["test_01_warn"]
    assert [(r["kind"], r["when"]) for r in records] == [("warning", "test")], records
    summary = (res / "summary.md").read_text()
    assert f"kernel splat in {target.id} during" in summary, summary
