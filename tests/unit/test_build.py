"""`guestpm build` pure logic: toolchain choice and missing-package messages, tree
checks, cache keys, the failure excerpt of a real failed build log (golden)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import profiles
from harness.errors import KernelError, SetupError
from harness.kernel import build, kconfig, kernels

G = Path(__file__).parent / "golden" / "build"
ALL = {"make", "gcc", "flex", "bison", "bc", "perl", "git", "aarch64-linux-gnu-gcc",
       "aarch64-linux-gnu-ld", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-ld"}


def which_but(*missing: str):
    return lambda tool: None if tool in missing or tool not in ALL else f"/usr/bin/{tool}"


def test_arm64_on_x86_uses_debians_cross_compiler():
    tc = build.toolchain("arm64", which=which_but("ccache"), host_machine="x86_64")
    assert tc.make_vars() == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    tc = build.toolchain("x86_64", which=which_but(), exists=lambda p: True,
                         host_machine="x86_64")
    assert tc.make_vars() == ["ARCH=x86_64"]


def test_ccache_wraps_the_compiler_when_present():
    which = lambda t: f"/usr/bin/{t}" if t in ALL | {"ccache"} else None
    tc = build.toolchain("arm64", which=which, host_machine="x86_64")
    assert tc.make_vars()[-1] == "CC=/usr/bin/ccache aarch64-linux-gnu-gcc"
    assert tc.env()["CCACHE_DEPEND"] == "1"
    assert build.toolchain("arm64", which=which, host_machine="x86_64",
                           use_ccache=False).ccache is None


def test_a_missing_cross_compiler_names_its_package():
    with pytest.raises(SetupError) as e:
        build.toolchain("arm64", which=which_but("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-ld",
                                                 "flex"), host_machine="x86_64")
    assert str(e.value) == (
        "cannot build for arm64: missing flex (flex), aarch64-linux-gnu-gcc "
        "(gcc-aarch64-linux-gnu), aarch64-linux-gnu-ld (gcc-aarch64-linux-gnu); "
        "install with `apt-get install flex gcc-aarch64-linux-gnu`")


def test_x86_builds_need_libelf_for_objtool():
    with pytest.raises(SetupError, match=r"/usr/include/gelf.h \(libelf-dev\)"):
        build.toolchain("x86_64", which=which_but(), exists=lambda p: False,
                        host_machine="x86_64")


def test_a_custom_prefix_is_not_guessed_into_a_package():
    with pytest.raises(SetupError, match=r"missing my-gcc \(a toolchain providing my-gcc\), "
                                         r"my-ld \(a toolchain providing my-gcc\)$"):
        build.toolchain("arm64", cross_compile="my-", which=which_but(), host_machine="x86_64")


def _tree(tmp_path: Path) -> Path:
    t = tmp_path / "linux"
    (t / "scripts/kconfig").mkdir(parents=True)
    (t / "Makefile").write_text("# SPDX\nVERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\n"
                                "EXTRAVERSION =\n")
    (t / "Kconfig").write_text("")
    (t / "scripts/kconfig/merge_config.sh").write_text("")
    return t


def test_tree_checks(tmp_path):
    t = _tree(tmp_path)
    assert build.tree_version(t) == "7.2.13"
    with pytest.raises(build.BuildError, match=r"is not a Linux kernel tree \(no top-level "
                                               r"Makefile\): pass --tree"):
        build.tree_version(tmp_path)
    with pytest.raises(build.BuildError, match="no such directory"):
        build.tree_version(tmp_path / "nope")
    (t / "arch/arm64/include/generated").mkdir(parents=True)
    with pytest.raises(build.BuildError, match="configured in place.*make mrproper"):
        build.check_source_clean(t, "arm64")
    build.check_source_clean(t, "x86")


def test_build_key_follows_fragment_content(tmp_path):
    t = _tree(tmp_path)
    frag = tmp_path / "mine.config"
    frag.write_text("CONFIG_KVM=y\n")
    tc = build.toolchain("arm64", which=which_but(), host_machine="x86_64")
    k1 = build.build_key(t, "arm64", "allnoconfig", [frag], tc)
    assert k1 == build.build_key(t, "arm64", "allnoconfig", [frag], tc)
    assert k1 != build.build_key(t, "arm64", "defconfig", [frag], tc)
    frag.write_text("CONFIG_KVM=y\nCONFIG_DEBUG_KERNEL=y\n")
    assert k1 != build.build_key(t, "arm64", "allnoconfig", [frag], tc)
    frag.write_text("# a comment, reworded or not, rebuilds nothing\nCONFIG_KVM=y\n\n")
    assert k1 == build.build_key(t, "arm64", "allnoconfig", [frag], tc)


def test_failed_build_log_is_reduced_to_its_errors():
    log = (G / "failed-build.log").read_text()
    assert build.error_excerpt(log) == (G / "failed-build.excerpt").read_text().splitlines()


def test_build_spec_selects_a_build_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "b"
    (d / "obj/arch/arm64/boot").mkdir(parents=True)
    (d / "obj/arch/arm64/boot/Image").write_bytes(b"\0" * 0x38 + b"ARM\x64" + b"\0" * 64)
    (d / "obj/.config").write_text("CONFIG_KVM=y\n")
    (d / "build.json").write_text(json.dumps({
        "tree": "/src/linux", "arch": "arm64", "release": "7.2.13-guestpm",
        "image": "arch/arm64/boot/Image", "modules": None,
        "git": {"describe": "v7.2-3-gabc", "head": "abc", "subject": "x"}}))
    k = kernels.resolve(f"build:{d}", profiles.get("arm64"))
    assert (k.image, k.release, k.modules) == (d / "obj/arch/arm64/boot/Image",
                                               "7.2.13-guestpm", None)
    assert k.config_options()["CONFIG_KVM"] == "y"
    assert "v7.2-3-gabc" in k.origin
    with pytest.raises(KernelError, match="is a build for arm64, not x86_64"):
        kernels.resolve(f"build:{d}", profiles.get("x86_64"))
    with pytest.raises(KernelError, match=r"no guestpm build at .* for arm64: run `guestpm build"):
        kernels.resolve(f"build:{tmp_path}", profiles.get("arm64"))


def test_default_roles_exist_for_both_arches():
    for arch in build.KBUILD:
        assert kconfig.fragment_paths(arch, kconfig.DEFAULT_ROLES)


def test_cli_build_without_the_cross_compiler_names_the_package(tmp_path, monkeypatch, capsys):
    """The real lookup (PATH), through the command line: only the host tools are there."""
    import shutil

    from harness import cli
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in build.HOST_TOOLS:
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(build.os, "uname", lambda: type("U", (), {"machine": "x86_64"})())
    rc = cli.main(["build", "--tree", str(_tree(tmp_path)), "--arch", "arm64"])
    err = capsys.readouterr().err
    assert rc == 2
    # the host tools this machine lacks (flex, bison, ...) are named first, if any
    assert re.search(r"missing (\S+ \(\S+\), )*aarch64-linux-gnu-gcc \(gcc-aarch64-linux-gnu\)",
                     err), err
    assert re.search(r"apt-get install (\S+ )*gcc-aarch64-linux-gnu", err), err


def test_a_debian_source_without_xz_names_the_package_before_downloading(monkeypatch, tmp_path):
    """linux-source-X.Y is a .tar.xz inside the .deb: without xz (a minimal trixie) the
    unpacking died after the download with tar's "xz: Cannot exec"."""
    from harness.errors import SetupError
    from harness.kernel import debian_sources
    monkeypatch.setenv("GUESTPM_CACHE", str(tmp_path))
    monkeypatch.setattr(debian_sources.shutil, "which",
                        lambda t: None if t == "xz" else f"/usr/bin/{t}")
    monkeypatch.setattr(debian_sources.aptrepo, "AptRepo",
                        lambda *a, **k: pytest.fail("downloaded before checking for xz"))
    with pytest.raises(SetupError, match=r"needs xz \(xz-utils\).*guestpm setup --build-tools"):
        debian_sources.source("7.2")
    assert "xz-utils" in build.build_packages("arm64")
