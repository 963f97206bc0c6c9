"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding Learning",
ICCV 2017, arXiv 1706.07567, eq. 4–6), RDML form (``criteria/margin.py``; spec-training §2.5, §4).

For pairs mined from the batch (a triplet ``(a, p, n)`` gives the positive pair ``(a, p)`` and the negative
pair ``(a, n)``):

``pos = relu(d_ap − β_{y_a} + α)``, ``neg = relu(β_{y_a} − d_an + α)``,
``L = (Σ pos + Σ neg + ν·Σ_pairs β_{y_a}) / (#{pos > 0} + #{neg > 0})`` (plain sum when that count is 0),
with ``d = sqrt(||x_i − x_j||² + 1e-8)`` (RDML).

Defaults (RDML): α = 0.2, β₀ = 1.2, β **learnable per class** with its own learning rate 5e-4 and no weight
decay, ν = 0. PML instead fixes β by default (spec-training §4): ``learn_beta=False``. ``beta_per_class=False``
learns one global β. Without a miner all pairs of the batch are used.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from losses._registry import LOSSES
from losses._utils import IndicesTuple, gathered_distances, to_pairs, zero_loss
from losses.base import EmbeddingLoss, check_labels_in_range, check_num_classes


@LOSSES.register("margin")
class MarginLoss(EmbeddingLoss):
    """Wu et al.'s margin loss with a learnable boundary β.

    Args:
        num_classes: number of training classes (needed for per-class β).
        margin: α, default 0.2 (RDML ``loss_margin_margin``).
        beta: β₀, default 1.2 (RDML ``loss_margin_beta``).
        learn_beta: β is an ``nn.Parameter`` (RDML default True; ``--loss_margin_beta_constant`` → False).
        beta_per_class: one β per class (RDML, default) or a single global β.
        nu: ν, weight of the β regulariser, default 0 (RDML).
        beta_lr: absolute learning rate for β, default 5e-4 (RDML ``loss_margin_beta_lr``).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        margin: float = 0.2,
        beta: float = 1.2,
        learn_beta: bool = True,
        beta_per_class: bool = True,
        nu: float = 0.0,
        beta_lr: float | None = 5e-4,
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.nu = float(nu)
        self.beta_per_class = bool(beta_per_class)
        size = check_num_classes(num_classes, "MarginLoss(beta_per_class=True)") if beta_per_class else 1
        init = torch.full((size,), float(beta))
        if learn_beta:
            self.beta = nn.Parameter(init)
        else:
            self.register_buffer("beta", init)
        self.lr = beta_lr

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        a1, p, a2, n = to_pairs(indices_tuple, labels)
        if self.beta_per_class:
            check_labels_in_range(labels, self.beta.shape[0], "MarginLoss")
            beta_pos, beta_neg = self.beta[labels[a1]], self.beta[labels[a2]]
        else:
            beta_pos, beta_neg = self.beta.expand(len(a1)), self.beta.expand(len(a2))
        d_ap = (gathered_distances(embeddings, a1, p, squared=True) + 1e-8).sqrt()
        d_an = (gathered_distances(embeddings, a2, n, squared=True) + 1e-8).sqrt()
        pos = (d_ap - beta_pos + self.margin).relu()
        neg = (beta_neg - d_an + self.margin).relu()
        total = pos.sum() + neg.sum() + zero_loss(embeddings, self.beta)
        if self.nu:
            total = total + self.nu * (beta_pos.sum() + beta_neg.sum())
        count = (pos > 0).sum() + (neg > 0).sum()
        return total / count.clamp(min=1).to(total.dtype)
