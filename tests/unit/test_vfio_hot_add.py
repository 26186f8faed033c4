"""The vfio family's device without an ACPI companion is hot-added once per machine: a
failed hot-add is reported with its cause to every case that needs it, instead of a
second device_add that QEMU can only refuse ("Duplicate device ID")."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import profiles
from harness.errors import GuestpmError, WaitTimeout

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("e2e_test_vfio", ROOT / "tests" / "e2e" /
                                               "test_vfio.py")
assert _spec is not None and _spec.loader is not None
vfio_e2e = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vfio_e2e        # its dataclasses look their module up
_spec.loader.exec_module(vfio_e2e)


class NeverEnumerates:
    """A guest that never lists the hot-added e1000e, and whose kernel says why."""
    console_log = Path("/results/console.log")

    def __init__(self):
        self.device_adds = 0
        self.qmp = SimpleNamespace(execute=self._execute)
        self.ssh = SimpleNamespace(run=self._run)

    def _execute(self, cmd, **kw):
        assert cmd == "device_add"
        self.device_adds += 1
        if self.device_adds > 1:
            raise AssertionError("Duplicate device ID 'gpm_vfio1'")

    def _run(self, cmd):
        out = ("acpi PNP0A08:00: _OSC: not requesting OS control; OS requires "
               "[ExtendedConfig ASPM ClockPM MSI]") if "_OSC" in cmd else ""
        return SimpleNamespace(output=out, check=lambda: SimpleNamespace(output=""))

    def wait_until(self, predicate, timeout, what, fail=None, **kw):
        assert not predicate()
        raise WaitTimeout(fail())


def test_a_failed_hot_add_is_not_tried_again_and_names_its_cause():
    m = NeverEnumerates()
    host = vfio_e2e.VfioHost(machine=m, kernel=None, profile=profiles.X86_64_Q35)
    with pytest.raises(WaitTimeout, match="did not enumerate.*ExtendedConfig"):
        _ = host.no_companion
    with pytest.raises(GuestpmError, match="missing on this machine: the guest did not "
                                            "enumerate.*ExtendedConfig"):
        _ = host.no_companion
    assert m.device_adds == 1
