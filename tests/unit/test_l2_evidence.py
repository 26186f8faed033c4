"""The L2 guest's kernel log as evidence, and the L2 judges: each test makes a verdict
that went the wrong way go the right way (golden consoles and VMM reports, no boot)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.guest.psci import floor_of
from harness.guest.vmm import l2init
from harness.guest.vmm.__main__ import DEFAULT_APPEND
from harness.plugin import judging, l2_judge
from harness.plugin import report as report_mod
from harness.plugin.history import vmm_refusal_broken as promise_broken
from harness.plugin.known_defects import KNOWN, xfail_if_seen
from harness.plugin.targets import RUN_DIR
from harness.vm.l2 import L2Run, crash_in
from harness.vm.splats import SplatLog, scan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def _load(name: str):
    """A test module of tests/e2e, for its judges (pure functions of an L2Run)."""
    spec = importlib.util.spec_from_file_location(f"e2e_{name}", ROOT / "tests" / "e2e" /
                                                  f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


suspend = _load("test_l2_suspend")
hibernate = _load("test_l2_hibernate")
l2_fixtures = _load("conftest")


# ------------------------------------------------------------------ the console level

def console_loglevel(cmdline: str) -> int:
    """The console loglevel a kernel command line leaves (init/main.c: `quiet` sets 4,
    `loglevel=N` sets N, `debug` 10; the last one wins; default 7)."""
    level = 7
    for arg in cmdline.split():
        if arg == "quiet":
            level = 4
        elif arg == "debug":
            level = 10
        elif arg.startswith("loglevel="):
            level = int(arg.split("=", 1)[1])
    return level


def test_the_l2_console_prints_warnings_and_not_info_from_boot_on():
    # printk prints a record when its level is below the console loglevel: WARN and
    # lockdep are level 4, KERN_DEFAULT is 4 (CONFIG_MESSAGE_LOGLEVEL_DEFAULT)
    assert console_loglevel(DEFAULT_APPEND) == 5, DEFAULT_APPEND
    assert console_loglevel("console=ttyAMA0 quiet rdinit=/init") == 4    # what it was
    assert "no_console_suspend" in DEFAULT_APPEND.split()
    # a splat's report through the slow UART must not pass as the kernel's hard LOCKUP
    assert "watchdog_thresh=60" in DEFAULT_APPEND.split()


def test_init_never_lowers_the_console_below_warnings():
    levels = [line.split("dmesg -n", 1)[1].split()[0] for line in l2init.INIT.splitlines()
              if "dmesg -n" in line]
    assert levels and set(levels) <= {"$LVL", "7"}, levels
    assert 'LVL=5; [ "${2:-4}" -ge 5 ] && LVL=$(($2 + 1))' in l2init.INIT


# ------------------------------------------------------------------ L2 runs

def _run(console: str, *reports: str, exits=(), outcome="shutdown", **result) -> L2Run:
    text = console + "".join(f"[   9.000000] guestpm-l2: {r}\n" for r in reports)
    return L2Run("honour", {"outcome": outcome, "detail": "", "exits": list(exits),
                            "psci_version": "1.3", **result}, text, "here: /r/l2-0")


OOPS = """[   12.100000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
[   12.100100] Mem abort info:
[   12.100200] Internal error: Oops: 0000000096000004 [#1]  SMP
[   12.100300] Workqueue: events some_work
[   12.100400] pc : some_work_fn+0x10/0x40
"""


def test_an_l2_oops_fails_every_reader_quoting_it():
    run = _run("[   1.0] booting\n" + OOPS, "resumed rc=0", "done")
    assert crash_in(run.console()).splitlines()[1].startswith("[   12.100000] Unable to handle")
    for _ in range(2):                       # a second reader of the same run too
        with pytest.raises(pytest.fail.Exception) as e:
            l2_judge.fail_on_crash(run)
        assert "the L2 kernel crashed in run honour" in str(e.value)
        assert "pc : some_work_fn+0x10/0x40" in str(e.value)
    assert crash_in("[ 1.0] guestpm-l2: done\n") is None
    l2_judge.fail_on_crash(_run("[ 1.0] fine\n", "done"))


def test_an_l2_panic_is_quoted_not_only_the_reset():
    run = _run("[   3.0] Kernel panic - not syncing: Attempted to kill init!\n", "up",
               outcome="reset")
    with pytest.raises(pytest.fail.Exception, match="Kernel panic - not syncing"):
        l2_judge.fail_on_crash(run)


def test_an_l2_crash_a_known_defect_matches_is_an_xfail():
    oops = (GOLDEN / "oops" / "trans_pgd-6.12-arm64.txt").read_text()
    run = _run("".join(f"[   20.000000] {ln}\n" for ln in oops.splitlines()))
    with pytest.raises(pytest.xfail.Exception, match="trans_pgd_create_copy"):
        l2_judge.fail_on_crash(run, lambda console, where: xfail_if_seen(
            console, "arm64", where, *KNOWN, release="6.12.48+deb13-arm64", mode="vhe"))


WARN = """[    5.000000] ------------[ cut here ]------------
[    5.000001] WARNING: CPU: 0 PID: 1 at drivers/x.c:12 splat_warn+0x8/0x10 [guestpm_splat]
[    5.000002] Call trace:
[    5.000003]  splat_warn+0x8/0x10 [guestpm_splat]
[    5.000004]  guestpm_splat_init+0x40/0x1000 [guestpm_splat]
[    5.000005] ---[ end trace 0000000000000000 ]---
"""


def _report(**kw):
    return SimpleNamespace(failed=False, passed=True, outcome="passed", sections=[],
                           longrepr=None, **kw)


def _item(nodeid: str, tmp_path: Path, machines=()):
    item = SimpleNamespace(nodeid=nodeid, stash=pytest.Stash(), user_properties=[],
                           config=SimpleNamespace(getoption=lambda o, d=None: {
                               "splats": "fail", "results": str(tmp_path)}.get(o, d),
                               stash={RUN_DIR: tmp_path}))
    if machines:
        item.stash[judging.MACHINES] = list(machines)
    return item


def test_an_l2_splat_fails_each_test_that_reads_the_run(tmp_path):
    found = scan(WARN, "L2 console", "/r/l2-0/console.log")
    verdicts = []
    for n in (1, 2):                         # the first reader and a later one
        item = _item(f"t.py::test_{n}", tmp_path)
        judging.attach_splats(SimpleNamespace(node=item), found)
        rep = _report()
        judging.judge_splats(item, rep)
        verdicts.append((rep.outcome, "splat_warn" in str(rep.longrepr)))
    assert verdicts == [("failed", True), ("failed", True)]


# ------------------------------------------------------------------ the console flush

class _Console:
    def __init__(self):
        self.lines, self.fatal_index = [], None

    def has_line(self, text: str, last: int = 200) -> bool:
        return any(text in ln for ln in self.lines[-last:])


class _Machine:
    """A machine whose splat reaches the console reader only after the test returned:
    the reader catches up when the next record (the flush marker) is written."""

    def __init__(self, tmp_path: Path, late: str):
        self.console, self.splats = _Console(), SplatLog()
        self.workdir, self.retired, self._late = tmp_path / "m0", None, late
        self.ssh, self.flushed_at = self, None
        self.ssh_commands: int | None = 0        # Machine's: None before the first connection
        self.last_test = None
        self.status = "running"
        self.qmp = SimpleNamespace(execute=lambda cmd, **kw: {"status": self.status})
        self.qmp_log = tmp_path / "qmp.log"
        self.console.size = 0

    def act(self) -> None:
        self.ssh_commands += 1

    def alive(self) -> bool:
        return True

    def run(self, command: str, timeout: float = 60):
        self.ssh_commands += 1
        for s in scan(self._late, "console", self.workdir / "console.log"):
            self.splats.add(s)
        self.console.lines.append(command.split("'")[1][3:])       # the marker's text
        return SimpleNamespace(check=lambda: None)

    def wait_until(self, predicate, timeout, what, interval=0.5, **kw):
        assert predicate(), what
        return True


def test_a_splat_printed_during_a_test_but_read_after_it_is_claimed_by_it(tmp_path):
    m = _Machine(tmp_path, WARN)
    item = _item("t.py::test_late", tmp_path, machines=[m])
    rep = _report()
    judging.judge_splats(item, rep)
    assert rep.outcome == "failed" and "splat_warn" in rep.longrepr, rep
    assert [p for p in item.user_properties if p[0] == "console_flush_s"]
    rec = [json.loads(ln) for ln in (tmp_path / "splats.jsonl").read_text().splitlines()]
    assert [(r["when"], r["test"]) for r in rec] == [("test", "t.py::test_late")]


def test_a_machine_nothing_acted_on_since_its_last_flush_is_not_flushed_again(tmp_path):
    m = _Machine(tmp_path, "")
    assert isinstance(judging.flush_console(m), float)
    assert judging.flush_console(m) is None        # a test that only read an agent run
    m.act()                                      # a test that ran a command
    assert isinstance(judging.flush_console(m), float)


def test_a_machine_that_cannot_say_is_not_flushed(tmp_path):
    m = _Machine(tmp_path, WARN)
    m.ssh_commands = None                    # never reached over ssh
    assert judging.flush_console(m) is None
    m.ssh_commands, m.console.fatal_index = 0, 3     # crashed
    assert judging.flush_console(m) is None
    m.console.fatal_index, m.status = None, "suspended"
    assert judging.flush_console(m) is None


def test_a_splat_no_test_claimed_makes_the_exit_status_non_zero(tmp_path):
    recs = [{"target": "debian:7.2/arm64", "when": "between", "test": "t::a", "kind": "warning",
             "title": "WARNING: x", "log": "c.log", "line": 3, "allowed": None},
            {"target": "debian:7.2/arm64", "when": "test", "test": "t::b", "kind": "warning",
             "title": "WARNING: y", "log": "c.log", "line": 9, "allowed": None},
            {"target": "debian:7.2/arm64", "when": "between", "test": "t::c",
             "kind": "warning", "title": "WARNING: z", "log": "c.log", "line": 20,
             "allowed": "known defect"}]
    assert report_mod.unowned_splats(recs) == recs[:1]
    (tmp_path / "splats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    config = SimpleNamespace(getoption=lambda o, d=None: {"splats": "fail"}.get(o, d),
                             stash={})
    rep = report_mod.Reporter(config, tmp_path)
    session = SimpleNamespace(exitstatus=pytest.ExitCode.OK)
    rep.pytest_sessionfinish(session)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED


def test_an_agent_run_splat_fails_every_test_that_reads_the_run(tmp_path):
    from harness.plugin.suite import SuiteHost

    class Host(SuiteHost):
        AGENT = "psci"

    splats = SplatLog()
    m = SimpleNamespace(splats=splats, alive=lambda: False, console=None)

    def agent(name, **kw):
        for s in scan(WARN, "console", tmp_path / "console.log"):
            splats.add(s)
        return {"results": [], "env": {}}
    m.agent = agent
    host = Host(machine=m)
    kernel = SimpleNamespace(release="7.2.13+deb14-arm64", debian=("sid", "7.2.13-1"))
    verdicts = []
    for n in (1, 2):
        item = _item(f"t.py::test_{n}", tmp_path)
        host.serve(SimpleNamespace(node=item), kernel)
        item.stash[judging.MACHINES] = []     # judge only what the reader was given
        rep = _report()
        judging.judge_splats(item, rep)
        verdicts.append(rep.outcome)
    assert verdicts == ["failed", "failed"]


# ------------------------------------------------------------------ the VMM's MMIO

def test_an_mmio_exit_no_device_claims_fails_the_run_and_its_relaunch():
    ok = {"pl011": 1481, "pl031": 33}
    l2_fixtures.all_mmio_claimed(_run("", "done", mmio_exits=ok))
    with pytest.raises(pytest.fail.Exception, match=r"L2 run honour: 3 MMIO exits .* "
                                                    r"expected 0 \(here: /r/l2-0\)"):
        l2_fixtures.all_mmio_claimed(_run("", "done", mmio_exits={**ok, "unclaimed": 3}))
    relaunched = _run("", "done", mmio_exits=ok,
                      relaunch={"mmio_exits": {**ok, "unclaimed": 1}})
    with pytest.raises(pytest.fail.Exception, match=r"L2 run honour \(relaunch\): 1 MMIO"):
        l2_fixtures.all_mmio_claimed(relaunched)


# ------------------------------------------------------------------ resume state

def _suspend_run(killed="1 ", errors="0", online="0-1", exits_n="1", stopped=True):
    vcpus = [{"vcpu": 0, "mp_state": "RUNNABLE"},
             {"vcpu": 1, "mp_state": "STOPPED" if stopped else "RUNNABLE"}]
    exits = [{"event": "setup", "ram_mib": 256, "t": 0.0},
             {"event": "system-event", "type": "SUSPEND", "vcpu": 0, "x1": "0x40100000",
              "x2": "0x0", "vcpus": vcpus, "t": 5.0}]
    return _run("", "up uptime=2 cpus=2 release=7.2", f"offlined killed={{{killed}}} errors={errors}",
                "resumed rc=0 err={} rtc_s=10 alarm_left={} marker=kept sleeper=running",
                f"pm entry={{PM: suspend entry (deep)}} exits={exits_n} cpus_online={online}",
                exits=exits)


def test_the_vmm_report_of_stopped_vcpus_is_checked_against_l2s_own():
    suspend._one_suspend_exit(_suspend_run())
    for bad in (_suspend_run(killed=""), _suspend_run(errors="1")):
        with pytest.raises(AssertionError, match="took down CPUs"):
            suspend._one_suspend_exit(bad)


def test_a_secondary_cpu_that_did_not_come_back_fails_the_resume():
    suspend._guest_resumed(_suspend_run(), "deep")
    with pytest.raises(AssertionError, match="CPUs '0' online, booted with 2"):
        suspend._guest_resumed(_suspend_run(online="0"), "deep")
    with pytest.raises(AssertionError, match="2 'PM: suspend exit' lines"):
        suspend._guest_resumed(_suspend_run(exits_n="2"), "deep")


# ------------------------------------------------------------------ the judges can FAIL

def _recorded(name: str) -> L2Run:
    """An L2 run recorded by tests/e2e/test_l2_faults.py (or the family run): the VMM's
    result.json; the L2 reports are the exit log's `l2-report` records."""
    result = json.loads((GOLDEN / "l2" / "faults" / f"{name}.json").read_text())
    console = "".join(f"[    9.000000] guestpm-l2: {e['text']}\n" for e in result["exits"]
                      if e["event"] == "l2-report")
    return L2Run(name, result, console, f"golden l2/faults/{name}.json")


def test_the_l2_judges_pass_the_recorded_honest_runs():
    run = _recorded("honour")
    ev = suspend._one_suspend_exit(run)
    suspend._woken_by_the_alarm(run, ev, run.system_events("WAKEUP")[0]["t"])
    suspend._restarted_at_the_entry_point(run, ev, "wakeup exit")
    suspend._guest_resumed(run, "deep")
    hold = _recorded("hold")
    suspend._restarted_at_the_entry_point(hold, suspend._one_suspend_exit(hold), "vmm wake")
    suspend._guest_resumed(hold, "deep")
    off2 = json.loads((GOLDEN / "l2" / "hibernate-7.2-vhe.json").read_text())
    hib = L2Run("hibernate", off2, "", "golden l2/hibernate-7.2-vhe.json")
    hibernate._flagged_off2(hib, hib.system_events("SHUTDOWN")[0])


# Each fault applied to a recorded honest run as the VMM applies it (policy.FAULTS,
# vmm/arm64/psci_policy.py): the records the fault changes, nothing else.  What L2 said
# afterwards is kept from the honest run, so these show the judges that read the VMM's
# report; tests/e2e/test_l2_faults.py shows the same through KVM.

def _faulted(name: str, fault: str, edit) -> L2Run:
    run = _recorded(name)
    result = copy.deepcopy(run.result)
    result["fault"] = fault
    edit(result["exits"], result)
    console = "".join(f"[    9.000000] guestpm-l2: {e['text']}\n" for e in result["exits"]
                      if e["event"] == "l2-report")
    return L2Run(f"{name} + {fault}", result, console, f"golden l2/faults/{name}.json + {fault}")


def _one(exits, event):
    return next(e for e in exits if e["event"] == event)


def test_woken_by_the_alarm_fails_when_the_vmm_wakes_at_once():
    def at_once(exits, result):         # hold: the wake follows the SUSPEND exit at once
        held, wake, restart = (_one(exits, k) for k in ("suspend-held", "vmm-wake", "restart"))
        wake["t"] = restart["t"] = held["t"]
        wake["by"] = "nothing (fault wake-at-once)"
    run = _faulted("hold", "wake-at-once", at_once)
    with pytest.raises(AssertionError, match="the wake must follow the alarm"):
        suspend._woken_by_the_alarm(run, run.system_events("SUSPEND")[0],
                                    run.events("vmm-wake")[0]["t"])


def test_restarted_at_the_entry_point_fails_on_the_pc_kvm_holds():
    def wrong_pc(exits, result):        # KVM holds what the VMM wrote, one insn off
        restart = _one(exits, "restart")
        restart["pc"] += 4
        restart["wrote"]["pc"] += 4
    run = _faulted("honour", "wrong-pc", wrong_pc)
    ev = suspend._one_suspend_exit(run)
    with pytest.raises(AssertionError, match="KVM holds pc=.*the call asked for pc=x1="):
        suspend._restarted_at_the_entry_point(run, ev, "wakeup exit")


def _left_on(exits, result, seen: str) -> None:
    """The run of a guest booted with maxcpus=1 beside a vCPU left on: L2 has one CPU
    and takes none down; the VMM saw vCPU 1 as `seen`."""
    for e in exits:
        if e["event"] == "l2-report" and e["text"].startswith("up "):
            e["text"] = e["text"].replace("cpus=2", "cpus=1")
        if e["event"] == "l2-report" and e["text"].startswith("offlined "):
            e["text"] = "offlined killed={} errors=0"
        if e["event"] == "system-event" and e["type"] == "SUSPEND":
            e["vcpus"][1]["mp_state"] = seen


def test_one_suspend_exit_fails_with_a_vcpu_on_whether_the_vmm_says_so_or_not():
    def honest(exits, result):          # the VMM sees it RUNNABLE and DENIES
        _left_on(exits, result, "RUNNABLE")
        _one(exits, "suspend-refused")["why"] = "vCPUs not OFF: {1: 'RUNNABLE'}"
    with pytest.raises(AssertionError, match="expected all STOPPED"):
        suspend._one_suspend_exit(_faulted("deny", "", honest))
    lie = _faulted("honour", "stopped-lie", lambda exits, r: _left_on(exits, r, "STOPPED"))
    with pytest.raises(AssertionError, match=r"saw vCPUs \[1\] STOPPED .* took down CPUs \[\]"):
        suspend._one_suspend_exit(lie)


def test_the_off2_flag_check_fails_when_the_vmm_ignores_the_flag():
    result = json.loads((GOLDEN / "l2" / "hibernate-7.2-vhe.json").read_text())
    result.update(fault="ignore-off2", off2=False, detail="powered off")
    result["relaunch"]["because"] = "forced (the VMM was not told)"
    run = L2Run("hibernate + ignore-off2", result, "", "golden l2/hibernate-7.2-vhe.json")
    down = run.system_events("SHUTDOWN")[0]
    assert down["data"][0] & 1                           # KVM did flag it
    with pytest.raises(AssertionError, match="the VMM read it as off2=False"):
        hibernate._flagged_off2(run, down)


# ------------------------------------------------------------------ release promises

def test_psci_floors_by_release():
    assert [floor_of(v) for v in ((5, 10), (5, 17), (5, 18), (6, 1),
                                                    (6, 12), (6, 13), (7, 2))] == \
        [(1, 0), (1, 0), (1, 1), (1, 1), (1, 1), (1, 3), (1, 3)]


def test_a_host_that_promises_the_cap_fails_instead_of_skipping():
    cap = "KVM_CAP_ARM_SYSTEM_SUSPEND absent: this host KVM cannot forward PSCI " \
          "SYSTEM_SUSPEND to the VMM"
    assert "where KVM_CAP_ARM_SYSTEM_SUSPEND was merged" in promise_broken(cap, "7.2.13+deb14-arm64")
    assert promise_broken(cap, "5.18.0-1-arm64") is None            # older: a SKIP
    assert promise_broken(cap, None) is None                         # unknown: a SKIP
    refused = "this host KVM refuses PSCI version 1.2 (EINVAL); its PSCI version is 1.1"
    assert promise_broken(refused, "6.12.48+deb13-arm64") is None
    assert "promises PSCI 1.3" in promise_broken(refused, "7.2.13+deb14-arm64")


def test_a_host_psci_below_1_3_fails_on_a_release_that_promises_it():
    """The L2 hibernation test on a host whose KVM gave the VMM PSCI 1.2: a SKIP on
    6.12 (SYSTEM_OFF2 came in 6.13), a FAIL naming the merge on 7.2 (a broken build)."""
    probe = "host PSCI version 1.2 < 1.3: SYSTEM_OFF2 absent"

    def host(release, config=None):
        return SimpleNamespace(release=release, config_options=lambda: config or {})
    with pytest.raises(pytest.skip.Exception, match="SYSTEM_OFF2 absent"):
        l2_judge.host_lacks("system_off2", probe, host("6.12.48+deb13-arm64"))
    with pytest.raises(pytest.fail.Exception) as e:
        l2_judge.host_lacks("system_off2", probe, host("7.2.0-guestpm", {"CONFIG_KVM": "y"}))
    assert "promised by the L1 host's release 7.2.0-guestpm: merged in 6.13" in str(e.value)
    assert probe in str(e.value) and "config read" in str(e.value)
    # KVM ran the L2 guest: with no config to read, nothing turns it off either
    with pytest.raises(pytest.fail.Exception, match="the kernel shows KVM"):
        l2_judge.host_lacks("system_off2", probe, host("7.2.0-guestpm"))


def test_the_off2_probe_reads_the_code_path_and_says_when_the_release_decided():
    def probe(said, release):
        return hibernate._off2_in_guest(_run("", f"kallsyms psci_sys_hibernate={said}"),
                                        release)
    assert probe("yes", "6.12.48+deb13-arm64")[0] is True        # backported: runs
    assert probe("no", "6.12.48+deb13-arm64")[0] is False
    with pytest.raises(AssertionError, match=">= 6.13, where SYSTEM_OFF2 was merged"):
        probe("no", "7.2.13+deb14-arm64")
    has, why = probe("absent", "7.2.13+deb14-arm64")
    assert has and "no /proc/kallsyms" in why and "decided by its release" in why
    assert probe("absent", "6.1.0-40-arm64")[0] is False


def test_a_fresh_l2_boot_that_found_an_image_is_not_fresh():
    downs = [{"event": "system-event", "type": "SHUTDOWN", "vcpu": 0}]
    ok = _run("", "fresh rc=0 device=pmem0 err={} resume_lines=0", "swap rc=0 out={}",
              "hibernating", exits=downs)
    hibernate._hibernated(ok)
    said = _run("[   3.0] PM: hibernation: resume from hibernation\n",
                "fresh rc=0 device=pmem0 err={} resume_lines=1", "swap rc=0 out={}",
                "hibernating", exits=downs)
    with pytest.raises(AssertionError, match="resume from hibernation"):
        hibernate._hibernated(said)


def test_each_l2_judge_fails_on_the_report_its_fault_left_through_kvm():
    """The reports tests/e2e/test_l2_faults.py left on a 7.2 VHE host (recorded)."""
    run = _recorded("wake-at-once")
    with pytest.raises(AssertionError, match="never fired|the wake must follow the alarm"):
        suspend._woken_by_the_alarm(run, run.system_events("SUSPEND")[0],
                                    run.events("vmm-wake")[0]["t"])
    run = _recorded("wrong-pc")
    ev = suspend._one_suspend_exit(run)
    with pytest.raises(AssertionError, match="KVM holds pc=0x424ff08c"):
        suspend._restarted_at_the_entry_point(run, ev, "wakeup exit")
    suspend._guest_resumed(run, "deep")         # L2 itself resumed none the wiser
    with pytest.raises(AssertionError, match=r"were \{1: 'RUNNABLE'\}, expected all STOPPED"):
        suspend._one_suspend_exit(_recorded("vcpu-left-on"))
    with pytest.raises(AssertionError, match=r"saw vCPUs \[1\] STOPPED .* took down CPUs \[\]"):
        suspend._one_suspend_exit(_recorded("stopped-lie"))
    run = _recorded("ignore-off2")
    with pytest.raises(AssertionError, match="the VMM read it as off2=False"):
        hibernate._flagged_off2(run, hibernate._hibernated(run))


# ------------------------------------------------------------------ one boot, three calls

THREE_CALLS = [
    {"t": 0.1, "event": "setup", "ram_mib": 256},
    {"t": 20.0, "event": "rtc-alarm-set", "in_s": 10},
    {"t": 21.0, "event": "system-event", "type": "SUSPEND", "vcpu": 0},
    {"t": 21.0, "event": "suspend-refused", "call": 1, "x0": "DENIED"},
    {"t": 23.0, "event": "rtc-alarm-set", "in_s": 0},
    {"t": 23.1, "event": "rtc-alarm-set", "in_s": 10},
    {"t": 24.0, "event": "system-event", "type": "SUSPEND", "vcpu": 0},
    {"t": 24.0, "event": "suspend-held", "call": 2},
    {"t": 33.1, "event": "vmm-wake", "vcpu": 0},
    {"t": 33.1, "event": "restart", "why": "vmm wake"},
    {"t": 36.0, "event": "rtc-alarm-set", "in_s": 10},
    {"t": 37.0, "event": "system-event", "type": "SUSPEND", "vcpu": 0},
    {"t": 37.0, "event": "suspend-in-kvm", "call": 3},
    {"t": 46.0, "event": "system-event", "type": "WAKEUP", "vcpu": 0},
    {"t": 46.0, "event": "restart", "why": "wakeup exit"},
    {"t": 50.0, "event": "system-event", "type": "SHUTDOWN", "vcpu": 0},
]


def _three_calls() -> L2Run:
    reports = ["up cpus=2", "psci PSCIv1.1 detected in firmware", "mem_sleep={s2idle [deep]}"]
    for n, rc in ((1, "1"), (2, "0"), (3, "0")):
        reports += [f"attempt n={n}", "suspending alarm=+10", f"resumed rc={rc}",
                    f"pm entry={{PM: suspend entry (deep)}} exits=1 mark=n{n}"]
    return _run("[   1.000000] Booting Linux\n", *reports, "done", exits=THREE_CALLS)


@pytest.mark.parametrize("k, events, rc", [
    (1, ["setup", "rtc-alarm-set", "system-event", "suspend-refused"], "1"),
    (2, ["setup", "rtc-alarm-set", "rtc-alarm-set", "system-event", "suspend-held", "vmm-wake",
         "restart"], "0"),
    (3, ["setup", "rtc-alarm-set", "system-event", "suspend-in-kvm", "system-event", "restart",
         "system-event"], "0"),
])
def test_each_suspend_of_one_boot_reads_as_a_run_of_its_own(k, events, rc):
    one = _three_calls().attempt(k)
    assert [e["event"] for e in one.result["exits"]] == events
    assert one.report("up") == {"cpus": "2"} and one.report("resumed") == {"rc": rc}
    assert one.report("pm")["mark"] == f"n{k}" and one.report("attempt") == {"n": str(k)}
    assert not any(r.startswith("attempt") and r != f"attempt n={k}" for r in one.reports)
    assert one.has("done") is (k == 3) and one.name == f"honour (attempt {k})"


def test_an_attempt_the_boot_never_reached_has_no_exits_and_no_reports():
    run = _three_calls()
    run.console_text = run.console_text.split("guestpm-l2: attempt n=2")[0]
    run.result["exits"] = THREE_CALLS[:4]
    two = run.attempt(2)
    assert [e["event"] for e in two.result["exits"]] == ["setup"]
    assert not two.has("resumed") and two.has("up")


def test_a_test_that_reads_some_vms_of_a_run_answers_for_those_only(tmp_path):
    """The mismatch test reads the round trip's first and third VMs: a restore (the
    second) that oopsed or splatted is the round-trip test's to answer for."""
    restore_log = tmp_path / "relaunch" / "console.log"
    splats = scan(WARN, "L2 console", restore_log)
    run = L2Run("hibernate", {"outcome": "shutdown", "detail": "", "exits": [],
                              "relaunch": {"console_tail": OOPS},
                              "relaunch_copy": {"console_tail": "guestpm-l2: done\n"}},
                "guestpm-l2: up\n", "here", None, splats)
    assert [vm.name for vm, _ in run.crashes()] == ["hibernate (relaunch)"] and run.splats
    third = run.only("relaunch_copy")
    assert [vm.name for vm in third.vms()] == ["hibernate", "hibernate (relaunch-copy)"]
    assert third.crashes() == [] and third.splats == [] and third.relaunch is None
    assert third.relaunch_copy.has("done")
