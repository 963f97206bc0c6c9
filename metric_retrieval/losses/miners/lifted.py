"""Lifted miner (RDML ``batchminer/lifted.py``), for the generalized lifted structure loss.

For each anchor with at least one positive: all its positives, and as negatives all items with a different
label. Returned as pairs ``(a1, p, a2, n)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks
from metric_retrieval.losses.miners.base import BaseMiner


@MINERS.register("lifted")
class LiftedMiner(BaseMiner):
    """Deterministic; takes no generator."""

    output = "pairs"

    def __init__(self) -> None:
        super().__init__(None)

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pos, neg = label_masks(labels)
        neg = neg & pos.any(dim=1, keepdim=True)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        return a1, p, a2, n
