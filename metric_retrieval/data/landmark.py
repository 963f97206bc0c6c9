"""Landmark test sets (Oxford/Paris and their revisited versions): ground truth and the image loader.

The image loader follows cnnimageretrieval-pytorch (``cirtorch/datasets/genericdataset.py``): a database
image is thumbnailed so its longest side is at most ``imsize``; a query is cropped to its box on the
full image and then scaled by the factor the full image would get, so query and database share one scale.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from metric_retrieval.data.image_io import load_image


@dataclass
class LandmarkData:
    """A landmark benchmark, ground truth in the revisitop dict shape.

    Attributes:
        db_paths: database image paths (N,), sorted by name for the old protocol, ``imlist`` order otherwise.
        query_paths: query image paths (Q,).
        query_boxes: (x1, y1, x2, y2) per query in original-image pixels.
        gnd: one dict per query with ``bbx`` and 0-based sorted database indices: ``ok`` + ``junk``
            (protocol ``old``: ok = good ∪ ok) or ``easy`` + ``hard`` + ``junk`` (``revisited``).
        protocol: ``old`` (query images stay in the database) or ``revisited`` (they are not in it).
        name: canonical dataset name.
    """

    db_paths: list[str]
    query_paths: list[str]
    query_boxes: list[tuple[float, float, float, float]]
    gnd: list[dict]
    protocol: str = "old"
    name: str = ""

    @property
    def query_names(self) -> list[str]:
        return [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in self.query_paths]


def _uint8_tensor() -> Callable:
    from metric_retrieval.data.transforms import build_transform

    return build_transform("landmark", train=False)


class LandmarkImageDataset(Dataset):
    """Variable-size landmark images, one per item (use ``batch_size=1``).

    ``dataset[i]`` → ``(image (3, H, W), i)``; with ``boxes`` given, image i is cropped to
    ``boxes[i]`` and scaled by the same factor as the whole image (cirtorch query handling).

    Args:
        paths: image paths.
        boxes: optional per-image (x1, y1, x2, y2) boxes (queries); None for database images.
        imsize: the longest side of the (full) image after thumbnailing (LANCZOS, never upsampled); 1024
            is the cirtorch test default. None keeps the original size.
        transform: applied to the PIL image; default ``build_transform("landmark")``: the uint8 image, no
            resize, no normalisation (give ``build_transform("landmark", normalize=model.input_spec)`` for the
            model's float32 input).
    """

    def __init__(self, paths: Sequence[str], boxes: Sequence[Sequence[float]] | None = None,
                 imsize: int | None = 1024, transform: Callable | None = None) -> None:
        self.paths = list(paths)
        if boxes is not None and len(boxes) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(boxes)} boxes")
        self.boxes = None if boxes is None else [tuple(float(v) for v in b) for b in boxes]
        self.imsize = imsize
        self.transform = transform if transform is not None else _uint8_tensor()

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """The resized (and for queries cropped) PIL image of item ``i``, before the transform."""
        img = load_image(self.paths[i])
        limit = self.imsize
        if self.boxes is not None:
            full = max(img.size)
            img = img.crop(self.boxes[i])
            if limit is not None:
                limit = limit * max(img.size) / full
        if limit is not None:
            img.thumbnail((limit, limit), Image.Resampling.LANCZOS, reducing_gap=None)
        return img

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(i)), i


__all__ = ["LandmarkData", "LandmarkImageDataset"]
