"""Distance-weighted miner (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding
Learning", ICCV 2017, §4, eq. 3), RDML/DAS form (``batchminer/distance.py``).

Every batch element is an anchor. Distances (Euclidean, embeddings assumed on the unit sphere) are clamped to
``d ≥ lower_cutoff``; the negative is drawn with probability ∝ the inverse sphere density
``q⁻¹(d) = d^{2−D} · (1 − d²/4)^{−(D−3)/2}`` over different-label items (computed in log space, row max
subtracted). The positive is uniform among the other same-label items (self if the class has one member in the
batch). One triplet per anchor.

``upper_cutoff``: Wu et al. and PML also zero the weights of negatives with ``d ≥ 1.4`` ("nonzero loss
cutoff"); RDML defines it but leaves that line commented out, and DAS's reported runs use RDML. The default
here is ``upper_cutoff=None`` (RDML/DAS); pass ``upper_cutoff=1.4`` for the paper/PML behaviour.
Robustness fixes: ``1 − d²/4`` is clamped at 1e-8 (RDML yields inf/NaN at d = 2 or for unnormalised inputs),
and an anchor whose weights are all zero falls back to a uniform negative; anchors without negatives are
dropped.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metric_retrieval.losses._registry import MINERS
from metric_retrieval.losses._utils import label_masks, pairwise_distances, rand_like_on, uniform_choice
from metric_retrieval.losses.miners.base import BaseMiner
from metric_retrieval.utils.options import Option


@MINERS.register("distance", aliases=("distance_weighted",))
class DistanceWeightedMiner(BaseMiner):
    """Args:
        lower_cutoff: distances are clamped below at this value, default 0.5 (RDML/PML).
        upper_cutoff: zero weight for ``d ≥ upper_cutoff``; default None = not applied (RDML), 1.4 (PML/Wu).
        generator: optional ``torch.Generator``.
    """

    options = (
        Option("lower_cutoff", float, help="distances are clipped below this", low=0.0),
        Option("upper_cutoff", float, help="negatives farther than this are dropped (None: none)", low=0.0),
    )

    def __init__(
        self, lower_cutoff: float = 0.5, upper_cutoff: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(generator)
        self.lower_cutoff = float(lower_cutoff)
        self.upper_cutoff = None if upper_cutoff is None else float(upper_cutoff)

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, dim = embeddings.shape
        dist = pairwise_distances(embeddings.float()).double().clamp(min=self.lower_cutoff)
        pos, neg = label_masks(labels)
        log_w = (2.0 - dim) * dist.log() - ((dim - 3) / 2.0) * (1.0 - dist.pow(2) / 4.0).clamp(min=1e-8).log()
        log_w = log_w.masked_fill(~neg, float("-inf"))
        allowed = neg.clone()
        if self.upper_cutoff is not None:
            allowed &= dist < self.upper_cutoff
            log_w = log_w.masked_fill(~allowed, float("-inf"))
        row_max = log_w.amax(dim=1, keepdim=True)
        w = torch.where(allowed, (log_w - row_max.clamp(min=-1e300)).exp(), torch.zeros_like(log_w))
        w = torch.nan_to_num(w, nan=0.0, posinf=0.0)
        no_weight = w.sum(dim=1) <= 0
        w = torch.where(no_weight[:, None], neg.double(), w)
        has_neg = neg.any(dim=1)
        cdf = w.cumsum(dim=1)
        u = rand_like_on((b, 1), labels.device, self.generator, torch.float64) * cdf[:, -1:]
        n = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=b - 1)
        p, has_pos = uniform_choice(pos, self.generator)
        p = torch.where(has_pos, p, torch.arange(b, device=labels.device))
        a = torch.nonzero(has_neg).flatten()
        return a, p[a], n[a]
