"""Image decoding shared by every dataset, the embedder and the server: a pixel limit, RGB conversion, optional
box crop, reduced-size JPEG decoding.

Every image is opened by :func:`open_image`, which reads the header only and refuses one of more than
:func:`max_pixels` pixels (width × height, default :data:`DEFAULT_MAX_PIXELS`; ``--max_pixels`` of the CLIs) with
:class:`ImageTooLargeError` before a pixel is decoded: a 420 KB PNG can hold 12000×12000 pixels (1.35 GB decoded).
:func:`to_rgb` converts every mode to 8-bit RGB: high-bit-depth greys (``I;16``, ``I``: 16-bit values scaled by
255/65535; ``F``: values in [0, 1] scaled by 255) are scaled instead of clipped to 0 or 255 as PIL's
``convert("RGB")`` does; CMYK, palette, grey and alpha modes go through PIL's conversion (alpha is dropped).

Two paths, chosen by ``RetrievalDataset(decode=...)``:

- ``pil``: :func:`load_image`, a full-size PIL image (torchvision ``ImageFolder`` style).
- ``fast`` (also behind ``cache`` and ``auto``): :func:`decode_image`, a uint8 (3, H, W) tensor, so the
  transform runs on tensors. JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8; PIL ``Image.draft``)
  that the transform's first geometric step allows (:func:`metric_retrieval.data.transforms.min_decode_scale`); where no
  reduction is allowed, by ``torchvision.io.decode_jpeg`` (same libjpeg-turbo, same pixels, straight into
  the tensor: decode + tensor conversion about 1.2x faster than PIL's here, 500x375 JPEGs).

``--decode gpu`` decodes whole batches on the GPU (nvJPEG) with :func:`decode_jpeg_batch`
(:mod:`metric_retrieval.data.device_decode`).
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from metric_retrieval.utils.lazy import lazy_module

tv_io = lazy_module("torchvision.io")  # imported on first decode: `--help` needs no torchvision
tv_functional = lazy_module("torchvision.transforms.v2.functional")


def _torchvision_jpeg() -> bool:
    """Whether torchvision still has ``io.decode_jpeg`` (deprecated since 0.29 for TorchCodec, not a dependency;
    PIL takes over once it is removed)."""
    return hasattr(tv_io, "decode_jpeg")


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return tv_functional.pil_to_tensor(image)

ScaleRule = Callable[[int, int], float]
DEFAULT_MAX_PIXELS = 40_000_000  # 6300×6300: far above what retrieval needs (224-512 px), 120 MB decoded as RGB
_limit = {"max_pixels": DEFAULT_MAX_PIXELS}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limit (nothing of it was decoded)."""


def set_max_pixels(limit: int) -> None:
    """Set the pixel limit of every later :func:`open_image` in this process (and the loader workers it forks)."""
    if int(limit) < 1:
        raise ValueError(f"the pixel limit must be >= 1, got {limit}")
    _limit["max_pixels"] = int(limit)


def max_pixels() -> int:
    """The pixel limit :func:`open_image` applies (width × height)."""
    return _limit["max_pixels"]


def open_image(source: str | io.IOBase) -> Image.Image:
    """``Image.open(source)`` (a path or a binary file), refused with :class:`ImageTooLargeError` when its header
    declares more than :func:`max_pixels` pixels; nothing is decoded yet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
        try:
            im = Image.open(source)
        except Image.DecompressionBombError as err:  # beyond PIL's own hard limit (2 × 89 M pixels)
            raise ImageTooLargeError(f"the image is larger than the limit of {max_pixels()} pixels ({err})") from None
    width, height = im.size
    if width * height > max_pixels():
        im.close()
        raise ImageTooLargeError(f"the image has {width}x{height} = {width * height} pixels, more than the limit "
                                 f"of {max_pixels()} (--max_pixels)")
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` decoded as 8-bit RGB, high-bit-depth greys scaled (see the module docstring)."""
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if im.mode == "F" else 255.0 / 65535.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


