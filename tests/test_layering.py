"""The layering of docs/design.md, checked by import-linter's contracts in pyproject.toml.

Runs ``lint-imports`` (the ``import-linter`` package, part of the ``test`` extra) on this checkout,
and once on a copy with a forbidden import added, so a contract that could never fail would show.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint_imports(root: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``omnireid`` package and ``pyproject.toml`` found in ``root``."""
    env = {**os.environ, "PYTHONPATH": root}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())", "--no-cache", "--no-logo"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and " 0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    shutil.copytree(os.path.join(REPO, "omnireid"), tmp_path / "omnireid",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path / "pyproject.toml")
    baseline = tmp_path / "omnireid" / "modeling" / "meta_arch" / "baseline.py"
    baseline.write_text(baseline.read_text() + "\nfrom omnireid.engine import hooks  # noqa: E402,F401\n")
    result = lint_imports(str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a model never imports the trainer" in result.stdout and "BROKEN" in result.stdout
    assert "omnireid.modeling.meta_arch.baseline -> omnireid.engine.hooks" in result.stdout
