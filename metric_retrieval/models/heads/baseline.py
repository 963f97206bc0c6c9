"""Revisiting-DML baseline head: global pooling → Linear → L2 (Roth et al., ICML 2020, arXiv 2002.08473).

RDML ``resnet50_frozen_normalize``: ``GAP`` (``avg``), or ``GAP + GMP`` summed
(``avgmax``, arch token ``double``) → ``Linear(C, D)`` with bias (default init) → L2 (``normalize``; set
``embedding_norm=False`` for the un-normalised ``resnet50_frozen`` variant). No classifier. Default D = 128
(RDML ``--embed_dim``). The backbone's BatchNorm is frozen by default (``frozen``).
"""
from __future__ import annotations

import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, l2n
from metric_retrieval.models.pooling import GLOBAL_POOLINGS, POOLING, check_pooling

__all__ = ["BaselineHead"]

POOLINGS = ("avg", "avgmax")  # keys of GLOBAL_POOLINGS


class BaselineHead(Head):
    """``embedding = L2(Linear(pool(x)))``; ``logits`` is always ``None``.

    Args:
        in_channels: backbone width C.
        feature_dim: D (default 128).
        num_classes: ignored (the baseline has no classifier).
        pooling: ``avg`` (default) or ``avgmax``.
        embedding_norm: L2-normalise the embedding (default True).
    """

    options = (POOLING, EMBEDDING_NORM)
    backbone_defaults = {"frozen_bn": True}

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 pooling: str = "avg", embedding_norm: bool = True) -> None:
        super().__init__()
        self.pooling = check_pooling(pooling, POOLINGS, "baseline")
        self.feature_dim = self._positive("feature_dim", feature_dim or 128)
        self.num_classes = 0
        self.embedding_norm = embedding_norm
        self.fc = nn.Linear(in_channels, self.feature_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``(B, C, H, W)`` → ``(embedding (B, D), None)``."""
        e = self.fc(GLOBAL_POOLINGS[self.pooling](x))
        return (l2n(e) if self.embedding_norm else e), None
