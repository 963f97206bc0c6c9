"""ArcFace (Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
CVPR 2019, arXiv 1801.07698, eq. 3).

``cos_ic = norm(x_i) · norm(w_c)``; for the **target** class only, ``θ = acos(cos_iy)`` and the logit
becomes ``cos(θ + m)`` when ``θ ≤ π − m``, else ``cos θ − m·sin m`` (keeps the logit monotone, as PML);
all logits are multiplied by ``s`` and fed to cross-entropy.

Bug fixed knowingly: RDML/DAS add ``cos(θ_t + m) − cos θ_t`` to **every** column of the row, which leaves the
softmax unchanged, so their "ArcFace" has no margin at all. Here the margin applies to
the target logit only (the paper; PML). Other deviations from RDML: cosines are clamped to ``[−1+1e-7,
1−1e-7]`` (RDML clamps to ``[1e-10, 1]``, zeroing negative cosines), and ``x`` is L2-normalised inside.

Defaults: m = 0.5 rad (RDML, paper; = PML's 28.6°), s = 16 (RDML; PML and the paper use 64), W ``(C, D)``
initialised ``U(−1/√D, 1/√D)`` (RDML) and trained with an absolute learning rate of 5e-4 (RDML
``loss_arcface_lr``), weight decay 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses.base import ProxyLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("arcface")
class ArcFaceLoss(ProxyLoss):
    """Args:
        num_classes: C.
        embedding_dim: D.
        margin: m in radians, default 0.5.
        scale: s, default 16 (RDML).
        lr: absolute learning rate of W, default 5e-4 (RDML); None → base lr × ``lr_multiplier``.
        lr_multiplier: used when ``lr`` is None, default 1.
    """

    options = (
        Option("margin", float, help="additive angular margin m (radians)", low=0.0),
        Option("scale", float, help="logit scale s", low=0.0, low_ok=False),
        Option("lr", float, help="learning rate of the class centres (None: --lr)", low=0.0),
        Option("lr_multiplier", float, help="multiplier of the centres' learning rate", low=0.0),
    )
    proxy_name = "weight"

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float = 0.5,
        scale: float = 16.0,
        lr: float | None = 5e-4,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, lr_multiplier, lr)
        if not 0.0 <= margin < math.pi:
            raise ValueError(f"ArcFaceLoss: margin must be in [0, π) radians, got {margin}")
        self.margin, self.scale = float(margin), float(scale)

    def init_proxies(self, num_classes: int, embedding_dim: int) -> Tensor:
        bound = 1.0 / math.sqrt(embedding_dim)
        return torch.empty(num_classes, embedding_dim).uniform_(-bound, bound)

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scaled logits ``(B, C)`` with the angular margin on the target column."""
        eps = 1e-7
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).to(embeddings.dtype).t()
        cos = cos.clamp(-1 + eps, 1 - eps)
        target = F.one_hot(labels, cos.shape[1]).bool()
        cos_t = cos[target]
        theta = torch.acos(cos_t)
        with_margin = torch.where(
            theta <= math.pi - self.margin,
            torch.cos(theta + self.margin),
            cos_t - self.margin * math.sin(self.margin),
        )
        logits = cos.masked_scatter(target, with_margin)
        return self.scale * logits

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)
