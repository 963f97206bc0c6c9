"""N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016,
eq. 3 + the L2 embedding regulariser of §3.2), RDML form (``criteria/npair.py``).

``L = mean_{(a,p)} log(1 + Σ_{n∈N(a)} exp(x_a·x_n − x_a·x_p)) + w · mean_i ||x_i||₂``

over the positive pairs of the ``npair`` miner (one random positive per anchor, all different-label items
as negatives); with no miner, over every positive pair of the batch. ``w = 0.005`` (RDML; the paper's 0.02
applied ×0.25). Meant for unnormalised embeddings (dot products, not cosines).

The embedding scaling quirk: RDML divides the embeddings by 4 only for BN-Inception,
DAS always does. It is **not** applied by default; pass ``input_divisor=4`` to reproduce DAS. The regulariser
then sees the divided embeddings, as in both references.
"""
from __future__ import annotations

from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, masked_logsumexp, pair_masks, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("npair", aliases=("n_pair",))
class NPairLoss(EmbeddingLoss):
    """Args:
        l2_weight: ``w``, default 0.005 (RDML ``loss_npair_l2``).
        input_divisor: embeddings are divided by this first; default 1 (DAS: 4).
    """

    options = (
        Option("l2_weight", float, help="weight of the embedding L2 penalty", low=0.0),
        Option("input_divisor", float, help="embeddings divided by this before the loss", low=0.0, low_ok=False),
    )

    def __init__(self, l2_weight: float = 0.005, input_divisor: float = 1.0) -> None:
        super().__init__()
        self.l2_weight = float(l2_weight)
        if input_divisor <= 0:
            raise ValueError(f"NPairLoss: input_divisor must be > 0, got {input_divisor}")
        self.input_divisor = float(input_divisor)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        x = embeddings / self.input_divisor
        pos, neg = pair_masks(indices_tuple, labels)
        loss = zero_loss(embeddings)
        a, p = pos.nonzero(as_tuple=True)
        if len(a):
            sim = x @ x.t()
            logits = sim[a] - sim[a, p][:, None]
            loss = loss + masked_logsumexp(logits, neg[a], add_one=True).mean()
        if self.l2_weight and x.shape[0]:
            loss = loss + self.l2_weight * x.norm(dim=1).mean()
        return loss
