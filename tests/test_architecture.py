"""The architecture contract (import-linter): imports point only down the data-flow layers
declared in pyproject.toml, and an upward import breaks the contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cellmorph

ROOT = Path(__file__).parents[1]
PACKAGE = Path(cellmorph.__file__).parent


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", command, "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_layers_contract_is_kept() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def test_importing_the_package_root_breaks_the_contract(tmp_path: Path) -> None:
    """The root re-exports the API; a module that imported it would point back up."""
    copy = tmp_path / "src" / "cellmorph"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    plots = copy / "reporting" / "plots.py"
    plots.write_text(plots.read_text() + "\nfrom cellmorph import __version__  # noqa: E402,F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    res = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert res.returncode != 0
    assert "Nothing imports the package root" in res.stdout and "BROKEN" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "cellmorph"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    schema = copy / "schema.py"
    schema.write_text(schema.read_text() + "\nfrom cellmorph import cli  # noqa: E402,F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    res = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and "cellmorph.schema -> cellmorph.cli" in res.stdout
