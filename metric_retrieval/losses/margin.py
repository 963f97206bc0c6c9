"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding Learning",
ICCV 2017, arXiv 1706.07567, eq. 4–6), Revisiting-DML form (Roth et al., ICML 2020, ``criteria/margin.py``).

Over triplets ``(a, p, n)`` mined from the batch (pair tuples are joined on the anchor; all triplets of the
batch without a miner):

``pos_t = relu(d_ap − β_{y_a} + α)``, ``neg_t = relu(β_{y_a} − d_an + α)``,
``L = Σ_t (pos_t + neg_t) / #{t : pos_t > 0 or neg_t > 0}`` (plain sum when that count is 0) ``+ ν·Σ_t β_{y_a}``,
with ``d = sqrt(||x_i − x_j||² + 1e-8)``.

**Which normaliser.** RDML counts a triplet once when either of its terms is active
(``torch.sum((pos_loss > 0.) + (neg_loss > 0.))`` adds two bool tensors, i.e. a logical OR);
pytorch-metric-learning divides by ``#{pos > 0} + #{neg > 0}`` instead, counting such a triplet twice. The DAS
tables were produced with the RDML code, so this is the RDML form. The β regulariser is added after the
division, as in RDML/DAS.

Defaults (RDML): α = 0.2, β₀ = 1.2, β **learnable per class** with its own learning rate 5e-4 and no weight
decay, ν = 0. PML fixes β by default: ``learn_beta=False``. ``beta_per_class=False`` learns one global β.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, gathered_distances, to_triplets, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss, check_labels_in_range, check_num_classes
from metric_retrieval.utils.options import Option


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

    options = (
        Option("margin", float, help="margin alpha around the boundary beta", low=0.0),
        Option("beta", float, help="initial boundary beta", low=0.0),
        Option("learn_beta", bool, help="learn beta"),
        Option("beta_per_class", bool, help="one beta per class"),
        Option("nu", float, help="regularisation of beta", low=0.0),
        Option("beta_lr", float, help="learning rate of beta", low=0.0),
    )

    reference_path = True

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
        a, p, n = to_triplets(indices_tuple, labels)
        if self.beta_per_class:
            check_labels_in_range(labels, self.beta.shape[0], "MarginLoss")
            beta = self.beta[labels[a]]
        else:
            beta = self.beta.expand(len(a))
        d_ap = (gathered_distances(embeddings, a, p, squared=True) + 1e-8).sqrt()
        d_an = (gathered_distances(embeddings, a, n, squared=True) + 1e-8).sqrt()
        pos = (d_ap - beta + self.margin).relu()
        neg = (beta - d_an + self.margin).relu()
        total = (pos + neg).sum() + zero_loss(embeddings, self.beta)
        count = ((pos > 0) | (neg > 0)).sum()
        loss = total / count.clamp(min=1).to(total.dtype)
        return loss + self.nu * beta.sum() if self.nu else loss
