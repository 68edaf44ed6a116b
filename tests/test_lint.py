"""Lint and type checks: ruff and mypy, configured in pyproject.toml, report nothing.

Both run as the test extra installs them (``ruff``, ``mypy`` and the stubs in setup.py).
No Spark. mypy keeps its cache in .mypy_cache/ (a cold run takes ~30 s, a warm one ~2 s).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What ruff checks (the same as a bare ``ruff check`` in the repository: pyproject.toml
#: leaves tests/ and bench/ out).
RUFF_PATHS = ["curation_spark", "jobs", "notebooks", "setup.py"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_reports_nothing():
    result = _run(["ruff", "check", "--no-fix", *RUFF_PATHS])
    assert result.returncode == 0, f"ruff check {' '.join(RUFF_PATHS)}:\n{result.stdout}\n{result.stderr}"


def test_mypy_reports_nothing():
    result = _run(["mypy"])  # files and settings: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, f"mypy:\n{result.stdout}\n{result.stderr}"
