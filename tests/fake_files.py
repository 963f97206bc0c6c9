"""File objects that misbehave like a full disk, and a real small file system, for fault-injection tests of
atomic writes."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str, otherwise: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``"2m"``) mounted at ``path`` for the block; where mounting needs root the test
    is skipped, naming ``otherwise`` (what covers the logic there)."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root); {otherwise}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


class WrappedFile:
    """Opens ``fd`` for binary writing and forwards everything but ``write`` (which subclasses override)."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "wb")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
