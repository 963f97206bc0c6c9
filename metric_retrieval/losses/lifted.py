"""Generalized lifted structure loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss", arXiv
1703.07737, §2 — the generalisation of Song et al.'s lifted structure loss, CVPR 2016), RDML form
(``criteria/lifted.py``).

``L = mean_a relu( logsumexp_{p∈P(a)} d(a,p) + logsumexp_{n∈N(a)} (m − d(a,n)) ) + w · mean_i ||x_i||₂``

over anchors having at least one positive and one negative, with Euclidean ``d``. Defaults (RDML): ``m = 1``
and the L2 activation regulariser ``w = 0.005``, meant for *unnormalised* embeddings — DAS runs it with
``normalize=False``). The pair sets come from the ``lifted`` miner (all positives and all negatives of each
anchor with a positive); with no miner all pairs are used, which is the same set. When no anchor is valid
the pair term is 0 (attached to the graph) and only the regulariser remains.
"""
from __future__ import annotations

from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import (
    IndicesTuple,
    masked_logsumexp,
    pair_masks,
    pairwise_distances,
    zero_loss,
)
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("lifted", aliases=("generalized_lifted",))
class LiftedLoss(EmbeddingLoss):
    """Args:
        neg_margin: ``m``, default 1 (RDML ``loss_lifted_neg_margin``).
        l2_weight: ``w``, default 0.005 (RDML ``loss_lifted_l2``).
    """

    options = (
        Option("neg_margin", float, help="negative margin", low=0.0),
        Option("l2_weight", float, help="weight of the embedding L2 penalty", low=0.0),
    )

    def __init__(self, neg_margin: float = 1.0, l2_weight: float = 0.005) -> None:
        super().__init__()
        self.neg_margin = float(neg_margin)
        self.l2_weight = float(l2_weight)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        pos, neg = pair_masks(indices_tuple, labels)
        dist = pairwise_distances(embeddings)
        valid = pos.any(dim=1) & neg.any(dim=1)
        loss = zero_loss(embeddings)
        if bool(valid.any()):
            pos_term = masked_logsumexp(dist, pos)
            neg_term = masked_logsumexp(self.neg_margin - dist, neg)
            loss = loss + (pos_term + neg_term)[valid].relu().mean()
        if self.l2_weight and embeddings.shape[0]:
            loss = loss + self.l2_weight * embeddings.norm(dim=1).mean()
        return loss
