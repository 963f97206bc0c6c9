"""An exact on-disk cache of the deterministic start of a transform pipeline: decode + fixed-size Resize.

The CGD and CLF presets (and every eval preset that starts with ``Resize((h, w))``) begin with a step that
is a pure function of the file: decoding and resizing to a fixed size. Its uint8 (3, h, w) output is stored
once per image as a raw file of its pixel-interleaved (h, w, 3) bytes (190 KB at 252²; read back as the
same channels-last view a JPEG decodes to, three times faster than ``.npy``), and later epochs read it
instead of decoding and resizing the JPEG again; the random steps that follow (RandomCrop, flip) run as
before, so a cached run sees exactly the same tensors as an uncached one (``decode="cache"``). Pipelines whose first
step is random (RandomResizedCrop: das, abir train) have no such prefix and are decoded as with
``decode="fast"``. Entries are keyed by path, size, modification time, crop box and resize target, so a
changed file is decoded again; the folder can be deleted at any time.

``train.py --decode auto`` (the default) caches when some split's pipeline allows it and the entries still
missing for all splits together take at most :data:`AUTO_FRACTION` of the free space where the cache lives
(:func:`plan_cache`; entries already written cost nothing, so a cache once filled keeps being used), and
decodes with ``fast`` otherwise. Entries of other image sizes, presets or datasets stay until the folder is
deleted. Entries are written to a temporary file, checked for their size and renamed into place, so a
full disk never leaves a short entry under its final name; a reader treats an entry of the wrong size as
missing (decodes and rewrites it). A write that fails (disk full, quota, read-only folder) warns once per
run (once per rank under DDP), naming the folder and the error, and the run goes on uncached: the failure
is a flag per cache folder in shared memory, made by the process that builds the datasets and shared with
every loader worker it starts (in any epoch), so N workers do not warn N times per epoch. The flag lasts
as long as that process.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import multiprocessing
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metric_retrieval.data.errors import DatasetWarning
from metric_retrieval.data.verify import cache_root
from metric_retrieval.utils.io import format_size
from metric_retrieval.utils.lazy import lazy_module

v2 = lazy_module("torchvision.transforms.v2")

AUTO_FRACTION = 0.1  # --decode auto caches when the missing entries need at most this share of the free space
_FAILED: dict[Path, Any] = {}  # cache folder → shared flag: a write there failed (see the module docstring)


def default_cache_dir() -> Path:
    return cache_root() / "decoded"


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space of the file system that holds (or will hold) ``folder``."""
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def missing_bytes(cache: DecodedCache, dataset: Any, transform: Callable | None) -> int:
    """Bytes still to write to cache the images of ``dataset`` (``paths``; ``boxes`` when ``crop``) for
    ``transform``: 3·h·w per image without an entry; 0 when the pipeline has no cacheable start."""
    resize, _ = split_fixed_resize(transform)
    if resize is None:
        return 0
    boxes = dataset.boxes if getattr(dataset, "crop", False) else [None] * len(dataset.paths)
    missing = sum(not cache.entry(path, box, resize.size).exists() for path, box in zip(dataset.paths, boxes))
    return missing * 3 * resize.size[0] * resize.size[1]


def plan_cache(parts: Sequence[tuple[Any, Callable | None]], folder: str | os.PathLike | None = None
               ) -> tuple[bool, str]:
    """Whether ``--decode auto`` caches the ``(dataset, transform)`` parts of a run, and why (for the log)."""
    if not any(split_fixed_resize(transform)[0] is not None for _, transform in parts):
        return False, "no split starts with a fixed-size resize (nothing to cache)"
    cache = DecodedCache(folder)
    need, free = sum(missing_bytes(cache, ds, tf) for ds, tf in parts), free_bytes(cache.folder)
    where = f"{format_size(need)} still to write under {cache.folder}, {format_size(free)} free"
    if need > AUTO_FRACTION * free:
        return False, f"the cache would take more than {AUTO_FRACTION:.0%} of the free space ({where})"
    return True, where


def split_fixed_resize(transform: Callable | None) -> tuple[v2.Resize | None, Callable | None]:
    """``(Resize((h, w)), rest of the pipeline)`` when ``transform`` starts with a fixed-size resize, else
    ``(None, transform)``."""
    steps = getattr(transform, "transforms", None)
    if isinstance(transform, v2.Compose) and steps and isinstance(steps[0], v2.Resize) \
            and isinstance(steps[0].size, (list, tuple)) and len(steps[0].size) == 2:
        return steps[0], v2.Compose(steps[1:])
    return None, transform


class DecodedCache:
    """``folder/ab/<sha1>.rgb`` files holding resized uint8 images as raw (h, w, 3) bytes."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self._failed = _failure_flag(self.folder)  # travels with the dataset into the loader workers

    @property
    def writable(self) -> bool:
        """False once a write into the folder failed, in this process or any other of the run."""
        return not self._failed.value

    def entry(self, path: str, box: Sequence[float] | None, size: Sequence[int]) -> Path:
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{box}|{tuple(size)}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.rgb"

    def get(self, path: str, box: Sequence[float] | None, resize: v2.Resize,
            decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The resized uint8 (3, h, w) image: from the cache, or decoded, resized and stored (atomically)."""
        h, w = resize.size
        entry = self.entry(path, box, resize.size)
        try:
            pixels = np.fromfile(entry, dtype=np.uint8)
            if pixels.size == h * w * 3:  # anything else is not an entry this code wrote
                return torch.from_numpy(pixels).view(h, w, 3).permute(2, 0, 1)
        except OSError:  # absent or unreadable: decode again
            pass
        image = resize(decode())
        if self.writable:
            try:
                self._store(entry, image)
            except OSError as err:
                if self._first_failure():
                    warnings.warn(f"cannot write the decoded-image cache in {self.folder} ({err}); the run goes on "
                                  "without it (free some space, set METRIC_RETRIEVAL_CACHE, or use --decode fast)",
                                  DatasetWarning, stacklevel=2)
        return image

    def _first_failure(self) -> bool:
        """Mark the folder as failed; True only for the first failure of the run (the one that warns)."""
        with self._failed.get_lock():  # two workers failing at once: one of them reports
            first = not self._failed.value
            self._failed.value = True
        return first

    @staticmethod
    def _store(entry: Path, image: torch.Tensor) -> None:
        """Write one entry atomically; a short write (a full disk that did not report itself) is an OSError."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        pixels = image.permute(1, 2, 0).contiguous().numpy().tobytes()
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".rgb.tmp", dir=entry.parent)
        try:
            with _open_entry(fd) as f:
                f.write(pixels)
                f.flush()
                written = os.fstat(f.fileno()).st_size
            if written != len(pixels):
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(pixels)} bytes")
            os.replace(tmp, entry)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise


def _failure_flag(folder: Path) -> Any:
    """The run-wide failure flag of a cache folder (a ``multiprocessing.Value``, one per folder and process
    tree: inherited by forked workers, pickled with the dataset into spawned ones)."""
    key = folder.absolute()
    if key not in _FAILED:
        _FAILED[key] = multiprocessing.Value(ctypes.c_bool, False)
    return _FAILED[key]


def _open_entry(fd: int) -> Any:
    """The writer of a new entry (one place, so that tests can make it fail like a full disk)."""
    return os.fdopen(fd, "wb")
