"""The s2idle SSDT's build and its debug-port channel; disks; the stand-in's build gate."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import SetupError, WaitTimeout
from harness.image import aml, disks, fixture_modules
from harness.kernel import kernels
from harness.vm import debugcon

GOLDEN = Path(__file__).parent / "golden" / "acpi"
needs_iasl = pytest.mark.skipif(not shutil.which("iasl"), reason="iasl (acpica-tools) absent")


def test_missing_iasl_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda cmd: None)
    with pytest.raises(SetupError, match="iasl not found: apt-get install acpica-tools"):
        aml.compile_asl(aml.ASL_DIR / "s2idle.asl")


def test_asl_errors_keep_the_diagnostics_and_drop_the_banner():
    out = (GOLDEN / "iasl-syntax-error.txt").read_text()
    kept = aml.asl_errors(out).splitlines()
    assert kept[0] == "/tmp/mm/bad.asl(54) : error    6126 - syntax error"
    assert not any("Compiler aborting" in ln or "Intel ACPI" in ln for ln in kept)
    assert kept[-1].startswith("No AML files were generated")


@needs_iasl
def test_the_shipped_ssdt_compiles_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    out = aml.compile_asl(aml.ASL_DIR / "s2idle.asl")
    assert out.read_bytes()[:4] == b"SSDT"
    assert b"PNP0D80" in out.read_bytes() and b"HYPE0001" in out.read_bytes()
    assert aml.compile_asl(aml.ASL_DIR / "s2idle.asl") == out


@needs_iasl
def test_an_ssdt_that_does_not_compile_shows_the_compiler_message(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.asl"
    bad.write_text((aml.ASL_DIR / "s2idle.asl").read_text().replace(
        "Return (0x0F)", "Return (0x0F", 1))
    with pytest.raises(aml.AslError) as e:
        aml.compile_asl(bad)
    assert f"{bad}(" in str(e.value) and "syntax error" in str(e.value)
    assert "/tmp/guestpm-iasl-" not in str(e.value)     # the user's path, not our scratch copy


def test_qemu_args_attach_the_table_and_the_debug_port(tmp_path, monkeypatch):
    monkeypatch.setattr(debugcon, "compile_asl", lambda src: tmp_path / "s2idle-x.aml")
    assert debugcon.s2idle_qemu_args() == (
        "-acpitable", f"file={tmp_path}/s2idle-x.aml",
        "-chardev", "file,id=gpmacpi,path=acpi-debugcon.log",
        "-device", "isa-debugcon,iobase=0xe9,chardev=gpmacpi")


def test_debugcon_tap_reads_lines_as_they_arrive(tmp_path):
    log = tmp_path / "d.log"
    tap = debugcon.DebugconTap(log)
    assert tap.poll() == []                          # QEMU has not created it yet
    log.write_bytes(b"lps0 3\nlps0 7\nlps0")
    assert [ln.text for ln in tap.poll()] == ["lps0 3", "lps0 7"]
    with open(log, "ab") as fh:
        fh.write(b" 5\n\nhype 1\n")
    assert [ln.text for ln in tap.poll()] == ["lps0 5", "hype 1"]
    assert tap.texts(2) == ["lps0 5", "hype 1"]
    assert tap.wait_for(lambda t: "hype 1" in t, 1, "x", lambda: None) == tap.texts()


def test_debugcon_wait_names_what_is_missing_and_what_came(tmp_path):
    log = tmp_path / "d.log"
    log.write_bytes(b"lps0 3\n")
    with pytest.raises(WaitTimeout, match=r"LPS0 entry did not reach .* received "
                                               r"\['lps0 3'\]"):
        debugcon.DebugconTap(log).wait_for(lambda t: False, 0.2, "LPS0 entry", lambda: None)


def test_the_standin_needs_a_debian_kernel(tmp_path):
    k = kernels.Kernel("path:/x/bzImage", "x86_64", Path("/x/bzImage"), "7.2.0", None, None,
                       "/x/bzImage")
    with pytest.raises(fixture_modules.Unbuildable, match="not a stock Debian kernel"):
        fixture_modules.build(Path(__file__).parents[1] / "fixtures" / "vpmc_standin", k, "amd64")


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img (qemu-utils) absent")
def test_swap_overlay_is_fresh_and_backed_by_the_cached_base(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    base = disks.swap_base(size_mb=16)
    assert base.read_bytes()[4096 - 10:4096] == b"SWAPSPACE2"
    ov = disks.overlay(base, tmp_path / "t" / "swap.qcow2")
    info = subprocess.run(["qemu-img", "info", str(ov)], capture_output=True, text=True).stdout
    assert f"backing file: {base}" in info
    assert disks.virtio_disk_args(ov) == (
        "-drive", f"if=none,id=swap,file={ov},format=qcow2",
        "-device", "virtio-blk-pci,drive=swap")


def test_a_standin_build_that_hangs_is_killed_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "extmod").mkdir(parents=True)
    monkeypatch.setattr(shutil, "which", lambda cmd: f"/usr/bin/{cmd}")

    def hang(cmd, **kw):
        kw["stdout"].write("I: downloading packages with apt...\n")
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])
    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(SetupError, match=r"(?s)failed \(mmdebstrap exit none: killed after "
                                         r"900 s\); log .*-failed\.log:\n.*downloading"):
        fixture_modules.build_in_chroot("m", [], "7.2.0-amd64", "sid", "7.2-1", "amd64",
                                        tmp_path, print)


def _fake_mmdebstrap(tmp_path, monkeypatch) -> list:
    """An amd64 host whose mmdebstrap 'builds' m.ko; the commands it was given."""
    monkeypatch.setattr(shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    monkeypatch.setattr(profiles, "host_deb_arch", lambda: "amd64")
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        (tmp_path / "m.ko").write_bytes(b"\x7fELF")
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(subprocess, "run", run)
    return seen


def test_a_fixture_for_another_arch_is_built_with_debian_s_cross_compiler(tmp_path,
                                                                          monkeypatch):
    """arm64 headers on an amd64 host: a multiarch chroot whose headers package pulls
    gcc-N-for-host:arm64 (the cross compiler); make gets ARCH and CROSS_COMPILE."""
    seen = _fake_mmdebstrap(tmp_path, monkeypatch)
    fixture_modules.build_in_chroot("m", [], "7.2.13+deb14-arm64", "sid", "7.2.13-1", "arm64",
                                    tmp_path, print)
    (cmd,) = seen
    assert "--architectures=amd64,arm64" in cmd
    assert "--include=make,binutils,linux-headers-7.2.13+deb14-arm64:arm64=7.2.13-1" in cmd
    assert any(a.endswith("M=/build ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules")
               for a in cmd), cmd


def test_a_backports_kernels_fixture_builds_with_its_base_suite_too(tmp_path, monkeypatch):
    """trixie-backports' headers need make and gcc from trixie: the chroot has both
    suites, the base one first (mmdebstrap's SUITE), the headers pinned to the version."""
    seen = _fake_mmdebstrap(tmp_path, monkeypatch)
    fixture_modules.build_in_chroot("m", [], "7.3.4+bpo-amd64", "trixie-backports",
                                    "7.3.4-1~bpo13+1", "amd64", tmp_path, print)
    (cmd,) = seen
    i = cmd.index("/dev/null")
    assert cmd[i - 1] == "trixie"
    assert [a.split()[-2] for a in cmd[i + 1:]] == ["trixie", "trixie-backports"]
    assert "--include=make,binutils,linux-headers-7.3.4+bpo-amd64=7.3.4-1~bpo13+1" in cmd
    assert fixture_modules.chroot_suites("sid") == ["sid"]
    assert fixture_modules.chroot_suites("bookworm-backports") == ["bookworm", "bookworm-backports"]


def test_a_root_build_without_mount_stops_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "mount" else f"/usr/bin/{cmd}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SetupError, match=r"mount not found .*apt-get install mount"):
        fixture_modules.build_in_chroot("m", [], "7.2.0-amd64", "sid", "7.2-1", "amd64",
                                        tmp_path, print)


@needs_iasl
def test_the_vfio_notify_ssdt_extends_qemus_slot_device(tmp_path, monkeypatch):
    """It declares _PS0, _PS3 and GPMN in the scope of q35's slot-9 device and takes
    the device itself from QEMU's DSDT (External), not from a Device () of its own."""
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    table = aml.compile_asl(aml.ASL_DIR / "vfio_notify.asl").read_bytes()
    assert table[:4] == b"SSDT"
    assert all(name in table for name in (b"_PS0", b"_PS3", b"GPMN", b"S48_"))
    assert b"\x5b\x82" not in table         # DeviceOp: nothing is declared twice


def test_a_kbuild_names_its_module_whatever_follows(tmp_path):
    """The stand-in's Kbuild probes headers on lines after obj-m; the name is obj-m's."""
    src = Path(__file__).parents[1] / "fixtures" / "vfio_acpi_standin"
    assert fixture_modules.module_name(src) == "guestpm_vfio_acpi_standin"
    (tmp_path / "Kbuild").write_text("ccflags-y += -DX\n")
    with pytest.raises(SetupError, match="no `obj-m := NAME.o` line"):
        fixture_modules.module_name(tmp_path)
