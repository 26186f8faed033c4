"""arm64 suspend-to-RAM through PSCI SYSTEM_SUSPEND with a real guest kernel under a
real KVM: the kernel under test boots as the L1 host (QEMU virt with EL2, VHE and
nVHE) and, inside it, as an L2 guest of guestpm's reference VMM
(harness/guest/vmm), which does the VMM's side of the call as api.rst asks.

Each L2 boot runs one scenario (its /init reports `guestpm-l2: ...` lines over the
console) under one VMM policy; every test asserts both sides: the VMM's exit log and
what the L2 kernel said.  The L2 kernel is the L1 kernel unless --guest-kernel names
another."""

from __future__ import annotations

import gzip
import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from harness import disks
from harness.guest.vmm import l2init
from harness.machine import Machine
from harness.pytest_plugin import attach_machine

pytestmark = [pytest.mark.e2e, pytest.mark.arch("arm64")]

MODES = {"vhe": (), "nvhe": ("kvm-arm.mode=nvhe",)}
ALARM_S = 3
RAM = 0x4000_0000


@dataclass
class L2Run:
    """One L2 boot: the VMM's result (its exit log included) and the L2 reports."""
    policy: str
    result: dict
    reports: list[str]
    where: str
    stderr: str = ""

    def events(self, name: str) -> list[dict]:
        return [e for e in self.result["exits"] if e["event"] == name]

    def system_events(self, typ: str) -> list[dict]:
        return [e for e in self.events("system-event") if e["type"] == typ]

    def report(self, key: str) -> dict[str, str]:
        """The report line that starts with `key`, as key=value fields ([...] kept whole)."""
        line = next((r for r in self.reports if r.split(" ", 1)[0] == key), None)
        assert line is not None, f"the L2 guest never reported {key!r}; it said " \
                                 f"{self.reports} ({self.where})"
        return {k: v.strip("[]") for k, v in re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", line)}

    def log(self) -> str:
        keep = [e for e in self.result["exits"] if e["event"] not in ("setup",)]
        return "\n".join(json.dumps(e) for e in keep[-12:])


@dataclass
class L2Host:
    mode: str
    machine: Machine
    runs: dict = field(default_factory=dict)

    def run(self, policy: str, *append: str, timeout: float = 240) -> L2Run:
        """The reference VMM in L1, once per (policy, command line) per host machine."""
        key = (policy, append)
        if key not in self.runs:
            out = f"/tmp/l2-{policy}-{len(self.runs)}"
            cmd = (f"cd /opt/guestpm && python3 -m harness.guest.vmm --kernel /dev/vda "
                   f"--suspend {policy} --out {out} --timeout {timeout:g} "
                   f"--append {shlex.quote(' '.join(append))}")
            r = self.machine.ssh.run(cmd, timeout=timeout + 60)
            art = self.machine.workdir / f"l2-{self.mode}-{policy}-{len(self.runs)}"
            art.mkdir(parents=True, exist_ok=True)
            for name in ("exits.jsonl", "console.log"):
                got = self.machine.ssh.run(f"cat {out}/{name}", timeout=60)
                (art / name).write_text(got.output)
            where = f"VMM exit log and L2 console: {art}"
            if r.status == 4:
                pytest.skip(r.stderr.strip().removeprefix("vmm: "))
            assert r.status in (0, 3), f"the reference VMM failed (exit {r.status}): " \
                                       f"{r.stderr.strip()} ({where})"
            result = json.loads(r.output.strip().splitlines()[-1])
            console = (art / "console.log").read_text(errors="replace")
            self.runs[key] = L2Run(policy, result, l2init.reports(console), where, r.stderr)
        return self.runs[key]


def _image_bytes(kernel) -> bytes:
    data = kernel.image.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@pytest.fixture(scope="session", params=list(MODES))
def l2_host(request, machine_pool, kernel, guest_kernel) -> L2Host:
    disk = disks.payload(_image_bytes(guest_kernel), "l2-image")
    m = machine_pool.get(MODES[request.param], tag=f"l2-{request.param}",
                         qemu_args=disks.virtio_disk_args(disk, node="l2", fmt="raw",
                                                          readonly=True))
    return L2Host(request.param, m)


@pytest.fixture
def l2(request, l2_host) -> L2Host:
    attach_machine(request, l2_host.machine)
    return l2_host


def _assert_ended(run: L2Run) -> None:
    assert run.result["outcome"] == "shutdown", \
        f"L2 under policy {run.policy}: {run.result['outcome']} ({run.result['detail']}); " \
        f"last exits:\n{run.log()}\nL2 console tail:\n{run.result['console_tail'][-1500:]}\n" \
        f"({run.where})"


def test_l2_boots_and_sees_the_psci_version_l1_gave_it(l2):
    run = l2.run("honour", "guestpm.suspend=0")
    _assert_ended(run)
    said = run.report("psci")
    version = run.result["psci_version"]
    assert f"PSCIv{version} detected in firmware" in " ".join(said) + \
        " ".join(r for r in run.reports if r.startswith("psci")), \
        f"the VMM set PSCI {version}; the L2 kernel said {run.reports} ({run.where})"