def _draft_size(full: tuple[int, int], region: tuple[float, float], max_size: int | None,
                min_scale: ScaleRule | None) -> tuple[int, int] | None:
    """The size to request from ``Image.draft`` (PIL keeps both decoded sides >= it), or None."""
    if max_size is not None:
        return max_size, max_size
    if min_scale is None:
        return None
    scale = min_scale(max(1, round(region[0])), max(1, round(region[1])))
    if scale >= 1:
        return None
    return math.ceil(full[0] * scale), math.ceil(full[1] * scale)


def load_image(path: str | io.IOBase, box: Sequence[float] | None = None, max_size: int | None = None,
               min_scale: ScaleRule | None = None) -> Image.Image:
    """Open ``path`` as an RGB PIL image, cropped to ``box`` = (x1, y1, x2, y2) when given.

    Args:
        path: image file or an open binary stream (any format PIL reads; grayscale, palette and CMYK become RGB).
        box: crop in original-image pixel coordinates (end exclusive, clamped to the image;
            PIL rounds fractional coordinates).
        max_size: when set, JPEGs are decoded at a reduced DCT scale (``Image.draft``) that still keeps
            both sides >= ``max_size`` (a 2-8x faster decode for large photos; the image handed to the
            transform is then smaller, so results change slightly). None (default) decodes at full size.
        min_scale: ``(width, height) -> scale`` of the (box-cropped) image: JPEGs are decoded at the
            smallest DCT scale >= it (see :func:`metric_retrieval.data.transforms.min_decode_scale`); ignored with
            ``max_size``.
    """
    with open_image(path) as im:
        full = im.size
        _draft(im, box, max_size, min_scale)
        return _to_rgb(im, full, box)


def _to_rgb(im: Image.Image, full: tuple[int, int], box: Sequence[float] | None) -> Image.Image:
    """Decode the (possibly drafted) ``im`` to RGB and crop ``box``, given in ``full``-size coordinates."""
    sx, sy = im.size[0] / full[0], im.size[1] / full[1]
    img = to_rgb(im)
    region = _scaled_box(box, sx, sy, img.width, img.height)
    return img if region is None else img.crop(region)


def _draft(im: Image.Image, box: Sequence[float] | None, max_size: int | None, min_scale: ScaleRule | None) -> bool:
    """Ask a JPEG for reduced-size (DCT-scaled) decoding; True when its size changed."""
    if im.format != "JPEG":
        return False
    full = im.size
    region = full if box is None else _box_size(box, *full)
    size = _draft_size(full, region, max_size, min_scale)
    if size is not None:
        im.draft("RGB", size)
    return im.size != full


def _scaled_box(box: Sequence[float] | None, sx: float, sy: float, width: int, height: int) -> tuple | None:
    """``box`` in decoded pixels, clamped, or None (no box, or less than a pixel left)."""
    if box is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, x1 * sx), min(float(width), x2 * sx)
    y1, y2 = max(0.0, y1 * sy), min(float(height), y2 * sy)
    return (x1, y1, x2, y2) if x2 - x1 >= 1 and y2 - y1 >= 1 else None


