"""CLF head — leftthomas "Combination of Multiple Local Features" (unpublished; NormSoftmax history).

leftthomas/CLF ``model.py`` of the README era (commits d59d718 / 0c20d13): global pooling (C-d) →
``Linear(C, D)`` without bias = ``e``; retrieval embedding = ``L2(e)`` (taken before the BatchNorm);
classifier ``BatchNorm1d(D) → Linear(D, M)`` without bias on ``e``. Parameters ``C·D + 2D + D·M``; the
README table (12.12M, ...) uses D = 1536. Poolings: ``max`` (MAP, the default at d59d718, which produced the
tables), ``avg``, ``gem`` (p = 3 fixed), ``sap`` (parameter-free self-attention pooling, default at 0c20d13).
Paper backbone options: ``stage3_stride=1``, ``frozen_bn``.
"""
from __future__ import annotations

import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, l2n
from metric_retrieval.models.pooling import GLOBAL_POOLINGS, POOLING, check_pooling

__all__ = ["CLF_POOLINGS", "CLFHead"]

CLF_POOLINGS = ("max", "avg", "gem", "sap")  # keys of GLOBAL_POOLINGS


class CLFHead(Head):
    """Pool → bias-free refactor FC → (L2 embedding, BN1d → bias-free classifier logits).

    Args:
        in_channels: backbone width C.
        feature_dim: D (default 512, the CLF code default; the README tables use 1536).
        num_classes: M (0/None: no classifier).
        pooling: one of ``max`` (default), ``avg``, ``gem``, ``sap``.
        embedding_norm: L2-normalise the embedding (default True).
    """

    options = (POOLING, EMBEDDING_NORM)
    backbone_defaults = {"stage3_stride": 1, "frozen_bn": True}

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 pooling: str = "max", embedding_norm: bool = True) -> None:
        super().__init__()
        self.pooling = check_pooling(pooling, CLF_POOLINGS, "CLF")
        self.feature_dim = self._positive("feature_dim", feature_dim or 512)
        self.num_classes = self._num_classes(num_classes)
        self.embedding_norm = embedding_norm
        self.refactor = nn.Linear(in_channels, self.feature_dim, bias=False)
        self.classifier = (nn.Sequential(nn.BatchNorm1d(self.feature_dim),
                                         nn.Linear(self.feature_dim, self.num_classes, bias=False))
                           if self.num_classes else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, C, H, W)`` → ``(embedding (B, D), logits (B, M) or None)``."""
        e = self.refactor(GLOBAL_POOLINGS[self.pooling](x))
        logits = self.classifier(e) if self.classifier is not None else None
        return (l2n(e) if self.embedding_norm else e), logits
