"""The map-style dataset every reader produces: images, int64 labels, optional boxes."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from data.common import Box
from data.image_io import load_image


class RetrievalDataset(Dataset):
    """Images of one split with labels in ``[0, num_classes)``.

    Attributes:
        paths: absolute image paths (N,).
        labels: ``LongTensor`` (N,), so samplers never decode images.
        boxes: (x1, y1, x2, y2) per image, or None when the dataset has no boxes.
        classes: class names; ``classes[label]`` names a label.
        transform: callable applied to the PIL image (settable; None returns the PIL image).
        crop: crop each image to its box on the fly in ``__getitem__`` (CUB/CARS "cropped").
        max_size: optional reduced-size JPEG decoding (see :func:`data.image_io.load_image`).

    ``dataset[i]`` → ``(image, label: int, i)``: the transformed image (a float32 CHW tensor with the
    presets of :mod:`data.transforms`), the label and the index (used to look the path up later).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int] | torch.Tensor, classes: Sequence[str],
                 boxes: Sequence[Box] | None = None, transform: Callable | None = None, crop: bool = False,
                 max_size: int | None = None, name: str = "", split: str = "") -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.classes = list(classes)
        self.boxes = None if boxes is None else [tuple(float(v) for v in b) for b in boxes]
        if crop and self.boxes is None:
            raise ValueError("crop=True needs boxes")
        self.transform, self.crop, self.max_size = transform, crop, max_size
        self.name, self.split = name, split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        box = self.boxes[i] if self.crop else None
        image = load_image(self.paths[i], box=box, max_size=self.max_size)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), i

    def __repr__(self) -> str:
        return (f"RetrievalDataset({self.name or '?'}/{self.split or '?'}: {len(self)} images, "
                f"{self.num_classes} classes, crop={self.crop})")


__all__ = ["RetrievalDataset"]
