"""N-pair miner (RDML ``batchminer/npair.py``), for the N-pair loss.

For each anchor with at least one positive: one positive drawn uniformly, and as negatives all items with a
different label. Returned as pairs ``(a1, p, a2, n)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks, uniform_choice
from metric_retrieval.losses.miners.base import BaseMiner


@MINERS.register("npair", aliases=("n_pair",))
class NPairMiner(BaseMiner):
    """Args:
        generator: optional ``torch.Generator``.
    """

    output = "pairs"

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pos, neg = label_masks(labels)
        p, has_pos = uniform_choice(pos, self.generator)
        a1 = torch.nonzero(has_pos).flatten()
        neg = neg & has_pos[:, None]
        a2, n = torch.where(neg)
        return a1, p[a1], a2, n
