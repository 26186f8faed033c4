import hashlib
import io

from harness.guest.cpio import CpioWriter, read_names


def build() -> bytes:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("etc/guestpm")
    w.directory("etc")                 # again: no-op
    w.file("etc/guestpm/modules", b"kvm\nkvm_amd\n")
    w.directory("bin")
    w.symlink("bin/sh", "busybox")
    w.chardev("dev/console", 5, 1)
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.close()
    return buf.getvalue()


def test_names_and_alignment():
    data = build()
    assert read_names(data) == ["etc", "etc/guestpm", "etc/guestpm/modules", "bin", "bin/sh", "dev/console",
                               "init"]
    assert len(data) % 4 == 0


def test_reproducible_golden():
    # byte-identical output is what makes content-hash caching of layers work
    assert build() == build()
    assert hashlib.sha256(build()).hexdigest()[:16] == "f0afd1d4c40a85df"


def test_concatenated_archives_read_back():
    assert read_names(build() + build()).count("init") == 2


def test_tree_is_sorted_and_keeps_symlinks(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b/z").write_text("z")
    (tmp_path / "a").write_text("a")
    (tmp_path / "lnk").symlink_to("a")
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.tree(tmp_path)
    w.close()
    assert read_names(buf.getvalue()) == ["a", "lnk", "b", "b/z"]
