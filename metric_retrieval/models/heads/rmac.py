"""R-MAC — Tolias, Sicre & Jégou, "Particular Object Retrieval with Integral Max-Pooling of CNN
Activations", ICLR 2016 (arXiv 1511.05879).

:func:`rmac_regions` is the rigid multi-scale grid of square regions shared by Tolias'
``rmac_regionvec_act.m``, Gordo's ``deep-retrieval``, Kim & Yoon and cirtorch
(``cirtorch/layers/functional.py`` ``rmac``): overlap 0.4, ``steps = 2..7`` along the long side, ``L``
levels of side ``floor(2·min(H, W)/(l + 1))``.

**Grid space.** :func:`rmac_regions` computes the grid on the *feature map* (Tolias, cirtorch): a
region ``(x, y, s)`` pools rows ``y .. y+s-1`` and columns ``x .. x+s-1`` of the ``H×W`` map; it needs no
image size, is exact for any input and works in a batch. The regional-attention original
(jaeyoon1603/Retrieval-RegionalAttention ``Common.py``) instead computes the grid on the image's pixel size
(its grid index from the pixel aspect ratio), rounds each box to the 1/32 map with an inclusive end and pools
the rectangle it covers: :func:`original_map_boxes`. The two are different grids, not a rounding detail:
at least 90% of the boxes differ at 1024×768, 768×1024 and 1024×683, and the region count can differ (70 in
the original vs 85 on the map for a 517×288 image). :func:`original_map_boxes` reproduces the original's boxes exactly
(``tests/models/test_ra_original_grid.py`` against a transcription of ``Common.py``); the ``regional_attention``
head uses it by default (``grid: original``). No whole-map region is added unless
``include_global=True`` (cirtorch adds it; Tolias/DIR/RA do not).

:class:`RMACHead`: per region MAC → L2 → PCA-whitening ``P (v − μ)`` (buffers set by :meth:`set_whitening`,
identity by default) → L2 → sum over regions → L2 (Tolias ``test.m``). No learnable
parameters; the output width is the backbone's C.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.utils.options import Option

__all__ = ["RMACHead", "RegionWhitening", "box_pool", "map_regions", "original_map_boxes", "original_pixel_regions",
           "region_pool", "rmac_grid_index", "rmac_regions"]

OVERLAP = Fraction(2, 5)
STEPS = (2, 3, 4, 5, 6, 7)


@lru_cache(maxsize=256)
def rmac_regions(H: int, W: int, L: int = 3) -> tuple[tuple[int, int, int], ...]:
    """R-MAC regions of an ``H×W`` map (or image) for ``L`` levels as ``(x, y, side)`` with 0-based top-left.

    Order: level by level; within a level y outer, x inner (all reference implementations). The offsets
    ``floor(wl2 + k·b) − wl2`` are computed with exact fractions so integral positions never lose one to float
    rounding.

    >>> rmac_regions(24, 32, 1)
    ((0, 0, 24), (8, 0, 24))
    >>> len(rmac_regions(768, 1024, 3)), len(rmac_regions(1024, 1024, 3))
    (20, 14)
    """
    if H <= 0 or W <= 0 or L < 1:
        raise ValueError(f"rmac_regions needs H, W >= 1 and L >= 1, got H={H}, W={W}, L={L}")
    w = min(H, W)
    idx = rmac_grid_index(H, W)
    wd = idx if H < W else 0
    hd = idx if H > W else 0
    regions: list[tuple[int, int, int]] = []
    for level in range(1, L + 1):
        wl = math.floor(2 * w / (level + 1))
        if wl == 0:
            continue
        wl2 = math.floor(Fraction(wl, 2) - 1)
        xs = _offsets(W, wl, wl2, level + wd)
        ys = _offsets(H, wl, wl2, level + hd)
        regions.extend((x, y, wl) for y in ys for x in xs)
    return tuple(regions)


def rmac_grid_index(H: int, W: int) -> int:
    """``idx``: 1-based index (MATLAB) into ``STEPS`` of the step count whose level-1 overlap is closest to
    0.4 (first on ties); level l then has ``l + idx`` positions along the long side (``l`` if ``H == W``).

    The overlaps ``1 − b/w`` with ``b = (max(H, W) − w)/(s − 1)`` are compared as exact fractions: in float64
    exact ties such as 5×9 or 20×36 (overlaps 0.6 and 0.2 around 0.4) round either way, and "first on ties"
    (MATLAB's ``min``) would then depend on the rounding."""
    w = min(H, W)
    costs = [abs(1 - Fraction(max(H, W) - w, (s - 1) * w) - OVERLAP) for s in STEPS]
    return costs.index(min(costs)) + 1


def map_regions(x: torch.Tensor, levels: int) -> tuple[tuple[int, int, int], ...]:
    """:func:`rmac_regions` of the map ``x (B, C, H, W)``.

    The sizes are read as Python ints: ``torch.jit.trace`` hands them out as traced tensors, which the exact
    fractions refuse. The grid is then fixed at the traced size, as in the ONNX export (whose spatial size is
    fixed too); an exported model is run at the size it was exported at."""
    return rmac_regions(int(x.shape[-2]), int(x.shape[-1]), levels)


def _offsets(size: int, wl: int, wl2: int, n: int) -> list[int]:
    step = Fraction(size - wl, n - 1) if n > 1 else Fraction(0)
    return [math.floor(wl2 + k * step) - wl2 for k in range(n)]


def original_pixel_regions(height: int, width: int, levels: int = 5) -> list[tuple[int, int, int, int]]:
    """The regional-attention original's regions of a ``height×width`` *image* as ``(x, y, w, h)`` pixels.

    Its arithmetic (``Common.get_rmac_region_coordinates``): float32 step counts and ``argmin`` for the grid
    index, float64 offsets, Python ``round`` (half to even) of every coordinate, then boxes that overflow the
    border shifted back inside. Order: level by level, y outer, x inner.
    """
    steps = np.array(STEPS, dtype=np.float32)
    w = min(height, width)
    b = (max(height, width) - w) / (steps - 1)
    idx = int(np.argmin(np.abs(((w ** 2 - w * b) / w ** 2) - float(OVERLAP)))) + 1
    wd, hd = (idx, 0) if height < width else (0, idx) if height > width else (0, 0)
    regions = []
    for level in range(1, levels + 1):
        wl = np.floor(2 * w / (level + 1))
        wl2 = np.floor(wl / 2 - 1)
        centres = []
        for size, extra in ((width, wd), (height, hd)):
            step = (size - wl) / (level + extra - 1) if level + extra - 1 > 0 else 0
            centres.append(np.floor(wl2 + step * np.arange(level + extra)) - wl2)
        for y in centres[1]:
            for x in centres[0]:
                rx, ry, side = int(round(x)), int(round(y)), int(round(wl))
                rx -= max(rx + side - width, 0)
                ry -= max(ry + side - height, 0)
                regions.append((rx, ry, side, side))
    return regions


def original_map_boxes(height: int, width: int, map_h: int, map_w: int, levels: int = 5,
                       scale: float = 1 / 32) -> list[tuple[int, int, int, int]]:
    """The map rectangles ``(x0, y0, x1, y1)`` (end exclusive) the original RoI-pools for an image of
    ``height×width`` pixels whose feature map is ``map_h×map_w``.

    Each pixel box ``(x, y, w, h)`` becomes the inclusive corners ``(x, y, x+w−1, y+h−1)``, scaled by
    ``scale`` and rounded half to even (``torch.round``); the pooled rows are ``y0 .. y1`` inclusive (at least
    one), clipped to the map (``Common.RoIPool`` with a 1×1 output).
    """
    # float32 products rounded half to even, as torch.round in the original (NumPy: no torch device involved,
    # so the grid is also computed under a meta-device or traced forward)
    corners = np.array([(x, y, x + w - 1, y + h - 1) for x, y, w, h in original_pixel_regions(height, width, levels)],
                       dtype=np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = np.round(corners * np.float32(scale)).astype(np.int64).T
    boxes = []
    for a, b, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
        right, bottom = a + max(c - a + 1, 1), b + max(d - b + 1, 1)
        boxes.append((min(map_w, max(0, a)), min(map_h, max(0, b)), min(map_w, max(0, right)),
                      min(map_h, max(0, bottom))))
    return boxes


def box_pool(x: torch.Tensor, boxes, mode: str = "max") -> torch.Tensor:
    """Pool (``max`` or ``mean``) each map rectangle ``(x0, y0, x1, y1)`` (end exclusive): ``(B, C, H, W)`` →
    ``(B, R, C)``; an empty rectangle gives 0 (the original's RoI max pooling, and the mean pooling of its
    attention network)."""
    reduce = torch.amax if mode == "max" else torch.mean
    pooled = [reduce(x[:, :, y0:y1, x0:x1], dim=(-2, -1)) if x1 > x0 and y1 > y0 else x.new_zeros(x.shape[:2])
              for x0, y0, x1, y1 in boxes]
    return torch.stack(pooled, dim=1)


def region_pool(x: torch.Tensor, regions, mode: str = "max") -> torch.Tensor:
    """Pool each feature-map region: ``(B, C, H, W)`` → ``(B, R, C)`` (``mode`` ``max`` or ``mean``)."""
    reduce = torch.amax if mode == "max" else torch.mean
    return torch.stack([reduce(x[:, :, y:y + s, x0:x0 + s], dim=(-2, -1)) for x0, y, s in regions], dim=1)


class RegionWhitening(nn.Module):
    """PCA-whitening ``z = P (v − μ)`` applied to region vectors, held as buffers (identity by default).

    Args:
        channels: C; ``mean`` is ``(C,)`` and ``projection`` ``(C, C)`` (rows = whitened axes).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("projection", torch.eye(channels))

    def set(self, mean: torch.Tensor, projection: torch.Tensor) -> None:
        mean = torch.as_tensor(mean, dtype=self.mean.dtype)
        projection = torch.as_tensor(projection, dtype=self.projection.dtype)
        c = self.channels
        if tuple(mean.shape) != (c,) or tuple(projection.shape) != (c, c):
            raise ModelConfigError(f"set_whitening expects mean ({c},) and projection ({c}, {c}); got mean "
                                   f"{tuple(mean.shape)} and projection {tuple(projection.shape)}")
        self.mean.copy_(mean)
        self.projection.copy_(projection)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` → ``(..., C)``."""
        return (v - self.mean) @ self.projection.T


def check_fixed_width(name: str, in_channels: int, feature_dim: int | None) -> int:
    if feature_dim not in (None, in_channels):
        raise ModelConfigError(f"the {name} head's embedding has the backbone's width {in_channels}; "
                               f"pass feature_dim={in_channels} or None (got {feature_dim})")
    return int(in_channels)


class RMACHead(Head):
    """R-MAC descriptor (no learnable parameters); returns ``(embedding (B, C), None)``.

    Args:
        in_channels: backbone width C; the embedding has the same width.
        feature_dim: must be ``None`` or C.
        num_classes: ignored.
        levels: L (default 3, Tolias/cirtorch).
        include_global: add the whole map as an extra region (cirtorch).
        embedding_norm: L2-normalise the aggregated vector (default True).
    """

    options = (Option("levels", int, 3, "R-MAC grid levels L", low=1, flag=False),
               Option("include_global", bool, False, "add the whole map as an extra region (cirtorch)", flag=False),
               EMBEDDING_NORM)

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 levels: int = 3, include_global: bool = False, embedding_norm: bool = True) -> None:
        super().__init__()
        self.feature_dim = check_fixed_width("rmac", in_channels, feature_dim)
        self.num_classes = 0
        self.levels = self._positive("levels", levels)
        self.include_global = include_global
        self.embedding_norm = embedding_norm
        self.whitening = RegionWhitening(in_channels)

    def set_whitening(self, mean: torch.Tensor, projection: torch.Tensor) -> None:
        """Use PCA-whitening ``P (v − mean)`` per region (``mean (C,)``, ``projection (C, C)``)."""
        self.whitening.set(mean, projection)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``(B, C, H, W)`` → ``(embedding (B, C), None)``."""
        regional = region_pool(x, map_regions(x, self.levels), "max")  # (B, R, C)
        if self.include_global:
            regional = torch.cat([x.amax(dim=(-2, -1)).unsqueeze(1), regional], dim=1)
        v = l2n(self.whitening(l2n(regional))).sum(dim=1)
        return (l2n(v) if self.embedding_norm else v), None
