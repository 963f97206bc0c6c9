"""Batches on their way to the network: uint8 images from the loader, normalised on the device.

The training and evaluation loaders ship **uint8** images (the presets built without ``normalize``),
collated by :func:`collate` into a (B, 3, H, W) batch in channels-last memory, and :class:`DeviceInput`
turns the batch into the network input on the device: memory format, then the model's :class:`Normalize`
(built from its ``input_spec``). This is timm's ``PrefetchLoader`` idea: workers write, copy and send a
quarter of the bytes of a float32 batch, and the per-pixel arithmetic runs once per batch on the device instead of
once per image in the workers (``benchmarks/bench_data.py``: ``fast`` vs ``fast_f32``). The result equals
the preset's float pipeline (``build_transform(..., normalize=model.input_spec)``, which ends in the same
:class:`Normalize`).

With ``--decode gpu`` the loader ships the encoded files instead (:class:`EncodedImage`), and
:class:`DeviceInput` hands them to a :class:`metric_retrieval.data.device_decode.DeviceDecoder`, which decodes them as
one batch on the device (nvJPEG) and applies the preset's geometric steps there, each image under its own
sample seed, so the crops and flips are the ones the CPU path draws.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import default_collate


class Normalize(torch.nn.Module):
    """uint8 images (..., 3, H, W) → float32 network input ``(x / 255 − mean) / std`` per channel.

    Computed as ``x · scale + shift`` with ``scale = 1 / (255 · std)`` and ``shift = −mean / std``, in place
    on the float copy, so the memory format (channels-last batches) is kept. With ``bgr`` the channels are
    reversed first and ``mean``/``std`` are given in BGR order (Caffe-style models, ABIR).

    Args:
        mean: per-channel mean of the [0, 1]-scaled image, in output channel order.
        std: per-channel standard deviation, in output channel order.
        bgr: reverse the channel order (RGB → BGR) before normalising.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], bgr: bool = False) -> None:
        super().__init__()
        mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        self.mean, self.std, self.bgr = tuple(mean), tuple(std), bgr
        self.register_buffer("scale", (1 / (255 * std_t)).float().view(3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).float().view(3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"Normalize expects uint8 images, got {images.dtype} (already normalised?)")
        if self.bgr:
            images = images.flip(-3)
        hwc = images.movedim(-3, -1)
        if images.is_contiguous() or not hwc.is_contiguous():
            return images.float().mul_(self.scale).add_(self.shift)
        # Pixel-interleaved memory (decoded JPEGs, channels-last batches): broadcasting (3, 1, 1) over it runs an
        # inner loop of 3, 4x slower on CPU. Work on rows of W·3 values with the per-channel factors tiled along
        # the row instead: the same two roundings per value, so the same result.
        c, w = hwc.shape[-1], hwc.shape[-2]
        rows = hwc.reshape(-1, w * c).float()
        rows.mul_(self.scale.view(c).repeat(w)).add_(self.shift.view(c).repeat(w))
        return rows.view(hwc.shape).movedim(-1, -3)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, bgr={self.bgr}"


@contextlib.contextmanager
def sample_rng(seed: int) -> Iterator[None]:
    """The CPU generator seeded with a sample's ``seed`` for the duration; the caller's stream is restored.

    torchvision's v2 transforms draw their parameters from the CPU generator whatever the image's device, so
    this fixes a sample's crops and flips; CUDA generators are left alone (``torch.manual_seed`` would
    reseed them too).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class EncodedImage(NamedTuple):
    """An image file's bytes (1-D uint8 tensor) and the box to crop after decoding (full-size pixels)."""

    data: torch.Tensor
    box: tuple[float, float, float, float] | None = None


def collate(batch: Sequence[Sequence[Any]]) -> list[Any]:
    """``default_collate`` for ``(image, label, index[, seed])`` samples, images batched in channels-last memory.

    Equal-size (3, H, W) images are stacked through their (H, W, 3) views into a (B, H, W, 3) block and
    returned as its (B, 3, H, W) view: decoded JPEGs are pixel-interleaved, so this is a copy of rows
    (about 10x faster here than gathering planes into a contiguous NCHW batch) and the batch is already in
    the channels-last format the models run in. Anything else in the image slot (encoded files,
    PIL images, images of different sizes) is returned as a list.
    """
    images = [sample[0] for sample in batch]
    rest = default_collate([tuple(sample[1:]) for sample in batch])
    if all(isinstance(x, torch.Tensor) and x.dim() == 3 for x in images) and len({x.shape for x in images}) == 1:
        return [default_collate([x.permute(1, 2, 0) for x in images]).permute(0, 3, 1, 2), *rest]
    return [images, *rest]


class DeviceInput:
    """A loader's image batch → the network input on ``device``.

    uint8 batches are moved (non-blocking; pinned by the loader), put in ``memory_format`` and normalised;
    lists of :class:`EncodedImage` are first decoded by ``decoder``. Float batches (custom datasets with
    their own normalisation) are moved and formatted only.

    Args:
        device: the training or evaluation device.
        normalize: the model's :class:`Normalize` (:func:`metric_retrieval.data.transforms.build_normalize` of its
        ``input_spec``). channels_last: the model runs in channels-last memory.
        decoder: a :class:`metric_retrieval.data.device_decode.DeviceDecoder` for loaders that ship encoded files.
    """

    def __init__(self, device: str | torch.device, normalize: Normalize, channels_last: bool = False,
                 decoder: Callable[..., torch.Tensor] | None = None) -> None:
        self.device = torch.device(device)
        self.normalize = normalize.to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.decoder = decoder

    def __call__(self, images: torch.Tensor | list, seeds: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(images, list):
            if self.decoder is None or not all(isinstance(x, EncodedImage) for x in images):
                raise TypeError("a batch of encoded files needs a decoder; other images must share one size")
            images = self.decoder(images, seeds)
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return self.normalize(images) if images.dtype == torch.uint8 else images


__all__ = ["DeviceInput", "EncodedImage", "Normalize", "collate", "sample_rng"]
