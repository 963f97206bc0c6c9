"""Batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
Re-Identification", arXiv 1703.07737), in the form used by CGD (Jun et al., "Combination of Multiple Global
Descriptors for Image Retrieval", arXiv 1903.10663; leftthomas/CGD ``utils.py``).

``L = mean_a relu(max_{p: y_p = y_a, p ≠ a} d_ap − min_{n: y_n ≠ y_a} d_an + m)`` with **Euclidean,
non-squared** distances; default margin ``m = 0.1`` (CGD ``--margin``). The mean runs over **all** anchors,
including anchors without a positive (their hardest-positive distance is 0), as in CGD commit 3bfc8ea.

Deviation (edge case only): an anchor without any negative (a one-class batch) contributes 0 here; CGD's
"add the row max to same-label entries, take the row min" trick gives it a constant ``m`` with zero
gradient instead. Both have no gradient; 0 makes an all-one-class batch report 0 rather than ``m``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, label_masks, pairwise_distances, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("batch_hard_triplet")
class BatchHardTripletLoss(EmbeddingLoss):
    """CGD's batch-hard triplet loss; mining is built in, so it takes no external miner.

    Args:
        margin: ``m``, default 0.1 (CGD).
    """

    options = (
        Option("margin", float, help="triplet margin m", low=0.0),
    )

    takes_miner = False

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = float(margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if embeddings.shape[0] == 0:
            return zero_loss(embeddings)
        dist = pairwise_distances(embeddings)
        pos, neg = label_masks(labels)
        hardest_pos = torch.where(pos, dist, torch.zeros_like(dist)).amax(dim=1)
        has_neg = neg.any(dim=1)
        big = torch.finfo(dist.dtype).max
        hardest_neg = torch.where(neg, dist, torch.full_like(dist, big)).amin(dim=1)
        per_anchor = (hardest_pos - hardest_neg + self.margin).relu()
        per_anchor = torch.where(has_neg, per_anchor, torch.zeros_like(per_anchor))
        return per_anchor.mean() + zero_loss(embeddings)
