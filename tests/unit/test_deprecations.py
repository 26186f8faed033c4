"""guestpm's own code stays clean of what newer Pythons deprecate.

The unit tests run with DeprecationWarnings from harness modules as errors
(pyproject.toml filterwarnings); these tests check that the filter is in force and
that no call Python 3.13 deprecates is left in paths the unit tests do not reach."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# module-level re functions whose count/maxsplit/flags became keyword-only in 3.13:
# the number of positional arguments they may still take
RE_POSITIONAL = {"split": 2, "sub": 3, "subn": 3}


def positional_re_calls(source: str) -> list[int]:
    """Lines of re.split/sub/subn calls that pass count, maxsplit or flags by position."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                and len(node.args) > RE_POSITIONAL.get(node.func.attr, len(node.args))):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_positional_maxsplit_and_count():
    src = ('import re\nre.split(r"[ =]", s, 1)\nre.split(r"x", s, maxsplit=1)\n'
           're.sub("a", "b", s, 2)\nre.subn("a", "b", s, count=2)\nre.compile("a").split(s, 1)\n')
    assert positional_re_calls(src) == [2, 4]


def test_no_harness_module_passes_re_counts_by_position():
    found = {str(p.relative_to(ROOT)): lines
             for p in sorted((ROOT / "harness").rglob("*.py"))
             if (lines := positional_re_calls(p.read_text()))}
    assert found == {}, f"positional count/maxsplit (deprecated in Python 3.13): {found}"


def test_a_deprecation_in_harness_code_is_an_error():
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("old", DeprecationWarning, "l2.py", 1, module="harness.vm.l2")


def test_a_deprecation_elsewhere_stays_a_warning():
    with pytest.warns(DeprecationWarning):
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="paramiko.client")
