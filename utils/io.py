"""Atomic file writes: a run killed at any moment leaves the old file or the complete new one, never a torn one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target folder, ``fsync``, then ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def torch_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file (zip archive or legacy pickle), judged by its first bytes;
    None when it may be one. Catches the common mix-up of a YAML/text file given where weights are expected."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    if not head:
        return "is empty"
    looks = "text (a YAML or config file?)" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "another format"
    return f"is not a PyTorch file written by torch.save: it holds {looks}"
