"""CGD head — Jun et al., "Combination of Multiple Global Descriptors for Image Retrieval", arXiv 1903.10663.

Following leftthomas/CGD ``model.py`` and the naver/cgd figure. For ``gd_config`` letters
``S`` (SPoC, mean), ``M`` (MAC, max), ``G`` (GeM, p = 3 fixed), one branch per letter:

    branch_i = L2(W_i · GD_i(X)),  W_i ∈ R^{(D/n)×C} without bias
    embedding = L2(concat_i branch_i) ∈ R^D

Auxiliary classifier on the FIRST descriptor's raw C-d vector: ``BatchNorm1d(C) → Linear(C, M)`` with bias.
Parameters: ``C·D + 2C + (C + 1)·M`` (the CGD README's counts). Paper backbone options:
``stage3_stride=1``, ``frozen_bn``.
"""
from __future__ import annotations

import torch
from torch import nn

from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.models.pooling import GLOBAL_POOLINGS
from metric_retrieval.utils.options import Option

__all__ = ["GD_CONFIGS", "CGDHead"]

GD_CONFIGS = ("S", "M", "G", "SM", "MS", "SG", "GS", "MG", "GM", "SMG", "MSG", "GSM")
_DESCRIPTORS = {"S": "avg", "M": "max", "G": "gem"}  # gd_config letter -> GLOBAL_POOLINGS key


class CGDHead(Head):
    """Combination of global descriptors; returns ``(embedding (B, D), logits (B, M) or None)``.

    Args:
        in_channels: backbone width C (2048 for ResNet-50).
        feature_dim: D, divisible by ``len(gd_config)`` (default 1536, the naver checkpoint).
        num_classes: M, classes of the auxiliary classifier (0/None: no classifier, logits None).
        gd_config: one of ``GD_CONFIGS`` (default ``"SG"``, leftthomas).
        embedding_norm: L2-normalise the concatenation (default True, the paper; False returns the
            concatenation of the L2-normalised branches).
    """

    options = (Option("gd_config", str, None, "global descriptors of a multi-descriptor head, e.g. SG, MG, SMG"),
               EMBEDDING_NORM)
    backbone_defaults = {"stage3_stride": 1, "frozen_bn": True}

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 gd_config: str = "SG", embedding_norm: bool = True) -> None:
        super().__init__()
        if gd_config not in GD_CONFIGS:
            raise ModelConfigError(f"unknown gd_config {gd_config!r}; choose one of: {', '.join(GD_CONFIGS)}")
        self.gd_config = gd_config
        self.feature_dim = self._positive("feature_dim", feature_dim or 1536)
        n = len(gd_config)
        if self.feature_dim % n:
            raise ModelConfigError(f"feature_dim {self.feature_dim} is not divisible by the {n} descriptors "
                                   f"of gd_config {gd_config!r}")
        self.num_classes = self._num_classes(num_classes)
        self.embedding_norm = embedding_norm
        self.branches = nn.ModuleList(nn.Linear(in_channels, self.feature_dim // n, bias=False)
                                      for _ in gd_config)
        self.auxiliary = (nn.Sequential(nn.BatchNorm1d(in_channels), nn.Linear(in_channels, self.num_classes))
                          if self.num_classes else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, C, H, W)`` → ``(embedding (B, D), logits (B, M) or None)``."""
        descriptors = [GLOBAL_POOLINGS[_DESCRIPTORS[letter]](x) for letter in self.gd_config]
        parts = [l2n(fc(d)) for fc, d in zip(self.branches, descriptors)]
        embedding = torch.cat(parts, dim=1)
        if self.embedding_norm:
            embedding = l2n(embedding)
        logits = self.auxiliary(descriptors[0]) if self.auxiliary is not None else None
        return embedding, logits
