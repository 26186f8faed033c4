"""The userland layer's standard-library bytecode (harness/image/rootfs.py)."""

import marshal
import sys

from harness.image import rootfs

HOST = "python" + sys.implementation.cache_tag.removeprefix("cpython-").replace("3", "3.", 1)


def test_the_guests_stdlib_gets_unchecked_bytecode_with_guest_paths(tmp_path):
    lib = tmp_path / "usr" / "lib" / HOST
    (lib / "json").mkdir(parents=True)
    (lib / "json" / "__init__.py").write_text("VALUE = 42\n")
    other = tmp_path / "usr" / "lib" / "python3.1"      # another version: left alone
    other.mkdir()
    (other / "old.py").write_text("X = 1\n")

    rootfs.compile_stdlib(tmp_path)

    pyc = lib / "json" / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    data = pyc.read_bytes()
    flags = int.from_bytes(data[4:8], "little")
    assert flags == 0b01, "hash-based and unchecked: the guest never reads the source"
    code = marshal.loads(data[16:])
    assert code.co_filename == f"/usr/lib/{HOST}/json/__init__.py"
    assert not (other / "__pycache__").exists()
