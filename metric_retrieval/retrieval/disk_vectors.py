"""An index's full vectors kept on disk for the exact re-rank of its candidates (the ``…,RFlatDisk`` refine stage).

faiss's ``RFlat`` refine stage keeps every full vector in RAM (2,048 bytes a 512-d vector: more than a ``Flat``
index). ``IVF1024,PQ64x4fs,RFlatDisk`` keeps only the coarse index in RAM (the IVF lists and 32-byte codes) and
the float32 vectors in ``vectors-<gen>.f32`` in the index folder: row i is faiss id i, little-endian float32, no
header, ``count × dim × 4`` bytes. A search asks the coarse index for ``k_factor × k`` candidates per query, reads
their rows through a memory map opened for that search and closed after it (so none of the file stays in the
process's resident memory; the pages stay in the kernel's page cache, which it reclaims under pressure), scores
them exactly (inner product or squared L2, as faiss does) and keeps the best k, ties by lower id.

Writes never touch a committed file: the first change after opening copies the committed file into a staging
file (``.vectors-*.tmp``) and appends to it; :meth:`DiskVectors.commit` fsyncs it and renames it to the new
generation's name. The SHA-256 is updated as the bytes are written, so committing reads nothing back, and opening
verifies it over the whole file (``utils.io.file_sha256``: 1 MB blocks, bounded memory at any size).
"""
from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import disk_full_error, file_sha256, is_disk_full

__all__ = ["DISK_REFINE", "DiskVectors", "split_disk_refine"]

DISK_REFINE = "RFlatDisk"
BLOCK = 1 << 20  # bytes per read when copying
RERANK_ROWS = 1 << 14  # candidate rows gathered at once: 32 MB of 512-d float32
REMEDY = "free some space and rerun the same command (the index's previous version is intact)"
DTYPE = np.dtype("<f4")


def split_disk_refine(factory: str) -> tuple[str, bool]:
    """``("IVF1024,PQ64x4fs", True)`` for ``"IVF1024,PQ64x4fs,RFlatDisk"``; ``(factory, False)`` otherwise."""
    head, _, last = factory.rpartition(",")
    if last.strip() == DISK_REFINE:
        if not head:
            raise ValueError(f"{DISK_REFINE} re-ranks the candidates of a coarse index: put one before it "
                             f"(e.g. IVF1024,PQ64x4fs,{DISK_REFINE})")
        return head, True
    return factory, False


