"""Foundation: the kernel under test boots in QEMU and is driven over QMP, console and ssh.

Each test reads evidence after acting; a kernel whose release, QMP status or
KVM state differs from what was asked for FAILS, showing both."""

import re
import secrets

import pytest

pytestmark = pytest.mark.e2e


def test_guest_runs_the_selected_kernel(machine, kernel):
    assert kernel.release, f"cannot tell which release {kernel.spec} is ({kernel.origin})"
    assert machine.boot.release == kernel.release, "release reported by /init on the console"
    assert machine.ssh.run("uname -r").check().output.strip() == kernel.release


def test_qmp_reports_running(machine):
    assert machine.qmp.execute("query-status")["status"] == "running"


def test_ssh_round_trip(machine):
    nonce = secrets.token_hex(8)
    r = machine.ssh.run(f"echo {nonce}; echo to-stderr >&2; exit 7")
    assert (r.status, r.output, r.stderr) == (7, f"{nonce}\n", "to-stderr\n")


def test_console_round_trip(machine):
    nonce = secrets.token_hex(8)
    r = machine.run(f"echo {nonce}; (exit 5)")
    assert (r.status, r.output.strip()) == (5, nonce), \
        f"kernel messages printed meanwhile (taken out of the output): {r.kernel}"


def test_kvm_works_in_the_guest(machine, profile, kernel_config):
    """arm64: KVM initialised at EL2 (virtualization=on); x86_64: kvm_amd on nested SVM.
    Evidence: the kernel log lines of the profile, the module, and /dev/kvm answering
    KVM_GET_API_VERSION and KVM_CREATE_VM from the guest agent."""
    facts = machine.agent("facts")
    log = machine.agent("dmesg")["lines"]
    for pattern in profile.kvm_evidence:
        assert any(re.search(pattern, line) for line in log), \
            f"no kernel log line matches {pattern!r}; KVM lines: " \
            f"{[ln for ln in log if 'kvm' in ln.lower()]}"
    built_in = kernel_config.get(
        f"CONFIG_{(profile.kvm_module or '').upper()}") == "y"
    if profile.kvm_module and not built_in:      # built in (a fragment build): the log says it
        assert profile.kvm_module in facts["modules"]
    kvm = facts["kvm"]
    assert (kvm["exists"], kvm.get("char_device"), kvm.get("major"), kvm.get("minor")) == \
        (True, True, 10, 232)
    assert (kvm.get("api_version"), kvm.get("create_vm")) == (12, "ok")
