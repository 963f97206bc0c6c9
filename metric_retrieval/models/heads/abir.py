"""ABIR head — Nie et al., "Weakly Supervised Image Retrieval via Coarse-scale Feature Fusion and
Multi-level Attention Blocks", ICMR 2019 (pp. 48–52).

With VGG16 taps ``l1 = conv3_3`` (256×56×56), ``l2 = conv4_3`` (512×28×28) and ``g = conv5_3``
(512×14×14), each attention block AB(l, g):

1. SE on the local map (Hu et al.): ``l̃ = l ⊙ sigmoid(W2 ReLU(W1 GAP(l)))`` (``use_se=False``: ``l̃ = l``);
2. compatibility ``c_i = ψᵀ ReLU(W_l l̃_i + W_g ĝ_i + b_g) + b_ψ`` with 1x1 convs, ``ĝ`` = g bilinearly
   up-sampled to l's size;
3. ``α = sigmoid(c)`` (not softmax); output ``α ⊙ l̃``, then global max pooling.

Embedding: ``Linear(512 + 256 + 512 = 1280 → D = 512)`` with bias on ``[GMP(g), GMP(AB1), GMP(AB2)]``,
then L2 (``embedding_norm``; the paper does not say — its evaluation and the binomial loss's ``s < 1`` self
test presume unit vectors, so we normalise by default). No classifier.

Choices for what the paper leaves open (documented deviations):

* intermediate width ``C_int = C_l // 2`` (``inter_ratio=0.5``; the default of Schlemper et al.'s grid
  attention gates); ``W_l`` without bias, ``W_g`` and ``ψ`` with bias (so the formula's ``b_g``, ``b_ψ``);
* SE reduction ``r = 16`` (the SE paper's default), SE FCs with bias
  (:class:`metric_retrieval.models.se.SqueezeExcite`);
* ``W_g`` is applied at g's resolution and then up-sampled: a 1x1 conv commutes with bilinear interpolation
  (weights sum to one), so this equals the formula at a sixteenth of the cost for AB1.

More generally the head takes any list of taps; the last is ``g`` and every earlier one gets a block.

**Input (``input_spec``).** The released code trains VGG16 on Deep_Metric's input: BGR channel order, 0-255
scale minus ``[104, 117, 128]`` (``DEEP_METRIC_BGR255``), although its ImageNet VGG16 weights were trained on
RGB ImageNet-normalised images (what :class:`~metric_retrieval.models.backbones.vgg.VGG16Trunk` declares) and the paper
says "mean-RGB subtraction". We follow the released code, the source of the reported numbers: the head declares
``DEEP_METRIC_BGR255`` and the model's ``input_spec`` (hence every input path's normalisation) is that one.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metric_retrieval.models.backbones.base import DEEP_METRIC_BGR255
from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.models.pooling import mac
from metric_retrieval.models.se import SqueezeExcite
from metric_retrieval.utils.options import Option

__all__ = ["ABIRHead", "AttentionBlock", "SqueezeExcite"]


class AttentionBlock(nn.Module):
    """ABIR attention block AB(l, g) → attended local map ``(B, C_l, H_l, W_l)``."""

    def __init__(self, local_channels: int, global_channels: int, inter_channels: int, use_se: bool = True,
                 se_reduction: int = 16) -> None:
        super().__init__()
        self.se = SqueezeExcite(local_channels, se_reduction) if use_se else None
        self.theta = nn.Conv2d(local_channels, inter_channels, kernel_size=1, bias=False)  # W_l
        self.phi = nn.Conv2d(global_channels, inter_channels, kernel_size=1)  # W_g, b_g
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)  # ψ, b_ψ

    def attention(self, local: torch.Tensor, glob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(l̃, α)``: the (SE-gated) local map and the sigmoid attention map ``(B, 1, H_l, W_l)``."""
        if self.se is not None:
            local = self.se(local)
        g = F.interpolate(self.phi(glob), size=local.shape[-2:], mode="bilinear", align_corners=False)
        return local, torch.sigmoid(self.psi(F.relu(self.theta(local) + g)))

    def forward(self, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        local, alpha = self.attention(local, glob)
        return alpha * local


class ABIRHead(Head):
    """Multi-level attention blocks + coarse-scale fusion.

    Args:
        in_channels: tap widths ``[C_1, ..., C_k, C_g]`` (VGG16 default ``[256, 512, 512]``).
        feature_dim: D (default 512, the paper).
        num_classes: ignored (ABIR trains with the binomial deviance loss only; logits None).
        use_se: SE on the local maps (default True; False = the paper's "w/o SE" ablation).
        se_reduction: SE ratio r (default 16).
        inter_ratio: ``C_int = max(1, int(C_l * inter_ratio))`` (default 0.5).
        embedding_norm: L2-normalise the embedding (default True).
    """

    uses_intermediates = True
    input_spec = DEEP_METRIC_BGR255

    options = (Option("no_se", bool, False, "ABIR ablation without squeeze-and-excitation", to_builder=False),
               Option("use_se", bool, True, "squeeze-and-excitation on the local maps (--no_se sets it off)",
                      flag=False),
               Option("se_reduction", int, 16, "SE reduction ratio r", low=1, flag=False),
               Option("inter_ratio", float, 0.5, "attention width C_int = max(1, int(C_l * inter_ratio))", low=0.0,
                      low_ok=False, high=1.0, flag=False),
               EMBEDDING_NORM)

    @staticmethod
    def options_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
        return {"use_se": False} if cfg.get("no_se") else {}

    def __init__(self, in_channels: list[int] | tuple[int, ...], feature_dim: int | None = None,
                 num_classes: int | None = None, use_se: bool = True, se_reduction: int = 16,
                 inter_ratio: float = 0.5, embedding_norm: bool = True) -> None:
        super().__init__()
        if isinstance(in_channels, int) or len(in_channels) < 2:
            raise ModelConfigError(f"the ABIR head needs at least two tapped maps (locals + global), got "
                                   f"{in_channels!r}; use a backbone with taps, e.g. vgg16")
        *local_channels, global_channels = [int(c) for c in in_channels]
        self.feature_dim = self._positive("feature_dim", feature_dim or 512)
        self.num_classes = 0
        self.use_se = use_se
        self.embedding_norm = embedding_norm
        self.blocks = nn.ModuleList(
            AttentionBlock(c, global_channels, max(1, int(c * inter_ratio)), use_se, se_reduction)
            for c in local_channels)
        self.embedding = nn.Linear(global_channels + sum(local_channels), self.feature_dim)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        """Tapped maps ``[(B, C_1, H_1, W_1), ..., (B, C_g, H_g, W_g)]`` → ``(embedding (B, D), None)``."""
        *locals_, glob = maps
        pooled = [mac(glob)] + [mac(block(local, glob)) for block, local in zip(self.blocks, locals_)]
        e = self.embedding(torch.cat(pooled, dim=1))
        return (l2n(e) if self.embedding_norm else e), None
