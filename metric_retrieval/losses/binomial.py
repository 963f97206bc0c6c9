"""Binomial deviance loss (Yi, Lei, Liao & Li, "Deep Metric Learning for Person Re-Identification",
ICPR 2014; Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016, §2), as used
by ABIR (Nie et al., ICMR 2019, §2.3) through Deep_Metric ``losses/Binomial.py`` without hard mining.

With ``S = X Xᵀ`` (dot products), for anchor i with positives P_i (same label, **i itself excluded by
index**) and negatives N_i:

``L_i = mean_{j∈P_i} log(1 + e^{−γ(S_ij − λ)}) + mean_{j∈N_i} log(1 + e^{α(S_ij − λ)})``,
``L = Σ_i L_i / B`` — anchors lacking positives or negatives contribute 0 but still count in B (Deep_Metric).

Defaults (Deep_Metric/ABIR): α = 2, fixed positive scale γ = 2, λ = 0.5. ABIR's ``beta = 50`` is unused by
this branch of Deep_Metric and is not a parameter here.

Deviation: Deep_Metric removes self with the test ``S_ij < 1``, which presumes L2-normalised embeddings (it
keeps self for unnormalised ones and drops true positives whose similarity reaches 1). Self is removed by
index here, which equals the reference whenever that presumption holds and positives are not duplicates.
An ``indices_tuple`` (pairs) restricts P_i and N_i.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, pair_masks, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("binomial", aliases=("binomial_deviance",))
class BinomialDevianceLoss(EmbeddingLoss):
    """Args:
        alpha: negative scale α, default 2 (ABIR config).
        pos_scale: positive scale γ, default 2 (hard-coded in Deep_Metric).
        margin: λ, default 0.5 (ABIR config ``margin``).
    """

    options = (
        Option("alpha", float, help="slope of the deviance", low=0.0, low_ok=False),
        Option("pos_scale", float, help="weight of the positive pairs' cost", low=0.0),
        Option("margin", float, help="similarity margin"),
    )

    def __init__(self, alpha: float = 2.0, pos_scale: float = 2.0, margin: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.pos_scale, self.margin = float(alpha), float(pos_scale), float(margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        b = embeddings.shape[0]
        if b == 0:
            return zero_loss(embeddings)
        sim = embeddings @ embeddings.t()
        pos, neg = pair_masks(indices_tuple, labels)
        pos_f, neg_f = pos.to(sim.dtype), neg.to(sim.dtype)
        n_pos, n_neg = pos_f.sum(dim=1), neg_f.sum(dim=1)
        valid = (n_pos > 0) & (n_neg > 0)
        pos_loss = (F.softplus(-self.pos_scale * (sim - self.margin)) * pos_f).sum(dim=1) / n_pos.clamp(min=1)
        neg_loss = (F.softplus(self.alpha * (sim - self.margin)) * neg_f).sum(dim=1) / n_neg.clamp(min=1)
        per_anchor = (pos_loss + neg_loss) * valid.to(sim.dtype)
        return per_anchor.sum() / b + zero_loss(embeddings)
