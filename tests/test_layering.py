"""The import contract in pyproject.toml ([tool.importlinter]) holds, and breaks when it should.

Each failing case copies the package to a temporary directory, adds one forbidden import and runs
``lint-imports`` on the copy with the project's own contract: a contract that let these through
would check nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([*LINT, "--no-cache", str(ROOT / "pyproject.toml")], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy_with(tmp_path: Path, additions: list[tuple[str, str]]) -> Path:
    shutil.copytree(ROOT / "prunekit", tmp_path / "prunekit", ignore=shutil.ignore_patterns("__pycache__"))
    for module, line in additions:
        path = tmp_path / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = tmp_path / module.replace(".", "/") / "__init__.py"
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    return tmp_path


def test_contract_holds_on_this_tree():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "0 broken" in res.stdout


FORBIDDEN = [  # (module, added line, the contract that must break, the import its report must show)
    # a lower layer importing a higher one
    ("prunekit.graph.groups", "import prunekit.cli", "prunekit layers", "prunekit.graph.groups -> prunekit.cli"),
    ("prunekit.training.loop", "import prunekit.structured", "prunekit layers",
     "prunekit.training.loop -> prunekit.structured"),
    # two independent layers importing each other
    ("prunekit.allocation", "import prunekit.sensitivity", "prunekit layers",
     "prunekit.allocation -> prunekit.sensitivity"),
    # a cycle inside one layer (measure already imports training)
    ("prunekit.training", "import prunekit.measure", "no import cycles", ".training -> .measure"),
    # a cycle between two modules of one package
    ("prunekit.graph._walk", "import prunekit.graph._fake", "no import cycles",
     "No cycles are allowed in prunekit.graph"),
    # a graph module that is not its public API
    ("prunekit.structured.apply", "from prunekit.graph.groups import Group", "prunekit.graph is used",
     "prunekit.structured.apply -> prunekit.graph.groups"),
    # a private module of another package
    ("prunekit.structured.apply", "from prunekit.graph._labels import Block", "private modules",
     "prunekit.structured.apply -> prunekit.graph._labels"),
]


@pytest.mark.parametrize("module, line, contract, shown", FORBIDDEN)
def test_contract_breaks_on_a_forbidden_import(tmp_path, module, line, contract, shown):
    res = _lint(_copy_with(tmp_path, [(module, line)]))
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    broken = [ln for ln in res.stdout.splitlines() if " BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), broken  # an upward import is also a cycle
    assert shown in res.stdout
