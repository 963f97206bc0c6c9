"""Safe files: atomic writes, payload checksums, and one clear error for a full disk.

* Atomic: a file is written to a uniquely named temporary file in the target folder, flushed to disk, then
  renamed over the target (``os.replace`` is atomic on POSIX), so a run killed at any moment leaves the old
  file or the complete new one, never a torn one (a kill leaves at most a ``.NAME.*.tmp`` file behind).
* Checksummed on the raw bytes: :func:`atomic_save` writes the SHA-256 of the file ``torch.save`` produced into
  the zip archive's comment (the file stays a standard zip that ``torch.load`` reads); :func:`load_verified`
  checks it on the bytes read from disk *before* anything is unpickled, so bytes overwritten inside a
  checkpoint, feature database, whitening file or shard are reported instead of loaded. Files written before
  this scheme carry a digest of their payload under :data:`CHECKSUM_KEY` instead, checked after loading.
* No code from files: every file is unpickled with ``torch.load(weights_only=True)``, which builds only
  tensors, numbers, strings and plain containers; the one legacy type set allowed besides
  (:data:`LEGACY_GLOBALS`, the numpy array of an old checkpoint's numpy RNG state) is allowed for that load only.
  Anything else is refused with a :class:`CorruptFileError` naming the file and the type it asks for.
* Disk full: a write that fails for lack of space (ENOSPC, EDQUOT; torch's zip writer reports it as
  ``RuntimeError: unexpected pos ...``) raises :class:`DiskFullError` naming the folder and the space needed.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from metric_retrieval.utils.errors import UserError

CHECKSUM_KEY = "sha256"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_COMMENT_TAG = b"metric-retrieval sha256:"
_COMMENT_LEN = len(_COMMENT_TAG) + 64
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, its last 2 the comment length
# the only non-plain types a file of this project ever held: an old checkpoint's numpy RNG state (an array)
LEGACY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class DiskFullError(UserError):
    """A write failed because its file system has no space (or quota) left."""


class CorruptFileError(UserError):
    """A file's payload does not match the checksum stored with it, or it cannot be unpickled."""


