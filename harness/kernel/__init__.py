"""Kernels under test: where they come from (Debian's archive, a path, a tree we
build with merged Kconfig fragments) and bisecting between two of them."""
