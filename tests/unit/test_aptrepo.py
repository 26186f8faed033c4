from pathlib import Path

import pytest

from harness.errors import SetupError
from harness.kernel import aptrepo, kernels

GOLDEN = Path(__file__).parent / "golden"


def test_deb822_from_this_machine_golden():
    mirrors = aptrepo.parse_deb822((GOLDEN / "system-debian.sources").read_text(), "x.sources")
    # the security archive is not a kernel source; the main archive is, with its keyring
    assert [(m.uri, m.keyring) for m in mirrors] == [
        ("http://deb.debian.org/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")]


def test_deb822_disabled_and_inline_key():
    text = ("Types: deb\nURIs: http://a/debian\nSuites: trixie\nComponents: main\nEnabled: no\n\n"
            "Types: deb deb-src\nURIs: http://b/debian/\nSuites: sid\nComponents: main contrib\n"
            "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n xyz\n")
    assert [(m.uri, m.keyring) for m in aptrepo.parse_deb822(text, "f")] == [
        ("http://b/debian", aptrepo.DEFAULT_KEYRING)]


def test_one_line_format():
    text = ("deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n"
            "deb http://m/debian-security bookworm-security main\n"
            "# deb http://x/debian sid main\n"
            "deb https://packages.example/apt cloud-sdk main\n")
    assert [(m.uri, m.keyring) for m in aptrepo.parse_one_line(text, "f")] == [
        ("http://m/debian", "/k.gpg")]


def test_system_mirror_missing_is_one_clear_error(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(SetupError, match="no Debian 'main' source found"):
        aptrepo.system_mirror(tmp_path)


def test_hard_depends_skips_alternatives_and_versions():
    dep = ("dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, "
           "linux-base-7.2.13+deb14-arm64 (= 7.2.13-1), kmod:any")
    assert aptrepo.hard_depends(dep) == ["linux-base-7.2.13+deb14-arm64", "kmod"]


@pytest.mark.parametrize("suite,expected", [
    ("bookworm", ["linux-image-6.1.0-50-arm64"]),
    ("sid", ["linux-image-7.2.13+deb14-arm64", "linux-base-7.2.13+deb14-arm64",
             "linux-binary-7.2.13+deb14-arm64", "linux-modules-7.2.13+deb14-arm64"]),
])
def test_kernel_packages_from_golden_apt_cache_show(suite, expected):
    stanzas = {s["Package"]: s for s in aptrepo.parse_control(
        (GOLDEN / f"apt-show-{suite}-arm64.txt").read_text())}
    assert kernels.kernel_packages(lambda name: stanzas[name], "arm64") == expected
