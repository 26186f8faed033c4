"""arm64 suspend-to-RAM through PSCI SYSTEM_SUSPEND with a real guest kernel under a
real KVM: the kernel under test boots as the L1 host (QEMU virt with EL2, VHE and
nVHE) and, inside it, as an L2 guest of guestpm's reference VMM
(harness/guest/vmm), which does the VMM's side of the call as api.rst asks.

An L2 boot runs one scenario (its /init reports `guestpm-l2: ...` lines over the
console); with the cap, one boot suspends three times, the VMM denying, holding and
honouring in turn (an L2 boot costs 20-40 s here: docs/figures.md), and each test reads
its own call.  Every test asserts both sides: the VMM's exit log and what the L2
kernel said.  The L2 kernel is the L1 kernel unless --guest-kernel names
another."""

from __future__ import annotations

import json

import pytest

from harness.guest import psci
from harness.image import fixture_modules
from harness.kernel.kernels import release_version
from harness.plugin import history
from harness.plugin.judging import note
from harness.plugin.targets import ROOT
from harness.progress import progress
from harness.vm import l2
from harness.vm.l2 import L2Host, L2Run

# nVHE cells on the newest default host and on your own kernel; on the older stock hosts
# they are opt-in (--all-l2-modes): CI time, 4 L2 boots and 2 L1 hosts
pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64"),
              pytest.mark.l2_mode_hosts("nvhe", "debian:7.2")]

# long enough for a loaded host: an alarm that fires before the SUSPEND call aborts the
# suspend (EBUSY; docs/figures.md, "Figures behind code comments")
ALARM_S = 10
RAM = 0x4000_0000
FIXTURE = ROOT / "tests" / "fixtures" / "splat"


SUSPEND = ("guestpm.mem_sleep=deep", f"guestpm.alarm={ALARM_S}")
# the VMM's policy for each suspend of the boot with the cap, in order
CALLS = ("deny", "hold", "honour")


def suspended(host: L2Host) -> L2Run:
    """The L2 boot with KVM_CAP_ARM_SYSTEM_SUSPEND that suspends once per policy of
    CALLS, in that order."""
    return host.run("suspend", "--suspend", ",".join(CALLS),
                    append=(f"guestpm.suspend={len(CALLS)}", *SUSPEND))


def call(host: L2Host, policy: str) -> L2Run:
    """The suspend made under `policy`: its exits and reports, as if the boot had made
    only that call."""
    return suspended(host).attempt(CALLS.index(policy) + 1)


def without_the_cap(host: L2Host) -> L2Run:
    return host.run("off", "--suspend", "off",
                    append=("guestpm.suspend=1", f"guestpm.alarm={ALARM_S}"))


def _one_suspend_exit(run: L2Run) -> dict:
    """Exactly one SUSPEND exit, from the boot vCPU, with every other vCPU already off
    (Linux offlines them before SYSTEM_SUSPEND, as DEN0022 5.19.2 asks) and x1 an
    entry point inside the guest's RAM."""
    got = run.system_events("SUSPEND")
    assert len(got) == 1, f"expected one SUSPEND exit, got {len(got)}:\n{run.log()} ({run.where})"
    ev = got[0]
    assert ev["vcpu"] == 0, f"SUSPEND came from vCPU {ev['vcpu']}, not the boot vCPU ({run.where})"
    others = {s["vcpu"]: s["mp_state"] for s in ev["vcpus"] if s["vcpu"] != 0}
    assert others and set(others.values()) == {"STOPPED"}, \
        f"at the SUSPEND exit the other vCPUs were {others}, expected all STOPPED ({run.where})"
    # the VMM's report against L2's own: the CPUs its kernel took down before the call
    said = run.report("offlined")
    killed = {int(c) for c in said.get("killed", "").split()}
    assert killed == set(others) and said.get("errors") == "0", \
        f"the VMM saw vCPUs {sorted(others)} STOPPED at the SUSPEND exit; the L2 kernel " \
        f"says it took down CPUs {sorted(killed)} with {said.get('errors')} errors: {said} " \
        f"({run.where})"
    ram = run.events("setup")[0]["ram_mib"] << 20
    assert RAM <= int(ev["x1"], 16) < RAM + ram, \
        f"x1 = {ev['x1']} is outside the guest's RAM [{RAM:#x}, {RAM + ram:#x}) ({run.where})"
    return ev


