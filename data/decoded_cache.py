"""An exact on-disk cache of the deterministic start of a transform pipeline: decode + fixed-size Resize.

The CGD and CLF presets (and every eval preset that starts with ``Resize((h, w))``) begin with a step that
is a pure function of the file: decoding and resizing to a fixed size. Its uint8 (3, h, w) output is stored
once per image as a raw ``.npy`` file (3·h·w bytes: 190 KB at 252²) and later epochs read it instead of
decoding and resizing the JPEG again; the random steps that follow (RandomCrop, flip) run as before, so a
cached run sees exactly the same tensors as an uncached one (``decode="cache"``). Pipelines whose first
step is random (RandomResizedCrop: das, abir train) have no such prefix and are decoded as with
``decode="fast"``. Entries are keyed by path, size, modification time, crop box and resize target, so a
changed file is decoded again; the folder can be deleted at any time.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from data.verify import cache_root


def default_cache_dir() -> Path:
    return cache_root() / "decoded"


def split_fixed_resize(transform: Callable | None) -> tuple[v2.Resize | None, Callable | None]:
    """``(Resize((h, w)), rest of the pipeline)`` when ``transform`` starts with a fixed-size resize, else
    ``(None, transform)``."""
    steps = getattr(transform, "transforms", None)
    if isinstance(transform, v2.Compose) and steps and isinstance(steps[0], v2.Resize) \
            and isinstance(steps[0].size, (list, tuple)) and len(steps[0].size) == 2:
        return steps[0], v2.Compose(steps[1:])
    return None, transform


class DecodedCache:
    """``folder/ab/<sha1>.npy`` files holding resized uint8 images."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def entry(self, path: str, box: Sequence[float] | None, size: Sequence[int]) -> Path:
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{box}|{tuple(size)}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, path: str, box: Sequence[float] | None, resize: v2.Resize,
            decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The resized uint8 (3, h, w) image: from the cache, or decoded, resized and stored (atomically)."""
        entry = self.entry(path, box, resize.size)
        try:
            return torch.from_numpy(np.load(entry))
        except (FileNotFoundError, ValueError, OSError):  # absent, or torn by a crash before the rename
            pass
        image = resize(decode()).contiguous()
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npy", dir=entry.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, image.numpy())
        os.replace(tmp, entry)
        return image
