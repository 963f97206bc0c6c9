"""Random triplet miner (RDML ``batchminer/random.py``).

RDML enumerates every valid triplet (a ≠ p, y_a = y_p, y_n ≠ y_a) and keeps ``random.sample`` of B of them.
Enumerating is O(B³) (90M triplets for a DAS batch of 448), so this draws B triplets **uniformly over the
valid triplets with replacement**: the anchor with probability ∝ #P(a)·#N(a), then p and n uniformly. The
marginal distribution is the same; duplicates are possible (RDML samples without replacement).
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks, rand_like_on, uniform_choice
from metric_retrieval.losses.miners.base import BaseMiner, empty_triplets
from metric_retrieval.utils.options import Option


@MINERS.register("random")
class RandomMiner(BaseMiner):
    """Args:
        num_triplets: triplets per batch, default None = batch size (RDML).
        generator: optional ``torch.Generator``.
    """

    options = (
        Option("num_triplets", int, help="triplets drawn per batch (None: one per anchor)", low=1),
    )

    def __init__(self, num_triplets: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.num_triplets = num_triplets

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pos, neg = label_masks(labels)
        weight = (pos.sum(dim=1) * neg.sum(dim=1)).double()
        if weight.sum() == 0:
            return empty_triplets(labels.device)
        k = self.num_triplets or labels.shape[0]
        cdf = weight.cumsum(0)
        u = rand_like_on((k,), labels.device, self.generator, torch.float64) * cdf[-1]
        a = torch.searchsorted(cdf, u, right=True).clamp(max=labels.shape[0] - 1)
        p, _ = uniform_choice(pos[a], self.generator)
        n, _ = uniform_choice(neg[a], self.generator)
        return a, p, n