def _restarted_at_the_entry_point(run: L2Run, ev: dict, why: str) -> dict:
    restarts = run.events("restart")
    assert len(restarts) == 1 and restarts[0]["why"] == why, \
        f"expected one restart ({why}), got {restarts} ({run.where})"
    r = restarts[0]
    # what KVM holds after the reset and the writes (KVM_GET_ONE_REG), against the call
    assert (hex(r["pc"]), hex(r["x0"]), r["mp_state"]) == (ev["x1"], ev["x2"], "RUNNABLE"), \
        f"after the restart ({why}) KVM holds pc={r['pc']:#x} x0={r['x0']:#x} " \
        f"{r['mp_state']}; the call asked for pc=x1={ev['x1']} x0=x2={ev['x2']}, RUNNABLE " \
        f"(the VMM wrote {r['wrote']}) ({run.where})"
    return r


def _woken_by_the_alarm(run: L2Run, ev: dict, wake_t: float) -> None:
    armed = run.events("rtc-alarm-set")
    fired = run.events("rtc-alarm-fired")
    assert armed and fired, f"the L2 RTC alarm was never armed or never fired: " \
                            f"{armed} {fired} ({run.where})"
    assert ev["t"] < fired[-1]["t"] <= wake_t, \
        f"SUSPEND at {ev['t']} s, alarm at {fired[-1]['t']} s, wake at {wake_t} s: the wake " \
        f"must follow the alarm ({run.where})"
    asleep = wake_t - ev["t"]
    expected = armed[-1]["in_s"] - (ev["t"] - armed[-1]["t"])
    assert expected - 1.5 <= asleep <= expected + 3, \
        f"suspended {asleep:.1f} s; the alarm was due {expected:.1f} s after the SUSPEND " \
        f"exit ({run.where})"
    # L2's own clock across `echo mem` (whole seconds) against the VMM's account
    rtc_s = int(run.report("resumed").get("rtc_s", -1))
    assert rtc_s >= int(asleep) - 1, \
        f"the VMM says the vCPU slept {asleep:.1f} s; L2's RTC moved {rtc_s} s across " \
        f"`echo mem` ({run.where})"


def _guest_resumed(run: L2Run, mode: str) -> None:
    said = run.report("resumed")
    assert said.get("rc") == "0", f"`echo mem` in L2 returned {said} ({run.where})"
    assert (said.get("marker"), said.get("sleeper")) == ("kept", "running"), \
        f"L2 lost its state across the suspend: {said} ({run.where})"
    assert said.get("alarm_left") == "", f"the L2 RTC alarm is still armed: {said} ({run.where})"
    assert int(said.get("rtc_s", 0)) >= ALARM_S - 1, \
        f"L2's RTC moved {said.get('rtc_s')} s across the suspend, less than the " \
        f"{ALARM_S} s alarm ({run.where})"
    pm = run.report("pm")
    assert pm.get("entry") == f"PM: suspend entry ({mode})", f"L2: {pm} ({run.where})"
    # Linux only warns when a secondary CPU does not come back, and `echo mem` still
    # returns 0: every CPU it booted with is online again, after one suspend
    cpus = int(run.report("up").get("cpus", 0))
    want = "0" if cpus == 1 else f"0-{cpus - 1}"
    assert pm.get("cpus_online") == want, \
        f"after resume L2 has CPUs {pm.get('cpus_online')!r} online, booted with {cpus} " \
        f"({want}): {pm} ({run.where})"
    assert pm.get("exits") == "1", \
        f"L2 logged {pm.get('exits')} 'PM: suspend exit' lines for one `echo mem`: {pm} " \
        f"({run.where})"
    run.assert_ended()


def test_l2_boots_and_sees_the_psci_version_l1_gave_it(request, l1):
    run = suspended(l1)
    assert run.report("up").get("cpus") == "2", f"L2 brought up {run.reports[:1]} ({run.where})"
    version = run.result["psci_version"]
    said = next((r for r in run.reports if r.startswith("psci")), "")
    assert f"PSCIv{version} detected in firmware" in said, \
        f"the VMM gave PSCI {version}; the L2 kernel said {said!r} ({run.where})"
    # an absolute floor, not KVM against itself: the host's release promises a version
    host = l1.machine.kernel
    release = release_version(host.release)
    assert release, f"no version in the host's release {host.release!r}"
    floor, got = psci.floor_of(release), _psci(version)
    assert got >= floor, \
        f"host {host.release}: KVM gave a new VM PSCI {version}, below the " \
        f"{history.dotted(floor)} its release promises ({run.where})"
    if got > floor:
        assert host.debian is None, \
            f"stock host {host.release}: KVM gave PSCI {version}, upstream " \
            f"{'.'.join(map(str, release))} gives {history.dotted(floor)} ({run.where})"
        note(request, f"{l1.mode}: KVM gives a new VM PSCI {version}, above the "
                      f"{history.dotted(floor)} of upstream {host.release}")


