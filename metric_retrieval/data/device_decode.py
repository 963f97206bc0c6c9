"""Decoding training images on the device (``--decode gpu``): the workers read files, the GPU decodes them.

For machines whose CPU workers cannot keep up with the GPU. :class:`EncodedFiles` makes the loader ship each
image's bytes (and crop box) instead of pixels; :class:`DeviceDecoder` decodes the whole batch in one
``torchvision.io.decode_jpeg(device="cuda")`` call (nvJPEG), crops the boxes, and runs the preset's geometric
steps on the device, each image under the seed its sample carries
(:class:`metric_retrieval.training.loading.SeededDataset`).

Every image reaches the transform at the size the CPU path (``--decode fast``) gives it, so the crops and
flips drawn from a seed are the CPU path's. The pixels are the CPU path's up to nvJPEG's IDCT (about one grey
level) and the GPU's resampling, with one more difference: where the CPU path decodes a large JPEG at a
reduced DCT scale (:func:`metric_retrieval.data.transforms.min_decode_scale`), nvJPEG decodes it at full size and it is
resized to the same size (antialiased bilinear). Files nvJPEG does not decode (PNG, CMYK JPEG, ...) are
decoded on the CPU exactly as by ``fast`` and moved. The code is device-agnostic: on ``cpu`` it decodes in
the calling process, bit-identical to ``fast`` for images decoded at full size, which is how the tests
check it.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch.utils.data import Dataset

from metric_retrieval.data.batch import EncodedImage, sample_rng
from metric_retrieval.data.errors import DatasetWarning
from metric_retrieval.data.image_io import crop_box, decode_bytes, decode_jpeg_batch, decoded_size
from metric_retrieval.data.transforms import min_decode_scale
from metric_retrieval.utils.lazy import lazy_module

F = lazy_module("torchvision.transforms.v2.functional")

JPEG_MAGIC = (0xFF, 0xD8)


class EncodedFiles(Dataset):
    """``(EncodedImage, label, index)`` for every image of ``dataset``, which needs ``paths``, ``labels`` and,
    when its ``crop`` is set, ``boxes`` (a :class:`~metric_retrieval.data.dataset.RetrievalDataset` or a class subset of
    one)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[EncodedImage, int, int]:
        ds = self.dataset
        with open(ds.paths[i], "rb") as f:
            encoded = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        return EncodedImage(encoded, ds.boxes[i] if getattr(ds, "crop", False) else None), int(ds.labels[i]), i


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 2 and tuple(data[:2].tolist()) == JPEG_MAGIC


class DeviceDecoder:
    """A batch of :class:`EncodedImage` → the uint8 (B, 3, h, w) batch of ``transform``'s outputs on ``device``.

    Args:
        transform: the preset's geometric pipeline (``build_transform(...)`` without ``normalize``); it also sets
            the sizes images are decoded to, as for the CPU path.
        device: where to decode and transform (``cuda``: nvJPEG; ``cpu``: libjpeg-turbo).
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device) -> None:
        self.transform, self.device = transform, torch.device(device)
        self.min_scale = partial(min_decode_scale, transform)
        self.warned = False

    def __call__(self, files: Sequence[EncodedImage], seeds: torch.Tensor | None = None) -> torch.Tensor:
        """Decode and transform; image k under ``sample_rng(seeds[k])``, or, without seeds (deterministic
        evaluation transforms), under the caller's generator."""
        images = self.decode(files)
        if seeds is None:
            return torch.stack([self.transform(image) for image in images])
        out = []
        for image, seed in zip(images, seeds.tolist()):
            with sample_rng(seed):
                out.append(self.transform(image))
        return torch.stack(out)

    def decode(self, files: Sequence[EncodedImage]) -> list[torch.Tensor]:
        """uint8 (3, H_i, W_i) images on the device, cropped to their boxes, at the CPU path's sizes."""
        images: list[torch.Tensor | None] = [None] * len(files)
        jpegs = [k for k, f in enumerate(files) if _is_jpeg(f.data)]
        try:
            decoded = decode_jpeg_batch([files[k].data for k in jpegs], self.device) if jpegs else []
        except RuntimeError as err:  # one file nvJPEG cannot read fails the whole call
            decoded = []
            self._warn_once(f"the device could not decode a batch ({err}); its files are decoded on the CPU")
        for k, image in zip(jpegs, decoded):
            images[k] = self._cpu_size(crop_box(image, files[k].box), files[k])
        return [image if image is not None else
                decode_bytes(self._bytes(f), f.box, min_scale=self.min_scale).to(self.device)
                for image, f in zip(images, files)]

    def _cpu_size(self, image: torch.Tensor, file: EncodedImage) -> torch.Tensor:
        """``image`` resized to the size the CPU path decodes ``file`` to (it may DCT-scale large JPEGs)."""
        size = decoded_size(self._bytes(file), file.box, min_scale=self.min_scale)
        return image if tuple(image.shape[-2:]) == size else F.resize(image, list(size), antialias=True)

    @staticmethod
    def _bytes(file: EncodedImage) -> bytes:
        return file.data.numpy().tobytes()

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(message, DatasetWarning, stacklevel=3)


__all__ = ["DeviceDecoder", "EncodedFiles"]
