"""Landmark test sets (Oxford/Paris and their revisited versions): ground truth and the image loader.

The image loader follows cnnimageretrieval-pytorch (``cirtorch/datasets/genericdataset.py``): a database
image is thumbnailed so its longest side is at most ``imsize``; a query is cropped to its box on the
full image and then scaled by the factor the full image would get, so query and database share one scale.
``resize="bilinear"`` follows the regional-attention original (``Measure_OxfordParis.py``,
``ImageHelper.load_and_prepare_image``) instead: every image is resized so its longest side is exactly
``imsize`` (small images upsampled), bilinear with half-pixel centres and no antialiasing (OpenCV's
``cv2.resize`` default), and a query is cut from the resized image at its box scaled and rounded half to even.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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
        resize: ``thumbnail`` (cirtorch) or ``bilinear`` (the regional-attention original; needs ``imsize``).
    """

    def __init__(self, paths: Sequence[str], boxes: Sequence[Sequence[float]] | None = None,
                 imsize: int | None = 1024, transform: Callable | None = None, resize: str = "thumbnail") -> None:
        if resize not in RESIZES or (resize == "bilinear" and imsize is None):
            raise ValueError(f"resize must be one of {RESIZES} (bilinear with an imsize), got {resize!r}")
        self.paths = list(paths)
        self.resize = resize
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
        if self.resize == "bilinear":
            return self._load_bilinear(img, None if self.boxes is None else self.boxes[i])
        limit = self.imsize
        if self.boxes is not None:
            full = max(img.size)
            img = img.crop(self.boxes[i])
            if limit is not None:
                limit = limit * max(img.size) / full
        if limit is not None:
            img.thumbnail((limit, limit), Image.Resampling.LANCZOS, reducing_gap=None)
        return img

    def _load_bilinear(self, img: Image.Image, box: tuple[float, ...] | None) -> Image.Image:
        ratio = self.imsize / max(img.size)
        size = np.round(np.array(img.size[::-1]) * ratio).astype(np.int64)  # (H, W), half to even
        resized = bilinear_resize(np.asarray(img.convert("RGB")), int(size[0]), int(size[1]))
        if box is not None:
            x0, y0, x1, y1 = np.round(np.asarray(box, dtype=np.float32) * np.float32(ratio)).astype(np.int64)
            resized = resized[max(y0, 0):y1, max(x0, 0):x1]
        return Image.fromarray(resized)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(i)), i


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(height, width, 3)`` uint8: bilinear, half-pixel centres, no antialiasing (the
    sampling of ``cv2.resize``'s ``INTER_LINEAR``), rounded to the nearest integer."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float()  # a writable copy
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return y.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


RESIZES = ("thumbnail", "bilinear")

__all__ = ["RESIZES", "LandmarkData", "LandmarkImageDataset", "bilinear_resize"]
