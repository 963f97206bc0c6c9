"""Multi-Similarity loss (Wang, Han, Huang, Dong & Scott, "Multi-Similarity Loss with General Pair Weighting
for Deep Metric Learning", CVPR 2019, arXiv 1904.06627, eq. 10–12), RDML form (``criteria/multisimilarity.py``).

``S = X Xᵀ`` (dot products; X is L2-normalised by the model). For each anchor i with positives P_i (same
label, i excluded) and negatives N_i, the built-in MS mining keeps ``n`` with ``S_in + ε > min_{p∈P_i} S_ip``
and ``p`` with ``S_ip − ε < max_{n∈N_i} S_in``; the anchor is skipped if either kept set is empty, otherwise

``L_i = (1/α) log(1 + Σ_{p kept} e^{−α(S_ip − λ)}) + (1/β) log(1 + Σ_{n kept} e^{β(S_in − λ)})``,

and ``L = mean`` over the non-skipped anchors (0, attached to the graph, if all are skipped).

Defaults (RDML/DAS): α = 2, β = 40, λ = 0.5, ε = 0.1. PML uses β = 50 with a
separate ``MultiSimilarityMiner`` and a mean over all rows: pass ``beta=50`` for its β. An ``indices_tuple``
restricts the candidate pairs before the built-in mining.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, masked_logsumexp, row_pair_masks, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("multi_similarity", aliases=("multisimilarity", "ms"))
class MultiSimilarityLoss(EmbeddingLoss):
    """Args:
        alpha: positive scale α, default 2 (RDML ``loss_multisimilarity_pos_weight``).
        beta: negative scale β, default 40 (RDML ``loss_multisimilarity_neg_weight``; PML uses 50).
        base: similarity threshold λ, default 0.5 (RDML ``loss_multisimilarity_thresh``).
        epsilon: mining margin ε, default 0.1 (RDML ``loss_multisimilarity_margin``).
    """

    options = (
        Option("alpha", float, help="positive scale", low=0.0, low_ok=False),
        Option("beta", float, help="negative scale", low=0.0, low_ok=False),
        Option("base", float, help="similarity offset lambda"),
        Option("epsilon", float, help="mining margin", low=0.0),
    )

    reference_path = True

    def __init__(self, alpha: float = 2.0, beta: float = 40.0, base: float = 0.5, epsilon: float = 0.1) -> None:
        super().__init__()
        self.alpha, self.beta, self.base, self.epsilon = float(alpha), float(beta), float(base), float(epsilon)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        rows, pos, neg = row_pair_masks(indices_tuple, labels)  # anchors without pairs are skipped anyway
        sim = embeddings[rows] @ embeddings.t()
        with torch.no_grad():
            s = sim.detach()
            inf = torch.finfo(s.dtype).max
            min_pos = torch.where(pos, s, torch.full_like(s, inf)).amin(dim=1, keepdim=True)
            max_neg = torch.where(neg, s, torch.full_like(s, -inf)).amax(dim=1, keepdim=True)
            keep_neg = neg & (s + self.epsilon > min_pos)
            keep_pos = pos & (s - self.epsilon < max_neg)
            valid = keep_pos.any(dim=1) & keep_neg.any(dim=1)
        if not bool(valid.any()):
            return zero_loss(embeddings)
        pos_term = masked_logsumexp(-self.alpha * (sim - self.base), keep_pos, add_one=True) / self.alpha
        neg_term = masked_logsumexp(self.beta * (sim - self.base), keep_neg, add_one=True) / self.beta
        return (pos_term + neg_term)[valid].mean()
