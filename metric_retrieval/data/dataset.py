"""The map-style dataset every reader produces: images, int64 labels, optional boxes."""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch.utils.data import Dataset

from metric_retrieval.data.common import Box
from metric_retrieval.data.decoded_cache import DecodedCache, split_fixed_resize
from metric_retrieval.data.errors import BadImageError, DatasetError, DatasetWarning
from metric_retrieval.data.image_io import decode_bytes, decode_image, load_image
from metric_retrieval.data.transforms import min_decode_scale
from metric_retrieval.utils.lazy import lazy_module

v2 = lazy_module("torchvision.transforms.v2")

DECODERS = ("fast", "pil", "cache")


class RetrievalDataset(Dataset):
    """Images of one split with labels in ``[0, num_classes)``.

    Attributes:
        paths: absolute image paths (N,).
        labels: ``LongTensor`` (N,), so samplers never decode images.
        boxes: (x1, y1, x2, y2) per image, or None when the dataset has no boxes.
        classes: class names; ``classes[label]`` names a label.
        transform: callable applied to the PIL image (settable; None returns the PIL image).
        crop: crop each image to its box on the fly in ``__getitem__`` (CUB/CARS "cropped").
        max_size: optional reduced-size JPEG decoding to both sides >= ``max_size`` (see
            :func:`metric_retrieval.data.image_io.load_image`); overrides the transform-derived size of
            ``decode="fast"``.
        decode: ``"fast"`` (default): when ``transform`` is a ``torchvision.transforms.v2`` pipeline (every
            preset), JPEGs are decoded at the smallest DCT scale its first geometric step allows
            (:func:`metric_retrieval.data.transforms.min_decode_scale`), by libjpeg-turbo straight into a uint8 (3, H,
            W) tensor, and the geometric steps run in torch (``benchmarks/bench_data.py``).
            ``"pil"``: full-size PIL decoding and PIL transforms (torchvision ``ImageFolder`` behaviour).
            ``"cache"``: ``"fast"`` plus an exact on-disk cache of the decoded and resized image when the
            pipeline starts with a fixed-size ``Resize`` (cgd, clf; :mod:`metric_retrieval.data.decoded_cache`); later
            epochs skip decoding. ``cache_dir`` defaults to ``$METRIC_RETRIEVAL_CACHE/decoded``. Other callables,
            and ``transform=None``, always get the full-size PIL image.
        skip_bad: an image that cannot be read any more (it was checked when the dataset was built) is
            replaced by the next image of its class, with a :class:`DatasetWarning`, and the sample's index
            is returned as ``-(i + 1)`` so that callers can count it (training) or leave it out
            (evaluation). Without it such an image raises :class:`BadImageError` naming the file.

    ``dataset[i]`` → ``(image, label: int, i)``: the transformed image (with the presets of
    :mod:`metric_retrieval.data.transforms` a float32 CHW tensor, or uint8 when built without ``normalize`` as the
    loaders are), the label and the index (used to look the path up later).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int] | torch.Tensor, classes: Sequence[str],
                 boxes: Sequence[Box] | None = None, transform: Callable | None = None, crop: bool = False,
                 max_size: int | None = None, name: str = "", split: str = "", decode: str = "fast",
                 cache_dir: str | None = None, skip_bad: bool = False) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.classes = list(classes)
        self.boxes = None if boxes is None else [tuple(float(v) for v in b) for b in boxes]
        if crop and self.boxes is None:
            raise ValueError("crop=True needs boxes")
        self.transform, self.crop, self.max_size = transform, crop, max_size
        if decode not in DECODERS:
            raise DatasetError(f"decode must be one of {', '.join(DECODERS)}, not {decode!r}")
        self.name, self.split, self.decode, self.skip_bad = name, split, decode, skip_bad
        self.cache = DecodedCache(cache_dir) if decode == "cache" else None

    def enable_cache(self, cache_dir: str | None = None) -> None:
        """Switch ``fast`` decoding to ``cache`` (what ``--decode auto`` does when the cache fits)."""
        if self.decode == "pil":
            raise DatasetError("the decoded cache applies to decode='fast' datasets, not 'pil'")
        self.decode, self.cache = "cache", DecodedCache(cache_dir)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.load(i)
        except (OSError, RuntimeError, ValueError) as err:  # PIL and torchvision decoders' failures
            reason = f"{self.paths[i]} cannot be read any more ({type(err).__name__}: {err})"
        if not self.skip_bad:
            raise BadImageError(f"{reason}; it was readable when the run started: restore it and resume with "
                                "--resume latest, or pass --skip_bad_images to leave such images out")
        same_class = torch.nonzero(self.labels == self.labels[i]).flatten().tolist()
        start = same_class.index(i)
        for j in same_class[start + 1:] + same_class[:start]:
            try:
                image, label, _ = self.load(j)
            except (OSError, RuntimeError, ValueError):
                continue
            warnings.warn(f"{reason}; used {self.paths[j]} of the same class instead (--skip_bad_images)",
                          DatasetWarning, stacklevel=2)
            return image, label, -(i + 1)
        raise BadImageError(f"{reason}, and no other image of its class can be read either")

    def load(self, i: int):
        """``(image, label, i)`` read now; a decoding failure raises the decoder's own error."""
        box = self.boxes[i] if self.crop else None
        if self.cache is not None:
            resize, rest = split_fixed_resize(self.transform)
            if resize is not None:
                image = self.cache.get(self.paths[i], box, resize, partial(
                    decode_image, self.paths[i], box, self.max_size, partial(min_decode_scale, self.transform)))
                return rest(image), int(self.labels[i]), i
        # The transform is read per call: it is settable (validation subsets swap it).
        return read_transformed(self.paths[i], self.transform, self.decode, box, self.max_size), int(self.labels[i]), i

    def __repr__(self) -> str:
        return (f"RetrievalDataset({self.name or '?'}/{self.split or '?'}: {len(self)} images, "
                f"{self.num_classes} classes, crop={self.crop}, decode={self.decode})")


def read_transformed(source: str | bytes, transform: Callable | None, decode: str = "fast",
                     box: Box | None = None, max_size: int | None = None):
    """``transform`` of the image in file ``source`` (a path, or the file's bytes), decoded as ``decode`` says
    (:class:`RetrievalDataset`): ``"fast"``/``"cache"`` with a ``torchvision.transforms.v2`` pipeline decode a
    uint8 (3, H, W) tensor at the smallest DCT scale the transform allows, otherwise PIL decodes at full size.
    The decoder's ``OSError``/``ValueError`` for a corrupt or truncated file."""
    if decode != "pil" and isinstance(transform, v2.Transform):
        min_scale = partial(min_decode_scale, transform)
        if isinstance(source, bytes):
            return transform(decode_bytes(source, box, max_size, min_scale))
        return transform(decode_image(source, box, max_size, min_scale))
    image = load_image(io.BytesIO(source) if isinstance(source, bytes) else source, box=box, max_size=max_size)
    return image if transform is None else transform(image)


__all__ = ["DECODERS", "RetrievalDataset", "read_transformed"]
