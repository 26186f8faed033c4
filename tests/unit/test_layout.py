"""The test tree itself: every test module has a basename of its own.

tests/unit and tests/e2e are not packages (the unit tests import their helpers, such as
cgolden, as top-level modules), so pytest imports each test file under its basename;
a second file of the same name anywhere under tests/ stops the whole collection."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_have_unique_basenames():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