def _psci(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def test_l2_offers_deep_only_with_the_cap(l1):
    cap = suspended(l1)
    with_cap = cap.report("mem_sleep")["mem_sleep"].split()
    assert "deep" in with_cap or "[deep]" in with_cap, \
        f"with KVM_CAP_ARM_SYSTEM_SUSPEND, L2's mem_sleep is {with_cap}: no deep " \
        f"({cap.where})"
    off = without_the_cap(l1)
    without = off.report("mem_sleep")["mem_sleep"].split()
    assert not {"deep", "[deep]"} & set(without), \
        f"without the cap L2 offers {without}: PSCI_FEATURES(SYSTEM_SUSPEND) must fail " \
        f"({off.where})"


def test_l2_suspend_honoured_in_kvm_wakes_on_the_rtc_alarm(l1):
    run = call(l1, "honour")
    ev = _one_suspend_exit(run)
    assert [e["event"] for e in run.events("suspend-in-kvm")] == ["suspend-in-kvm"] and \
        run.events("suspend-in-kvm")[0]["mp_state"] == "SUSPENDED", \
        f"the VMM did not leave vCPU 0 SUSPENDED in KVM ({run.where})"
    wakes = run.system_events("WAKEUP")
    assert len(wakes) == 1 and wakes[0]["vcpu"] == 0, \
        f"expected one WAKEUP exit from vCPU 0, got {wakes}:\n{run.log()} ({run.where})"
    _woken_by_the_alarm(run, ev, wakes[0]["t"])
    _restarted_at_the_entry_point(run, ev, "wakeup exit")
    _guest_resumed(run, "deep")


def test_l2_suspend_held_by_the_vmm_exits_once_and_resumes_at_the_entry_point(l1):
    """The VMM keeps the vCPU out of KVM_RUN until the L2 alarm is due, then restarts it
    itself.  What KVM does here: one SUSPEND exit with the call in x1/x2 and every other
    vCPU STOPPED, and, after KVM_ARM_VCPU_INIT and the writes, holding the entry point and
    the context (read back) and running the guest from there: L2 resumes.  Nothing is
    asserted about a WAKEUP exit, which cannot happen outside KVM_RUN, nor about the
    VMM's own wait, beyond what L2 saw: its RTC moved the alarm's length and the alarm
    was consumed (_guest_resumed)."""
    run = call(l1, "hold")
    ev = _one_suspend_exit(run)
    _restarted_at_the_entry_point(run, ev, "vmm wake")
    _guest_resumed(run, "deep")


def test_l2_suspend_denied_fails_the_write_with_eperm(l1):
    run = call(l1, "deny")
    _one_suspend_exit(run)
    refused = run.events("suspend-refused")
    assert [r["x0"] for r in refused] == ["DENIED"], f"{refused} ({run.where})"
    assert not run.events("restart"), \
        f"the VMM restarted a vCPU at x1 after denying: {run.events('restart')} ({run.where})"
    said = run.report("resumed")
    assert said.get("rc") == "1" and "Operation not permitted" in said.get("err", ""), \
        f"after DENIED, L2's `echo mem` should fail with EPERM; it said {said} ({run.where})"
    run.assert_ended()


def test_l2_without_the_cap_takes_s2idle_and_no_suspend_exit(l1):
    run = without_the_cap(l1)
    assert not run.system_events("SUSPEND") and not run.system_events("WAKEUP"), \
        f"without the cap KVM must not exit for SUSPEND:\n{run.log()} ({run.where})"
    _guest_resumed(run, "s2idle")


SPINNER = ("import struct; open('/tmp/spin.img', 'wb').write(struct.pack("
           "'<II QQQ QQQ II', 0x14000000, 0, 0, 1 << 21, 0, 0, 0, 0, 0x644D5241, 0) "
           "+ bytes(4096))")


def test_a_guest_that_never_prints_is_ended_by_the_vmm_bound(l1):
    """An arm64 Image whose first instruction branches to itself: the guest never prints.
    The VMM ends it at its silence bound (exit 3, one JSON line), says where the vCPU
    stood (at that branch: the Image's 2 MiB-aligned load address in RAM) and nothing of
    it stays running in L1."""
    r = l1.machine.ssh.run(
        f'python3 -c "{SPINNER}" && cd /opt/guestpm && python3 -m harness.guest.vmm '
        "--kernel /tmp/spin.img --suspend off --silent 5 --timeout 60 --vcpus 1; "
        "echo rc=$?; pgrep -f '^python3 -m harness.guest.vmm' || echo none-left", timeout=120)
    lines = r.output.strip().splitlines()
    assert lines[-2:] == ["rc=3", "none-left"], f"VMM on a silent guest: {r.output}{r.stderr}"
    result = json.loads(lines[-3])
    assert result["outcome"] == "silent" and result["elapsed_s"] < 30, result
    assert "printed nothing in 5 s" in result["detail"], result
    stuck = [e for e in result["exits"] if e["event"] == "stuck"]
    assert [e["vcpu"] for e in stuck] == [0], f"expected where vCPU 0 stood: {stuck}"
    pc = int(stuck[0]["pc"], 16)
    assert RAM <= pc < RAM + (256 << 20) and pc % (1 << 21) == 0, \
        f"the spinning vCPU stood at {stuck[0]['pc']}, not at the Image's first " \
        f"instruction (2 MiB aligned in RAM at {RAM:#x}): {stuck}"


SPLAT_LAYER = "/tmp/l2-splat.cpio"


@pytest.mark.harness_selftest
@pytest.mark.slow
@pytest.mark.l2_mode_hosts("nvhe")
def test_l2_splats_reach_the_harness_even_from_a_hung_guest(l1, profile):
    """The L2 kernel's level-4 records reach the harness as they are logged: the splat
    fixture module, in L2's initramfs, WARNs at load (before /init's reports) and again
    on demand just before /init's last report, after which L2 hangs until the VMM's
    bound ends it.  Both WARNINGs are read with their call traces (level 4 too, which
    `quiet` hid), the boot's info lines are not (the UART does not carry the whole log),
    and every test that reads the run gets them."""
    try:
        ko = fixture_modules.build(FIXTURE, l1.guest, profile.deb_arch, progress)
    except fixture_modules.Unbuildable as e:
        pytest.skip(f"the splat fixture module cannot be built: {e}")
    l1.machine.ssh.put(l2.fixture_layer("guestpm_splat", ko.read_bytes(), "at_load=warn"),
                       SPLAT_LAYER)
    reads: list[L2Run] = []
    l1.on_read = reads.append           # this test judges the run itself
    run = l1.run("splat", "--suspend", "off", "--initrd-extra", SPLAT_LAYER,
                 append=("guestpm.splat=warn", "guestpm.off=none"), timeout=120)
    again = l1.run("splat", "--suspend", "off", "--initrd-extra", SPLAT_LAYER,
                   append=("guestpm.splat=warn", "guestpm.off=none"), timeout=120)
    # ours, not the machine's: claimed here so that they do not fail this test
    taken = l1.machine.splats.claim()
    assert all(not s.own for s in taken), \
        f"the L1 host splatted: {[s.quote() for s in taken if s.own]}"
    assert reads == [run, again] and again is run, "a second read must be the cached run"
    assert run.result["outcome"] == "timeout", \
        f"L2 was to hang after its last report: {run.ending()}"
    warns = [s for s in run.splats if s.kind == "warning"]
    lines = run.console().replace("\r", "").split("\n")
    at = {key: next((i + 1 for i, ln in enumerate(lines) if f"guestpm-l2: {key}" in ln), None)
          for key in ("up", "splat", "done")}
    assert run.report("splat").get("rc") == "0", run.report("splat")
    assert len(warns) == 2, f"expected the two WARNINGs (at load, before the end), got " \
                            f"{[s.title for s in run.splats]} ({run.where})"
    for s in warns:
        assert s.trace() and any("splat_warn" in t for t in s.trace()), \
            f"the WARNING's call trace (level 4) did not reach the console:\n{s.quote()}"
    assert warns[0].line < at["splat"] and at["up"] < warns[1].line < at["done"], \
        f"WARNINGs at console lines {[s.line for s in warns]}, reports at {at} ({run.where})"
    assert "Booting Linux on physical CPU" not in run.console(), \
        f"level-6 boot records reach the L2 console: the whole log pays the UART ({run.where})"
