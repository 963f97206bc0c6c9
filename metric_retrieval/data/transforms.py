"""Named augmentation presets of the papers (torchvision.transforms.v2); output float32 or uint8 CHW tensors.

Presets (s = ``image_size``; train → eval):

- ``cgd``: Resize((s·9/8,)*2) → RandomCrop(s) → HFlip → eval Resize((s, s)). leftthomas/CGD ``ImageReader``.
- ``clf``: Resize((s·8/7,)*2) → RandomCrop(s) → HFlip → eval Resize((s, s)). CLF, ImageNet
  statistics (the later CLF commits' dataset-specific statistics are not used).
- ``das``: RandomResizedCrop(s) → HFlip → eval Resize(s·8/7) → CenterCrop(s). DAS / RDML.
- ``abir``: Resize(s·8/7) → RandomResizedCrop(s, scale=(0.16, 1)) → HFlip → eval Resize(s·8/7) → CenterCrop(s)
  (Deep_Metric ``DataSet/transforms``).
- ``landmark``: no resize (cirtorch ``test.py``).
- ``strong``: RandomResizedCrop(s, scale=(crop_scale, 1)) → HFlip (``hflip``) → ColorJitter(0.4, 0.4, 0.4, 0.1)
  (p 0.8) → RandomGrayscale(0.2) → eval Resize((s, s)). SimCLR's colour distortion (Chen et al., ICML 2020,
  §3): for training from random weights, so that colour alone cannot tell classes apart. Its options
  ``--crop_scale`` (default 0.25) and ``--no-hflip`` keep what defines a class where the whole shape or its
  handedness does (a character: ``b`` / ``d``, ``R`` / ``Я``).

**Normalisation is not part of a preset**: it is the model's, built by :func:`build_normalize` from the
backbone's ``input_spec`` (``model.input_spec``: ImageNet RGB for torchvision weights, BGR 0-255 minus the
Caffe mean for ``caffe_resnet101``, ABIR's Deep_Metric BGR 0-255 input), so weights always get the input they
were trained with whatever augmentation preset is chosen.

The presets accept a PIL image or a uint8 (3, H, W) tensor. The training datasets hand them a uint8 tensor
(``decode="fast"``, see :mod:`metric_retrieval.data.image_io`), so the geometric steps run on tensors with torch's
antialiased resampling (matching PIL's antialiased bilinear filter to within a few grey levels, about 3x faster);
normalisation comes last (``normalize=model.input_spec``), or, in the loaders (no ``normalize``), on the
device (:mod:`metric_retrieval.data.batch`).
:func:`min_decode_scale` tells the decoder how far a JPEG may be shrunk in the DCT domain before the first
geometric step without changing what that step sees.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metric_retrieval.data.batch import Normalize
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.options import Option, declare
from metric_retrieval.utils.registry import Registry

v2 = lazy_module("torchvision.transforms.v2")  # imported on first use: `--help` needs no torchvision

if TYPE_CHECKING:  # the model's declaration; data/ only reads its mean, std and colour
    from metric_retrieval.models.backbones.base import InputSpec

TRANSFORMS = Registry("transform preset")
DEFAULT_TRANSFORM = "cgd"  # what a run or checkpoint that names no preset uses


def _scaled(size: int, ratio: float) -> int:
    return int(round(size * ratio))


@TRANSFORMS.register("cgd")
def cgd(train: bool, image_size: int) -> list:
    s = image_size
    if train:
        return [v2.Resize((_scaled(s, 9 / 8),) * 2), v2.RandomCrop(s), v2.RandomHorizontalFlip()]
    return [v2.Resize((s, s))]


@TRANSFORMS.register("clf")
def clf(train: bool, image_size: int) -> list:
    s = image_size
    if train:
        return [v2.Resize((_scaled(s, 8 / 7),) * 2), v2.RandomCrop(s), v2.RandomHorizontalFlip()]
    return [v2.Resize((s, s))]


@TRANSFORMS.register("das", aliases=("rdml",))
def das(train: bool, image_size: int) -> list:
    s = image_size
    if train:
        return [v2.RandomResizedCrop(s), v2.RandomHorizontalFlip()]
    return [v2.Resize(_scaled(s, 8 / 7)), v2.CenterCrop(s)]


@TRANSFORMS.register("abir", aliases=("deep_metric",))
def abir(train: bool, image_size: int) -> list:
    s = image_size
    if train:
        return [v2.Resize(_scaled(s, 8 / 7)), v2.RandomResizedCrop(s, scale=(0.16, 1.0)), v2.RandomHorizontalFlip()]
    return [v2.Resize(_scaled(s, 8 / 7)), v2.CenterCrop(s)]


@TRANSFORMS.register("strong", aliases=("simclr",))
@declare(Option("crop_scale", float, 0.25, "smallest training crop, as a fraction of the image area", low=0,
                low_ok=False, high=1),
         Option("hflip", bool, True, "random horizontal flips in training", negatable=True))
def strong(train: bool, image_size: int, crop_scale: float = 0.25, hflip: bool = True) -> list:
    s = image_size
    if train:
        flip = [v2.RandomHorizontalFlip()] if hflip else []
        return [v2.RandomResizedCrop(s, scale=(crop_scale, 1.0)), *flip,
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2)]
    return [v2.Resize((s, s))]


@TRANSFORMS.register("landmark", aliases=("cirtorch",))
def landmark(train: bool, image_size: int) -> list:
    return []


def build_transform(preset: str, train: bool, image_size: int = 224,
                    normalize: InputSpec | None = None, **options: Any) -> Callable:
    """The ``preset`` pipeline for training (random) or evaluation (deterministic) at ``image_size``.

    ``options`` are the preset's own declared options (``crop_scale=0.5`` for ``strong``).

    Returns a callable mapping a PIL RGB image or a uint8 (3, H, W) tensor (float tensors are refused:
    :class:`~metric_retrieval.data.batch.Normalize` takes uint8) to the uint8 (3, H, W) image before normalisation: what
    the training and evaluation loaders ship, normalised on the device by :func:`build_normalize`
    (:mod:`metric_retrieval.data.batch`). With ``normalize=model.input_spec`` it ends in that normalisation and returns
    the float32 (3, H, W) network input. An unknown preset raises
    :class:`~metric_retrieval.utils.errors.UnknownOptionError` listing the presets.
    """
    name = TRANSFORMS.canonical(preset)
    steps = TRANSFORMS.get(name)(train, int(image_size), **options) + [v2.ToImage(), v2.ToPureTensor()]
    if normalize:
        steps.append(build_normalize(normalize))
    return v2.Compose(steps)


def build_normalize(spec: InputSpec) -> Normalize:
    """uint8 → float32 normalisation of a model's ``input_spec``: ``RGB`` = ``(x/255 − mean) / std``;
    ``BGR255`` = channels reversed, ``(x − mean) / std`` on the 0-255 scale (Caffe weights, Deep_Metric)."""
    if spec.colour == "BGR255":
        return Normalize([m / 255 for m in spec.mean], [s / 255 for s in spec.std], bgr=True)
    if spec.colour == "RGB":
        return Normalize(spec.mean, spec.std)
    raise ValueError(f"input_spec colour must be RGB or BGR255, got {spec.colour!r}")


def min_decode_scale(transform: Callable | None, width: int, height: int) -> float:
    """The smallest decode scale in (0, 1] of a ``width`` x ``height`` image that loses nothing for ``transform``.

    Reduced-size JPEG decoding (DCT scaling, an antialiased downscale by 2, 4 or 8) is exact in spirit
    only while the pipeline's first geometric step still *downsamples* from the decoded image, so each
    step's requirement is kept at every random draw:

    - ``Resize((h, w))``: both decoded sides >= the output, scale >= max(w/W, h/H);
      ``Resize(s)`` (shorter side): scale >= s / min(W, H).
    - ``RandomResizedCrop((h, w), scale=(a, b), ratio=(r1, r2))``: the smallest crop it can draw has area
      a·W·H and aspect r1 (narrowest, width sqrt(a·W·H·r1)) or r2 (flattest, height sqrt(a·W·H/r2)); it must
      still have >= w columns and >= h rows after decoding, so
      scale >= max(w / sqrt(a·W·H·r1), h / sqrt(a·W·H/r2)). With the torchvision defaults (a = 0.08) this
      allows a reduction only for photos above ~1000 px, which is the point: small crops are never blurred.
    - anything else first (a crop at native resolution, no resize, a non-v2 callable): 1 (full size).
    """
    steps = getattr(transform, "transforms", [transform])
    first = steps[0] if steps else None
    if isinstance(first, v2.Resize) and first.size is not None:
        if len(first.size) == 1:
            scale = first.size[0] / min(width, height)
        else:
            scale = max(first.size[1] / width, first.size[0] / height)
    elif isinstance(first, v2.RandomResizedCrop):
        smallest_area = first.scale[0] * width * height
        out_h, out_w = first.size
        narrowest, flattest = math.sqrt(smallest_area * first.ratio[0]), math.sqrt(smallest_area / first.ratio[1])
        scale = max(out_w / narrowest, out_h / flattest)
    else:
        return 1.0
    return min(1.0, scale)


def list_transforms() -> list[str]:
    return TRANSFORMS.names()


__all__ = ["DEFAULT_TRANSFORM", "TRANSFORMS", "build_normalize", "build_transform", "list_transforms",
           "min_decode_scale"]
