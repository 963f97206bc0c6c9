"""Semi-hard negative miner (Schroff et al., FaceNet, CVPR 2015, §3.2), RDML form
(``batchminer/semihard.py``).

Per anchor a with a positive and a negative: p uniform among the other same-label items; n uniform among the
semi-hard negatives ``d_ap < d_an < d_ap + margin`` (Euclidean distances), or uniform among all negatives if
there is none. One triplet per anchor. margin = 0.2 (RDML uses the triplet loss margin; the criterion passes
the loss's ``margin`` when the miner's is not given). PML's ``TripletMarginMiner("semihard")`` instead returns
every semi-hard triplet.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks, pairwise_distances, uniform_choice
from metric_retrieval.losses.miners.base import BaseMiner
from metric_retrieval.utils.options import Option


@MINERS.register("semihard")
class SemihardMiner(BaseMiner):
    """Args:
        margin: semi-hard window, default 0.2 (RDML).
        generator: optional ``torch.Generator``.
    """

    options = (
        Option("margin", float, help="semi-hard band width", low=0.0),
    )

    def __init__(self, margin: float = 0.2, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.margin = float(margin)

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dist = pairwise_distances(embeddings)
        pos, neg = label_masks(labels)
        p, has_pos = uniform_choice(pos, self.generator)
        d_ap = dist.gather(1, p[:, None])
        semihard = neg & (dist > d_ap) & (dist < d_ap + self.margin)
        n_semi, has_semi = uniform_choice(semihard, self.generator)
        n_any, has_neg = uniform_choice(neg, self.generator)
        n = torch.where(has_semi, n_semi, n_any)
        a = torch.nonzero(has_pos & has_neg).flatten()
        return a, p[a], n[a]
