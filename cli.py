"""Console entry points of ``pip install -e .``: ``metric-retrieval-train``, ``-test`` and ``-data`` run
``train.py``, ``test.py`` and ``data_utils.py`` of this checkout exactly as ``python SCRIPT.py`` would.

The scripts are run by path because ``test`` is also the name of Python's own test package.
"""
from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _run(script: str) -> None:
    runpy.run_path(str(ROOT / script), run_name="__main__")


def train() -> None:
    _run("train.py")


def test() -> None:
    _run("test.py")


def data() -> None:
    _run("data_utils.py")
