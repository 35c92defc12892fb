"""The checkers pyproject.toml configures pass: ruff on the whole tree, mypy on the
package (LAYOUT.md: types are checked, ruff too). They run as tests so that the
suite stays the one thing a change must pass; `make lint` runs them alone.

A finding is fixed, or marked where it is meant: `# noqa: RULE - why` (the two
deliberate broad catches of STYLE.md, parsers fed hostile input), or, for mypy,
`# type: ignore[code]` where the stubs cannot say what the code relies on.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed in {sys.prefix}: run `make venv` (it is a test dependency)")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_reports_nothing():
    out = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_reports_nothing_in_the_package():
    out = _run("mypy")  # the package and the options: [tool.mypy] in pyproject.toml
    assert out.returncode == 0, out.stdout + out.stderr
