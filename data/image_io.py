"""Image decoding shared by every dataset: RGB conversion, optional box crop, optional draft decoding."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def load_image(path: str, box: Sequence[float] | None = None, max_size: int | None = None) -> Image.Image:
    """Open ``path`` as an RGB PIL image, cropped to ``box`` = (x1, y1, x2, y2) when given.

    Args:
        path: image file (any format PIL reads; grayscale, palette and CMYK become RGB).
        box: crop in original-image pixel coordinates (end exclusive, clamped to the image;
            PIL rounds fractional coordinates).
        max_size: when set, JPEGs are decoded at a reduced DCT scale (``Image.draft``) that still keeps
            both sides >= ``max_size`` (a 2-8x faster decode for large photos; the image handed to the
            transform is then smaller, so results change slightly). None (default) decodes at full size.
    """
    with Image.open(path) as im:
        full_w, full_h = im.size
        if max_size is not None and im.format == "JPEG":
            im.draft("RGB", (max_size, max_size))
        sx, sy = im.size[0] / full_w, im.size[1] / full_h
        img = im.convert("RGB")
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = max(0.0, x1 * sx), min(float(img.width), x2 * sx)
        y1, y2 = max(0.0, y1 * sy), min(float(img.height), y2 * sy)
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            img = img.crop((x1, y1, x2, y2))
    return img


def check_image(path: str) -> str | None:
    """None when ``path`` decodes, otherwise a short reason (draft decode: fast for JPEG, full for others)."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (64, 64))
            im.load()
    except FileNotFoundError:
        return "missing"
    except Exception as err:  # noqa: BLE001 - any decoder failure makes the file unusable
        return f"{type(err).__name__}: {err}"
    return None


__all__ = ["check_image", "load_image"]
