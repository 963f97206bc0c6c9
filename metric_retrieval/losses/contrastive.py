"""Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
CVPR 2006), in the Revisiting-DML form (Roth et al., ICML 2020).

``L = mean_{(a,p)} relu(d(a,p) − m_pos) + mean_{(a,n)} relu(m_neg − d(a,n))`` with Euclidean ``d``.
Defaults ``pos_margin = 0``, ``neg_margin = 1`` (RDML ``criteria/contrastive.py``; PML uses the same values).
"""
from __future__ import annotations

from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, gathered_distances, to_pairs, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("contrastive")
class ContrastiveLoss(EmbeddingLoss):
    """Pair loss over the miner's pairs (a triplet ``(a, p, n)`` counts as pairs ``(a, p)`` and ``(a, n)``).

    With a triplet miner this equals RDML exactly (both means run over the T triplets); without a miner
    every positive pair (i ≠ j) and every negative pair of the batch is used (PML's default). Each mean is
    over its own pair list, so an empty list contributes 0. Deviation: RDML's ``nn.PairwiseDistance`` adds
    ``eps = 1e-6`` inside the norm; here the distance is exact with a zero-safe square root.

    Args:
        pos_margin: ``m_pos``, default 0 (RDML/PML).
        neg_margin: ``m_neg``, default 1 (RDML/PML).
    """

    options = (
        Option("pos_margin", float, help="distance below which a positive pair costs nothing", low=0.0),
        Option("neg_margin", float, help="distance above which a negative pair costs nothing", low=0.0),
    )

    reference_path = True

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        a1, p, a2, n = to_pairs(indices_tuple, labels)
        loss = zero_loss(embeddings)
        if len(a1):
            loss = loss + (gathered_distances(embeddings, a1, p) - self.pos_margin).relu().mean()
        if len(a2):
            loss = loss + (self.neg_margin - gathered_distances(embeddings, a2, n)).relu().mean()
        return loss