def _box_size(box: Sequence[float], width: int, height: int) -> tuple[float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = min(float(width), x2) - max(0.0, x1), min(float(height), y2) - max(0.0, y1)
    return (w, h) if w >= 1 and h >= 1 else (width, height)


def decode_image(path: str, box: Sequence[float] | None = None, max_size: int | None = None,
                 min_scale: ScaleRule | None = None) -> torch.Tensor:
    """:func:`load_image` as a uint8 (3, H, W) RGB tensor, decoded by the faster library for the case.

    JPEGs that may be DCT-scaled go through ``Image.draft`` (decoding 1/4 of the pixels or fewer wins);
    full-size JPEGs through ``torchvision.io.decode_jpeg``, bit-identical to PIL and about 1.2x faster
    here because it decodes straight into the tensor (PIL decodes to RGBX, then copies twice); other
    formats, and JPEGs libjpeg cannot read directly, through PIL. The box is cropped like PIL crops
    (coordinates rounded).
    """
    with open(path, "rb") as f:
        return decode_bytes(f.read(), box, max_size, min_scale)  # PIL parses the header from memory


def decode_bytes(encoded: bytes, box: Sequence[float] | None = None, max_size: int | None = None,
                 min_scale: ScaleRule | None = None) -> torch.Tensor:
    """:func:`decode_image` of a file's contents."""
    with open_image(io.BytesIO(encoded)) as im:
        full = im.size
        if im.format != "JPEG" or _draft(im, box, max_size, min_scale):
            return _pil_to_tensor(_to_rgb(im, full, box))
        image = _libjpeg_decode(encoded)
        if image is None:
            return _pil_to_tensor(_to_rgb(im, full, box))
    return crop_box(image, box)


def decoded_size(encoded: bytes, box: Sequence[float] | None = None, max_size: int | None = None,
                 min_scale: ScaleRule | None = None) -> tuple[int, int]:
    """(H, W) of the image :func:`decode_bytes` returns, read off the header: PIL's ``draft`` only chooses the
    DCT scale, so nothing is decoded."""
    with open_image(io.BytesIO(encoded)) as im:
        full = im.size
        _draft(im, box, max_size, min_scale)
        width, height = im.size
    region = _scaled_box(box, width / full[0], height / full[1], width, height)
    if region is None:
        return height, width
    x1, y1, x2, y2 = (round(v) for v in region)
    return y2 - y1, x2 - x1


def crop_box(image: torch.Tensor, box: Sequence[float] | None) -> torch.Tensor:
    """``image`` (..., H, W) cropped to ``box`` = (x1, y1, x2, y2) as PIL crops it (clamped, rounded); the whole
    image without a box or when less than a pixel of it is left."""
    region = _scaled_box(box, 1.0, 1.0, image.shape[-1], image.shape[-2])
    if region is None:
        return image
    x1, y1, x2, y2 = (round(v) for v in region)
    return image[..., y1:y2, x1:x2]


def _libjpeg_decode(encoded: bytes) -> torch.Tensor | None:
    """Full-size RGB decode by torchvision's libjpeg-turbo, or None where it cannot (PIL then converts)."""
    if not _torchvision_jpeg():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see the import above
            return tv_io.decode_jpeg(torch.frombuffer(bytearray(encoded), dtype=torch.uint8),
                                     mode=tv_io.ImageReadMode.RGB)
    except RuntimeError:  # e.g. a CMYK or arithmetic-coded JPEG
        return None


def decode_jpeg_batch(files: Sequence[torch.Tensor], device: str | torch.device = "cuda") -> list[torch.Tensor]:
    """Decode a batch of encoded JPEGs (1-D uint8 tensors) at full size on ``device``: uint8 (3, H_i, W_i) RGB.

    ``torchvision.io.decode_jpeg(device=...)`` in one call: nvJPEG on ``cuda`` (for training loops whose CPU
    workers cannot keep up, see :mod:`metric_retrieval.data.device_decode`), libjpeg-turbo on ``cpu``. Raises a
    RuntimeError when ``device`` is CUDA and there is none, or when a file does not decode (the whole call fails).
    """
    if not _torchvision_jpeg():
        raise RuntimeError("this torchvision has no torchvision.io.decode_jpeg (use TorchCodec)")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("GPU JPEG decoding needs CUDA (torch.cuda.is_available() is False)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tv_io.decode_jpeg(list(files), mode=tv_io.ImageReadMode.RGB, device=device)


def check_image(path: str) -> str | None:
    """None when ``path`` decodes, otherwise a short reason (draft decode: fast for JPEG, full for others)."""
    try:
        with open_image(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (64, 64))
            im.load()
    except FileNotFoundError:
        return "missing"
    except Exception as err:  # noqa: BLE001 - any decoder failure makes the file unusable
        return f"{type(err).__name__}: {err}"
    return None


__all__ = ["DEFAULT_MAX_PIXELS", "ImageTooLargeError", "check_image", "crop_box", "decode_bytes", "decode_image",
           "decode_jpeg_batch", "decoded_size", "load_image", "max_pixels", "open_image", "set_max_pixels", "to_rgb"]