def payload_digest(obj: Any) -> str:
    """SHA-256 over a nested structure: tensors and arrays by dtype, shape and bytes, other leaves by ``repr``.

    Mapping order is part of the digest (it survives pickling), and the :data:`CHECKSUM_KEY` of the top
    level is left out, so ``payload_digest(load(path))`` equals the digest :func:`atomic_save` stored.
    """
    h = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            h.update(f"A{value.dtype}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).view(np.uint8).data if value.size else b"")
        elif isinstance(value, Mapping):
            h.update(b"{")
            for key, item in value.items():
                h.update(repr(key).encode())
                visit(item)
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[" if isinstance(value, list) else b"(")
            for item in value:
                visit(item)
            h.update(b"]")
        else:
            h.update(repr(value).encode())

    visit({k: v for k, v in obj.items() if k != CHECKSUM_KEY} if isinstance(obj, Mapping) else obj)
    return h.hexdigest()


def payload_bytes(obj: Any) -> int:
    """A lower bound of ``torch.save(obj)``'s size: the bytes of its tensors (what a disk-full message needs)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, Mapping):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0


def format_size(num_bytes: int) -> str:
    """``"12.3 MB"`` / ``"4.5 GB"`` (decimal units)."""
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def is_disk_full(err: BaseException, folder: Path, need: int) -> bool:
    """``err`` (or an error it chains) is ENOSPC/EDQUOT, or torch's writer failed with less space than ``need``."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(err, RuntimeError) and shutil.disk_usage(folder).free < need


TRAINING_REMEDY = "free some space (or move the run with --output_dir) and resume with --resume latest"


def disk_full_error(path: Path, need: int, remedy: str = TRAINING_REMEDY) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free
    return DiskFullError(f"no space left in {path.parent} while writing {path.name}: it needs about "
                         f"{format_size(need)}, {format_size(free)} are free; {remedy}")


def _open_temp(fd: int) -> IO[bytes]:
    """The temporary file's writer (one place, so that tests can make it fail like a full disk)."""
    return os.fdopen(fd, "wb")


def atomic_write(path: str | os.PathLike, write: Any, need: int = 0, previous: str | os.PathLike | None = None,
                 remedy: str = TRAINING_REMEDY) -> Path:
    """``write(file)`` into a unique temporary file next to ``path``, ``fsync``, then rename it over ``path``.

    ``previous``: where the file being replaced is moved first (kept as the last good copy). ``need``: the
    expected size, named in the :class:`DiskFullError` raised when the disk fills up, with ``remedy``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise disk_full_error(path, need, remedy) from None
        raise
    try:
        with _open_temp(fd) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and is_disk_full(err, path.parent, need):
            raise disk_full_error(path, need, remedy) from None
        raise
    return path


class _HashingWriter:
    """A binary file that also feeds every byte written to a SHA-256 (``torch.save`` only writes forward)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha, self.tail = f, hashlib.sha256(), b""

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.tail = (self.tail + bytes(data[-22:]))[-22:]
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _save_signed(obj: Any, f: IO[bytes]) -> None:
    """``torch.save(obj)`` into ``f``, then its SHA-256 into the zip comment (see the module docstring)."""
    writer = _HashingWriter(f)
    torch.save(obj, writer)
    if not (writer.tail.startswith(_EOCD) and writer.tail[-2:] == b"\0\0"):
        raise RuntimeError("torch.save did not end its file with an empty zip comment")
    f.seek(-2, os.SEEK_END)
    f.write(struct.pack("<H", _COMMENT_LEN) + _COMMENT_TAG + writer.sha.hexdigest().encode())


def atomic_save(obj: Any, path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Path:
    """``torch.save`` atomically, with the SHA-256 of the file's bytes in its zip comment."""
    return atomic_write(path, lambda f: _save_signed(obj, f), need=payload_bytes(obj) + (1 << 20),
                        previous=previous)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """A small text file written atomically through a unique temporary name (safe against concurrent writers)."""
    data = text.encode()
    return atomic_write(path, lambda f: f.write(data), need=len(data))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unsigned(raw: bytes, path: Path, what: str) -> bytes:
    """``raw`` without the checksum comment of :func:`atomic_save`, verified; unsigned (older) files as they are."""
    tail = raw[-_COMMENT_LEN - 22:]
    if not (tail.startswith(_EOCD) and tail[22:].startswith(_COMMENT_TAG)
            and tail[20:22] == struct.pack("<H", _COMMENT_LEN)):
        return raw
    body = raw[:-_COMMENT_LEN - 2] + b"\0\0"
    if hashlib.sha256(body).hexdigest().encode() != tail[22 + len(_COMMENT_TAG):]:
        raise CorruptFileError(f"{what} {path} is corrupt: its contents do not match the checksum stored with "
                               "it (a partial overwrite, a bad disk or a truncated copy)")
    return body


def load_verified(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load(weights_only=True)`` on the CPU of a file whose raw bytes match their stored checksum.

    A missing file raises ``FileNotFoundError``; a checksum mismatch, unreadable bytes, or a pickle that asks
    for any type other than tensors, plain containers and :data:`LEGACY_GLOBALS` raise
    :class:`CorruptFileError` naming the file. Nothing in the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    raw = path.read_bytes()
    body = _unsigned(raw, path, what)
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            obj = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt zip/pickle or a refused type
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            reason = (f"it asks for the Python object {found.group(1) if found else '(unknown)'}, and only "
                      "tensors, numbers, strings and plain containers are loaded (nothing in a file is run)")
        raise CorruptFileError(f"cannot read {what} {path}: {reason}") from None
    if body is raw and isinstance(obj, dict) and CHECKSUM_KEY in obj:  # written before raw-byte checksums
        stored = obj.pop(CHECKSUM_KEY)
        if payload_digest(obj) != stored:
            raise CorruptFileError(f"{what} {path} is corrupt: its contents do not match the checksum stored with "
                                   "it (a partial overwrite, a bad disk or a truncated copy)")
    return obj


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
