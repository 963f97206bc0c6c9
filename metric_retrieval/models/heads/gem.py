"""GeM head (cirtorch) — Radenović, Tolias & Chum, "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018 (arXiv 1711.02512).

``GeM(x)`` with one learnable ``p`` (init 3, eps 1e-6) → L2 → optional whitening ``Linear(C, D)`` with bias →
L2. ``p`` is trained with 10× the learning rate and no weight decay, as in cirtorch (``lr_multipliers``, turned
into an optimiser parameter group by the trainer). ``whitening=None`` (default) adds the whitening layer
exactly when ``feature_dim`` is given and differs from C; ``True`` forces it (D = ``feature_dim`` or C;
cirtorch's ``-w`` nets use D = C).
"""
from __future__ import annotations

import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.models.pooling import GeM
from metric_retrieval.utils.options import Option

__all__ = ["GeMHead"]


class GeMHead(Head):
    """GeM pooling + L2 (+ whitening FC + L2); returns ``(embedding (B, D), None)``.

    Args:
        in_channels: backbone width C.
        feature_dim: D (default C; needs the whitening layer when different from C).
        num_classes: ignored.
        gem_p: initial p (default 3).
        learn_p: learn p (default True, cirtorch) or keep it fixed.
        whitening: add ``Linear(C, D)`` + L2 (``None`` = only when D ≠ C).
        embedding_norm: L2-normalise the output (default True).
    """

    options = (Option("gem_p", float, 3.0, "initial GeM exponent p", low=0.0, low_ok=False, flag=False),
               Option("learn_p", bool, True, "learn p (cirtorch) or keep it fixed", flag=False),
               Option("whitening", bool, None, "add Linear(C, D) + L2 (default: only when D != C)", flag=False),
               EMBEDDING_NORM)
    lr_multipliers = {"pool.p": 10.0}

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 gem_p: float = 3.0, learn_p: bool = True, whitening: bool | None = None,
                 embedding_norm: bool = True) -> None:
        super().__init__()
        dim = self._positive("feature_dim", feature_dim or in_channels)
        if whitening is None:
            whitening = dim != in_channels
        if not whitening and dim != in_channels:
            raise ModelConfigError(f"the gem head without whitening has the backbone's width {in_channels}; "
                                   f"got feature_dim={feature_dim} (set whitening=True to project)")
        self.feature_dim = dim
        self.num_classes = 0
        self.embedding_norm = embedding_norm
        self.pool = GeM(p=gem_p, eps=1e-6, learn_p=learn_p)
        self.whiten = nn.Linear(in_channels, dim, bias=True) if whitening else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``(B, C, H, W)`` → ``(embedding (B, D), None)``."""
        v = l2n(self.pool(x))
        if self.whiten is not None:
            v = self.whiten(v)
            if self.embedding_norm:
                v = l2n(v)
        return v, None
