"""Decoding training images on the device (``--decode gpu``): the workers read files, the GPU decodes them.

For machines whose CPU workers cannot keep up with the GPU. :class:`EncodedFiles` makes the loader ship each
image's bytes (and crop box) instead of pixels; :class:`DeviceDecoder` decodes the whole batch in one
``torchvision.io.decode_jpeg(device="cuda")`` call (nvJPEG), crops the boxes, and runs the preset's geometric
steps on the device, each image under the seed its sample carries (:class:`engine.loading.SeededDataset`):
torchvision's v2 transforms draw their parameters from the CPU generator whatever the image's device, so
the crops and flips are exactly those of the CPU path; only the pixels differ, by nvJPEG's IDCT (about one
grey level) and the GPU's resampling. Files nvJPEG does not decode (PNG, CMYK JPEG, ...) are decoded on the
CPU like ``decode="fast"`` and moved. The code is device-agnostic: on ``cpu`` it decodes in the calling
process, bit-identical to the ``fast`` path, which is how the tests check it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from data.batch import EncodedImage
from data.image_io import crop_box, decode_bytes, decode_jpeg_batch

JPEG_MAGIC = (0xFF, 0xD8)


class EncodedFiles(Dataset):
    """``(EncodedImage, label, index)`` for every image of ``dataset``, which needs ``paths``, ``labels`` and,
    when its ``crop`` is set, ``boxes`` (a :class:`~data.dataset.RetrievalDataset` or a class subset of one)."""

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


def decode_files(files: Sequence[EncodedImage], device: torch.device) -> list[torch.Tensor]:
    """uint8 (3, H_i, W_i) RGB images on ``device``, cropped to their boxes: JPEGs in one batched call."""
    images: list[torch.Tensor | None] = [None] * len(files)
    jpegs = [k for k, f in enumerate(files) if _is_jpeg(f.data)]
    try:
        for k, image in zip(jpegs, decode_jpeg_batch([files[k].data for k in jpegs], device)):
            images[k] = crop_box(image, files[k].box)
    except RuntimeError:  # one undecodable file fails the whole batched call: the CPU path decodes them all
        pass
    for k, image in enumerate(images):
        if image is None:
            images[k] = decode_bytes(files[k].data.numpy().tobytes(), files[k].box).to(device)
    return images


class DeviceDecoder:
    """A batch of :class:`EncodedImage` → the uint8 (B, 3, h, w) batch of ``transform``'s outputs on ``device``.

    Args:
        transform: the preset's geometric pipeline (``build_transform(..., normalize=False)``).
        device: where to decode and transform (``cuda``: nvJPEG; ``cpu``: libjpeg-turbo).
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device) -> None:
        self.transform, self.device = transform, torch.device(device)

    def __call__(self, files: Sequence[EncodedImage], seeds: torch.Tensor | None = None) -> torch.Tensor:
        images = decode_files(files, self.device)
        if seeds is None:
            return torch.stack([self.transform(image) for image in images])
        out = []
        for image, seed in zip(images, seeds.tolist()):
            with torch.random.fork_rng(devices=[]):  # the miners' global RNG stream stays untouched
                torch.default_generator.manual_seed(seed)  # CPU only: v2 draws there; CUDA streams untouched
                out.append(self.transform(image))
        return torch.stack(out)


__all__ = ["DeviceDecoder", "EncodedFiles", "decode_files"]
