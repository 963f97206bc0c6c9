"""File objects that misbehave like a full disk, for fault-injection tests of atomic writes."""
from __future__ import annotations

import os


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
