"""Procedural images for the synthetic datasets: a textured shape on a noisy background.

A class is a (shape, colour, texture) combination; train and test classes draw from the same
attribute values, so a model trained on one half of the classes can still tell the other half apart
(the zero-shot split stays learnable). Nuisances: position, scale, rotation, background level and
noise, brightness.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross")
COLOURS = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 210, 40), (210, 50, 200), (40, 200, 210),
           (240, 130, 30), (120, 50, 170), (245, 245, 245), (120, 70, 30))
TEXTURES = ("solid", "stripes", "cross_stripes", "dots", "checker")
NUM_ATTRIBUTE_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)  # 400


@lru_cache(maxsize=1)
def _class_order() -> np.ndarray:
    # A fixed permutation (independent of the data seed) so neighbouring class ids differ in every attribute.
    return np.random.default_rng(20240611).permutation(NUM_ATTRIBUTE_CLASSES)


def attributes(class_index: int) -> tuple[str, tuple[int, int, int], str]:
    """(shape, RGB colour, texture) of class ``class_index`` (0-based; repeats after 400 classes)."""
    code = int(_class_order()[class_index % NUM_ATTRIBUTE_CLASSES])
    shape, rest = divmod(code, len(COLOURS) * len(TEXTURES))
    colour, texture = divmod(rest, len(TEXTURES))
    return SHAPES[shape], COLOURS[colour], TEXTURES[texture]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "star":
        pts = [(r if k % 2 == 0 else 0.45 * r, k * math.pi / 5) for k in range(10)]
    elif shape == "cross":
        a = 0.35
        base = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1), (-a, -1), (-a, -a), (-1, -a), (-1, a),
                (-a, a), (-a, 1)]
        pts = [(r * math.hypot(x, y) / math.sqrt(2) * 1.3, math.atan2(y, x)) for x, y in base]
    else:
        sides = {"square": 4, "triangle": 3, "diamond": 4, "pentagon": 5, "hexagon": 6}[shape]
        offset = math.pi / 4 if shape == "square" else 0.0
        pts = [(r, offset + 2 * math.pi * k / sides) for k in range(sides)]
        if shape == "diamond":
            pts = [(r * (1.0 if k % 2 == 0 else 0.6), 2 * math.pi * k / 4) for k in range(4)]
    return [(cx + rad * math.cos(t + angle), cy + rad * math.sin(t + angle)) for rad, t in pts]


@lru_cache(maxsize=8)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


def _texture(texture: str, w: int, h: int, cx: float, cy: float, period: float, angle: float) -> np.ndarray:
    """Boolean (H, W): True where the texture shows the class colour, False where it shows the dark tone."""
    if texture == "solid":
        return np.ones((h, w), dtype=bool)
    xx, yy = _grid(w, h)
    u = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / period
    v = (-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)) / period
    if texture == "stripes":
        return (np.floor(u) % 2) == 0
    if texture == "cross_stripes":
        return ((np.floor(u) % 2) == 0) & ((np.floor(v) % 2) == 0)
    if texture == "dots":
        return ((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2) > 0.09
    return ((np.floor(u) + np.floor(v)) % 2) == 0  # checker


def render(class_index: int, rng: np.random.Generator, size: tuple[int, int], scale: tuple[float, float] = (0.25, 0.4),
           occlusion: float = 0.0) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """One RGB image of class ``class_index`` and the object's box (x1, y1, x2, y2).

    Args:
        size: (W, H).
        scale: range of the object radius as a fraction of min(W, H).
        occlusion: fraction of the object's box hidden behind a noise patch (landmark "junk"/hard views).
    """
    w, h = size
    shape, colour, texture = attributes(class_index)
    r = float(rng.uniform(*scale)) * min(w, h)
    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
    angle = float(rng.uniform(0, 2 * math.pi))
    level = float(rng.uniform(70, 180))
    tint = rng.uniform(-25, 25, size=3)
    background = level + tint + rng.normal(0, 18, size=(h, w, 3))
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    mask = np.asarray(mask_img) > 0
    period = max(2.0, r / 3.0)
    pattern = _texture(texture, w, h, cx, cy, period, angle)
    col = np.asarray(colour, dtype=np.float32)
    obj = np.where(pattern[..., None], col, col * 0.35)
    img = np.where(mask[..., None], obj + rng.normal(0, 6, size=(h, w, 3)), background)
    box_img = mask_img.getbbox() or (0, 0, w, h)
    if occlusion > 0:
        x1, y1, x2, y2 = box_img
        ow, oh = (x2 - x1) * math.sqrt(occlusion), (y2 - y1) * math.sqrt(occlusion)
        ox, oy = x1 + rng.uniform(0, max(x2 - x1 - ow, 1)), y1 + rng.uniform(0, max(y2 - y1 - oh, 1))
        ys, xs = slice(int(oy), int(oy + oh)), slice(int(ox), int(ox + ow))
        img[ys, xs] = rng.uniform(60, 190) + rng.normal(0, 18, size=img[ys, xs].shape)
    img = img * float(rng.uniform(0.8, 1.2))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    return out, tuple(float(v) for v in box_img)  # type: ignore[return-value]
