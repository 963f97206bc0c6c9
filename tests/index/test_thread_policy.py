"""OMP_WAIT_POLICY=PASSIVE: set by every command line before torch loads, never over the user's own setting."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["train.py", "test.py", "index.py", "serve.py", "export.py"]


def _first_import(path: Path) -> ast.ImportFrom:
    tree = ast.parse(path.read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return next(node for node in imports if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"))


def test_the_command_package_imports_the_policy_first():
    first = _first_import(REPO / "metric_retrieval" / "cli" / "__init__.py")
    assert isinstance(first, ast.ImportFrom) and first.module == "metric_retrieval.utils"
    assert [a.name for a in first.names] == ["thread_policy"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_root_script_starts_with_the_command_package(script):
    """Importing ``metric_retrieval.cli.X`` runs ``metric_retrieval.cli`` (and so the policy) before X's imports."""
    tree = ast.parse((REPO / script).read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name for node in imports]
    first = next(n for n in names if n not in ("__future__", "sys"))  # nothing that loads torch comes before
    assert first.startswith("metric_retrieval.cli"), names


def test_the_policy_is_set_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys, os, metric_retrieval.cli; "
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_user_setting_wins(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import metric_retrieval.utils.thread_policy, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
