"""Token head for ViT backbones: pooled token → linear or identity projection → L2.

The ViT DML recipes (Ermolov et al., "Hyperbolic Vision Transformers", CVPR 2022; Kim et al., "HIER",
CVPR 2023) embed the class token (or pooled patch tokens) of a ViT-S/16 with a linear layer to D = 384 or
512, or use the 384-d token itself. The backbone's ``token_pool`` has already pooled the tokens into a
``(B, C, 1, 1)`` map (see :mod:`metric_retrieval.models.backbones.timm_backbone`); on a larger map this head averages
it.
"""
from __future__ import annotations

import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.models.pooling import spoc
from metric_retrieval.utils.options import Option

__all__ = ["TokenHead"]

PROJECTIONS = ("linear", "identity")


class TokenHead(Head):
    """``embedding = L2(proj(mean_{h,w} x))``; ``logits`` is always ``None``.

    Args:
        in_channels: token width C.
        feature_dim: D (default C; ``identity`` needs D = C).
        num_classes: ignored (no classifier).
        projection: ``linear`` (``Linear(C, D)`` with bias, default) or ``identity``.
        embedding_norm: L2-normalise the embedding (default True).
    """

    options = (Option("projection", str, "linear", "linear (Linear(C, D)) or identity (D = C)", choices=PROJECTIONS,
                      flag=False), EMBEDDING_NORM)

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 projection: str = "linear", embedding_norm: bool = True) -> None:
        super().__init__()
        if projection not in PROJECTIONS:
            raise ModelConfigError(f"unknown token projection {projection!r}; choose one of: "
                                   f"{', '.join(PROJECTIONS)}")
        self.feature_dim = self._positive("feature_dim", feature_dim or in_channels)
        if projection == "identity" and self.feature_dim != in_channels:
            raise ModelConfigError(f"projection=identity keeps the token width {in_channels}; got "
                                   f"feature_dim={feature_dim} (use projection=linear)")
        self.num_classes = 0
        self.embedding_norm = embedding_norm
        self.proj = nn.Linear(in_channels, self.feature_dim) if projection == "linear" else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``(B, C, H, W)`` (``(B, C, 1, 1)`` from a pooled token) → ``(embedding (B, D), None)``."""
        e = self.proj(spoc(x))
        return (l2n(e) if self.embedding_norm else e), None
