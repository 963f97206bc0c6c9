"""Triplet margin loss (Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015; Weinberger & Saul 2009),
RDML form (Roth et al., ICML 2020, ``criteria/triplet.py``).

``L = mean_t relu(d(a,p)^q − d(a,n)^q + m)`` over the mined triplets, zero-loss triplets included.

Where the references disagree: RDML/DAS use **squared** Euclidean distances (q = 2),
margin 0.2 and one mined triplet per anchor — the default here; PML uses non-squared distances (q = 1),
margin 0.05, all triplets and a mean over the non-zero ones — available as ``squared=False``,
``margin=0.05`` with no miner (the mean stays over all triplets).
"""
from __future__ import annotations

from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, gathered_distances, to_triplets, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("triplet")
class TripletLoss(EmbeddingLoss):
    """Triplet loss over a miner's triplets (pair tuples are joined on the anchor); all triplets if None.

    Args:
        margin: ``m``, default 0.2 (RDML ``loss_triplet_margin``).
        squared: squared Euclidean distances (RDML, default True) or plain Euclidean (PML, False).
    """

    options = (
        Option("margin", float, help="triplet margin m", low=0.0),
        Option("squared", bool, help="squared Euclidean distances"),
    )

    reference_path = True

    def __init__(self, margin: float = 0.2, squared: bool = True) -> None:
        super().__init__()
        self.margin = float(margin)
        self.squared = bool(squared)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        a, p, n = to_triplets(indices_tuple, labels)
        if len(a) == 0:
            return zero_loss(embeddings)
        d_ap = gathered_distances(embeddings, a, p, squared=self.squared)
        d_an = gathered_distances(embeddings, a, n, squared=self.squared)
        return (d_ap - d_an + self.margin).relu().mean()
