"""Batch-hard miner (Hermans, Beyer & Leibe, arXiv 1703.07737; PML ``BatchHardMiner``).

For each anchor with at least one positive and one negative: the farthest positive and the closest negative
(Euclidean distances). One triplet per anchor.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks, pairwise_distances
from metric_retrieval.losses.miners.base import BaseMiner


@MINERS.register("batch_hard", aliases=("batchhard",))
class BatchHardMiner(BaseMiner):
    """Deterministic; takes no generator."""

    def __init__(self) -> None:
        super().__init__(None)

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dist = pairwise_distances(embeddings)
        pos, neg = label_masks(labels)
        p = dist.masked_fill(~pos, float("-inf")).argmax(dim=1)
        n = dist.masked_fill(~neg, float("inf")).argmin(dim=1)
        a = torch.nonzero(pos.any(dim=1) & neg.any(dim=1)).flatten()
        return a, p[a], n[a]
