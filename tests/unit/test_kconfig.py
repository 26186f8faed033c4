"""Fragment merging and the survival check, against a miniature Kconfig tree
(tests/unit/golden/kconfig/tree) whose final .config is golden data."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kernel import kconfig, kconfig_db

G = Path(__file__).parent / "golden" / "kconfig"


def _lost(arch: str = "arm64") -> list[str]:
    req = kconfig.requested([G / "base.config", G / "user.config"])
    final = kconfig.parse_config((G / "final.config").read_text())
    db = kconfig_db.load_kconfig(G / "tree", arch)
    return [str(x).replace(str(G) + "/", "GOLDEN/") for x in kconfig.check(req, final, db, arch)]


def test_survival_check_explains_every_lost_option():
    assert _lost() == (G / "expected-lost.txt").read_text().splitlines()


def test_later_fragments_override_earlier_ones_and_say_so():
    req = kconfig.requested([G / "base.config", G / "user.config"])
    assert req.values["PCI_MSI"] == "n" and req.origin["PCI_MSI"].endswith("user.config")
    assert req.values["KVM"] == "y" and req.origin["KVM"].endswith("base.config")
    assert [o.replace(str(G) + "/", "") for o in req.overridden] == \
        ["CONFIG_PCI_MSI: y (base.config) -> n (user.config)"]


def test_kconfig_reader_follows_sources_and_skips_help_text():
    db = kconfig_db.load_kconfig(G / "tree", "arm64")
    assert "KVM" in db.defs and "ARM_GIC_V2M" in db.defs          # rsource, $(SRCARCH)
    assert "KVM_AMD" not in db.defs                                # x86 only
    assert "NOT_A_SYMBOL" not in db.defs                           # inside help text
    kvm = db.defs["KVM"][0]
    assert kvm.prompt and kvm.type == "tristate"
    assert kvm.depends == ["VIRTUALIZATION", "HAVE_KVM && PCI"]   # `if` block + continuation
    assert not db.defs["HIDDEN_HELPER"][0].prompt
    assert db.selects["PCI_MSI"] == [("ARM_GIC_V2M", "")]
    assert "KVM_AMD" in kconfig_db.load_kconfig(G / "tree", "x86").defs


@pytest.mark.parametrize("expr, want", [
    ("A", 2), ("M", 1), ("N", 0), ("!A", 0), ("!M", 1), ("A && M", 1), ("N || M", 1),
    ("(N || A) && !N", 2), ("A = y", 2), ("M = y", 0), ("M != n", 2), ("S = \"x\"", 2),
    ("I >= 10", 2), ("I < 0x10", 2), ("UNDEFINED", 0), ("", 2), ("$(cc-option,-m64)", 0),
])
def test_dependency_expressions_are_tristate(expr, want):
    cfg = {"A": "y", "M": "m", "N": "n", "S": "x", "I": "12"}
    assert kconfig_db.evaluate(expr, cfg) == want


def test_a_malformed_fragment_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.config"
    f.write_text("CONFIG_OK=y\nKVM=y\n")
    with pytest.raises(kconfig.FragmentError, match=r"bad.config:2: not a Kconfig line: 'KVM=y'"):
        kconfig.requested([f])


def test_roles_resolve_to_common_then_arch_fragments():
    names = [str(p.relative_to(kconfig.CONFIG_DIR)) for p in
             kconfig.fragment_paths("arm64", kconfig.DEFAULT_ROLES)]
    assert names == ["common/base.config", "arm64/base.config", "common/kvm-host.config",
                     "common/guest-pm.config", "arm64/guest-pm.config", "common/acpi.config",
                     "arm64/acpi.config", "common/vfio.config", "arm64/vfio.config"]
    with pytest.raises(kconfig.FragmentError, match="not a role .* and no such file"):
        kconfig.fragment_paths("arm64", ["no-such-role"])


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_shipped_fragments_parse_and_do_not_contradict_each_other(arch):
    req = kconfig.requested(kconfig.fragment_paths(arch, kconfig.ROLES))
    assert req.overridden == []
    assert req.values["KVM"] == "y" and req.values["PRINTK_TIME"] == "y"
