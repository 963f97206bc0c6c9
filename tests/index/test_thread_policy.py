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


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_policy_is_the_first_import(script):
    tree = ast.parse((REPO / script).read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    first = next(node for node in imports if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"))
    assert isinstance(first, ast.ImportFrom) and first.module == "metric_retrieval.utils"
    assert [a.name for a in first.names] == ["thread_policy"]


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_user_setting_wins(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import metric_retrieval.utils.thread_policy, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
