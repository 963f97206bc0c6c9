"""The class-folder layout ``<dir>/<class>/<image>`` (DAS's ``cub200/images/``, generic folders)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

from metric_retrieval.data.common import SplitRecords, layout_error


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Every file extension PIL can open (lower case, with the dot)."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def list_class_folders(images_dir: Path, layout: str) -> list[Path]:
    """Sorted (by name) sub-folders of ``images_dir`` that hold at least one image."""
    if not images_dir.is_dir():
        raise layout_error("missing folder", images_dir, layout)
    folders = sorted((p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.name)
    if not folders:
        raise layout_error("no class folders in", images_dir, layout)
    return folders


def list_images(folder: Path) -> list[Path]:
    exts = image_extensions()
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in exts and p.is_file() and not p.name.startswith("."))


def read_class_folders(folders: list[Path]) -> SplitRecords:
    """Images of ``folders``; the raw label of an image is its folder name."""
    paths, labels = [], []
    for folder in folders:
        for img in list_images(folder):
            paths.append(str(img))
            labels.append(folder.name)
    return SplitRecords(paths, labels)


def half_split(images_dir: Path, split: str, layout: str) -> SplitRecords:
    """First half of the sorted class folders = ``train``, second half = ``test`` (DAS/RDML convention)."""
    folders = list_class_folders(images_dir, layout)
    half = len(folders) // 2
    return read_class_folders(folders[:half] if split == "train" else folders[half:])