class DiskVectors:
    """The full vectors of an index: a committed file (``path``, ``count`` rows, SHA-256 ``sha256``) plus the
    rows added since, in a staging file until :meth:`commit`."""

    def __init__(self, root: str | Path, dim: int, path: Path | None = None, count: int = 0,
                 sha256: str | None = None) -> None:
        self.root, self.dim, self.path, self.count = Path(root), int(dim), path, int(count)
        self.sha256 = sha256 if sha256 is not None else hashlib.sha256().hexdigest()
        self._staging: Path | None = None
        self._hash = None  # the staging file's running SHA-256

    @classmethod
    def open(cls, root: str | Path, name: str, dim: int, count: int, sha256: str) -> DiskVectors:
        """The committed file ``root/name``, its size and SHA-256 verified; :class:`ValueError` says what failed."""
        path = Path(root) / name
        try:
            size = path.stat().st_size
        except OSError as err:
            raise ValueError(f"{name} is unreadable ({err.strerror})") from None
        if size != count * dim * DTYPE.itemsize:
            raise ValueError(f"{name} holds {size} bytes, {count} vectors of {dim} float32 need "
                             f"{count * dim * DTYPE.itemsize} (truncated or damaged)")
        if file_sha256(path) != sha256:
            raise ValueError(f"{name} does not match its checksum (edited or damaged)")
        return cls(root, dim, path, count, sha256)

    @property
    def dirty(self) -> bool:
        """Rows were added or replaced since the last commit."""
        return self._staging is not None

    # -- writing ----------------------------------------------------------------------------------------------
    def append(self, x: np.ndarray) -> None:
        """Add rows (n, dim) after the current ones."""
        if self._staging is None:
            self._start(copy_committed=True)
        self._write(np.ascontiguousarray(x, dtype=DTYPE))

    def replace(self, batches: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        """Start over with the rows of ``batches``; yields each batch once written (to fill the coarse index from
        the same stream)."""
        self.discard()
        self._start(copy_committed=False)
        self.count = 0
        for x in batches:
            x = np.ascontiguousarray(x, dtype=DTYPE)
            self._write(x)
            yield x

    def commit(self, name: str) -> str:
        """Make the staged rows the committed file ``root/name`` (fsync, rename); returns its SHA-256."""
        if self._staging is None:
            raise ValueError("nothing staged to commit")
        try:
            with open(self._staging, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._staging, self.root / name)
        except OSError as err:
            raise self._error(err, self.root / name) from None
        self.path, self.sha256, self._staging = self.root / name, self._hash.hexdigest(), None
        return self.sha256

    def discard(self) -> None:
        """Drop the staged rows (the committed file is untouched)."""
        if self._staging is not None:
            self._staging.unlink(missing_ok=True)
            self._staging = None
            self.count = self._committed_count()

    def _committed_count(self) -> int:
        return self.path.stat().st_size // (self.dim * DTYPE.itemsize) if self.path is not None else 0

    def _start(self, copy_committed: bool) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=self.root)
        except OSError as err:
            raise self._error(err, self.root / ".vectors-*.tmp") from None
        self._staging, self._hash = Path(tmp), hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                if copy_committed and self.path is not None:
                    with open(self.path, "rb") as f:
                        for block in iter(lambda: f.read(BLOCK), b""):
                            out.write(block)
                            self._hash.update(block)
        except OSError as err:
            self.discard()
            raise self._error(err, self._staging or Path(tmp)) from None

    def _write(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got shape {x.shape}")
        data = x.tobytes()
        try:
            with open(self._staging, "ab") as f:
                f.write(data)
        except OSError as err:
            staging = self._staging
            self.discard()
            raise self._error(err, staging, len(data)) from None
        self._hash.update(data)
        self.count += len(x)

    def _error(self, err: OSError, path: Path, need: int = 0) -> UserError:
        """A full disk as :class:`DiskFullError`, any other write failure (a read-only folder, ...) as one line."""
        need = need or self.count * self.dim * DTYPE.itemsize
        if is_disk_full(err, path.parent, need):
            return disk_full_error(path, need, REMEDY)
        return UserError(f"cannot write {path}: {err.strerror or err} (the index's previous version is intact)")

    # -- searching --------------------------------------------------------------------------------------------
    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int, metric: str
               ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of each query's ``candidates`` (Q, m) int64 (−1: none) by exact score: (scores (Q, k)
        float32, ids (Q, k) int64), best first, ties by lower id. A row with fewer than k candidates ends in
        id −1 with the worst float32 score, as faiss pads."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n_q, m = candidates.shape
        worst = np.finfo(np.float32).min if metric == "ip" else np.finfo(np.float32).max
        scores = np.full((n_q, m), worst, np.float32)
        per_block = max(1, RERANK_ROWS // max(m, 1))
        with self._rows() as rows:
            for s in range(0, n_q, per_block):
                c = candidates[s:s + per_block]
                valid = c >= 0
                x = rows.take(np.where(valid, c, 0))  # (b, m, dim): the rows' pages read from the file
                if metric == "ip":
                    sc = np.matmul(x, q[s:s + per_block, :, None])[..., 0]
                else:
                    sc = np.square(x - q[s:s + per_block, None, :]).sum(axis=2)
                scores[s:s + per_block] = np.where(valid, sc, worst)
        ids = np.where(candidates >= 0, candidates, np.iinfo(np.int64).max)  # a missing candidate sorts last
        order = np.lexsort((ids, -scores if metric == "ip" else scores), axis=-1)[:, :k]
        top_ids = np.take_along_axis(candidates, order, axis=1)
        return np.take_along_axis(scores, order, axis=1), np.where(top_ids >= 0, top_ids, -1)

    def _rows(self) -> _MappedRows:
        path = self._staging if self._staging is not None else self.path
        return _MappedRows(path, self.count, self.dim)


class _MappedRows:
    """``with _MappedRows(path, n, dim) as rows``: ``rows.take(ids)`` copies rows of the file (an (n, dim) float32
    array) through a memory map that is unmapped on exit."""

    def __init__(self, path: Path | None, count: int, dim: int) -> None:
        self.path, self.count, self.dim = path, count, dim
        self._file = self._map = None

    def __enter__(self) -> _MappedRows:
        if self.path is not None and self.count:
            self._file = open(self.path, "rb")
            self._map = mmap.mmap(self._file.fileno(), self.count * self.dim * DTYPE.itemsize,
                                  access=mmap.ACCESS_READ)
            self._map.madvise(mmap.MADV_RANDOM)  # a few scattered rows per query: no read-ahead
        return self

    def take(self, ids: np.ndarray) -> np.ndarray:
        """``rows[ids]`` (ids.shape + (dim,)), a copy: no array outlives the map."""
        if self._map is None:
            raise IndexError("the index holds no vectors")
        view = np.frombuffer(self._map, dtype=DTYPE).reshape(self.count, self.dim)
        try:
            return view[ids]
        finally:
            del view

    def __exit__(self, *exc) -> None:
        if self._map is not None:
            self._map.close()
            self._file.close()
