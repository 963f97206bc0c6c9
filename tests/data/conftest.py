"""Synthetic dataset roots shared by the data tests (written once per session, copied before breaking).

They live in RAM (``/dev/shm``) when available: these tests create thousands of small files, and
file creation on some CI disks costs about a millisecond each.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from metric_retrieval.data.synth import write_synthetic


@pytest.fixture(scope="session")
def fast_dir():
    """A session-wide scratch folder, in RAM when possible; removed at the end."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="data-tests-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fast_tmp(fast_dir, request):
    """A per-test scratch folder inside :func:`fast_dir`."""
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40].replace("/", "_") + "-", dir=fast_dir))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_root(fast_dir):
    """``synth_root(layout, **kw)`` → a pristine synthetic root (cached per parameters); do not modify it."""
    cache: dict[tuple, Path] = {}

    def get(layout: str, **kw) -> Path:
        key = (layout, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = write_synthetic(layout, fast_dir / "synth" / f"{layout}_{len(cache)}", **kw)
        return cache[key]

    return get


@pytest.fixture
def synth_copy(synth_root, fast_tmp):
    """``synth_copy(layout, **kw)`` → a private copy of a synthetic root that a test may break."""

    def get(layout: str, **kw) -> Path:
        dst = fast_tmp / f"{layout}_{len(list(fast_tmp.iterdir()))}"
        shutil.copytree(synth_root(layout, **kw), dst)
        return dst

    return get
