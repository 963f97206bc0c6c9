"""Binomial deviance loss (Yi, Lei, Liao & Li, "Deep Metric Learning for Person Re-Identification",
ICPR 2014; Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016, §2), as used
by ABIR (Nie et al., ICMR 2019, §2.3) through Deep_Metric ``losses/Binomial.py`` without hard mining.

With ``S = X Xᵀ`` (dot products), for anchor i with positives P_i and negatives N_i (other labels):

``L_i = mean_{j∈P_i} log(1 + e^{−γ(S_ij − λ)}) + mean_{j∈N_i} log(1 + e^{α(S_ij − λ)})``,
``L = Σ_i L_i / B``; an anchor without negatives contributes 0 but still counts in B (as in Deep_Metric).

P_i, by ``positive_rule``:

* ``"similarity"`` (default; ABIR's, through Deep_Metric): every j with the anchor's label, **i itself
  included**, whose similarity is below 1: ``S_ij < 1``. For L2-normalised fp32 embeddings S_ii rounds to
  1 ± a few ulps, so the anchor is its own positive whenever S_ii rounds below 1 (about a third of the rows;
  then the loss differs from the index rule's by a few per cent), and a true positive whose similarity
  reaches 1 is dropped.
* ``"index"``: every j ≠ i with the anchor's label (self removed by index).

An anchor whose P_i is empty (a class with one image in the batch, under the index rule or when S_ii ≥ 1
under the similarity rule) contributes 0 here in both rules and still counts in B. Deep_Metric takes the mean
of an empty tensor there, so its whole loss is NaN (``tests/losses/test_binomial.py`` shows both).

Defaults (Deep_Metric/ABIR): α = 2, fixed positive scale γ = 2, λ = 0.5. ABIR's ``beta = 50`` is unused by
this branch of Deep_Metric and is not a parameter here. An ``indices_tuple`` (pairs) restricts P_i (and,
under the similarity rule, the anchor itself stays a candidate) and N_i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import IndicesTuple, pair_masks, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.utils.options import Option

POSITIVE_RULES = ("similarity", "index")


@LOSSES.register("binomial", aliases=("binomial_deviance",))
class BinomialDevianceLoss(EmbeddingLoss):
    """Args:
        alpha: negative scale α, default 2 (ABIR config).
        pos_scale: positive scale γ, default 2 (hard-coded in Deep_Metric).
        margin: λ, default 0.5 (ABIR config ``margin``).
        positive_rule: ``"similarity"`` (Deep_Metric: same label and ``S_ij < 1``, self included) or
            ``"index"`` (same label, self excluded by index); see the module docstring.
    """

    options = (
        Option("alpha", float, help="slope of the deviance", low=0.0, low_ok=False),
        Option("pos_scale", float, help="weight of the positive pairs' cost", low=0.0),
        Option("margin", float, help="similarity margin"),
        Option("positive_rule", str, help="positives: similarity (Deep_Metric/ABIR: same label and S < 1, self "
                                          "included) or index (self excluded by index)", choices=POSITIVE_RULES),
    )

    def __init__(self, alpha: float = 2.0, pos_scale: float = 2.0, margin: float = 0.5,
                 positive_rule: str = "similarity") -> None:
        super().__init__()
        if positive_rule not in POSITIVE_RULES:
            raise ValueError(f"binomial positive_rule must be one of {', '.join(POSITIVE_RULES)}, "
                             f"got {positive_rule!r}")
        self.alpha, self.pos_scale, self.margin = float(alpha), float(pos_scale), float(margin)
        self.positive_rule = positive_rule

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        b = embeddings.shape[0]
        if b == 0:
            return zero_loss(embeddings)
        sim = embeddings @ embeddings.t()
        pos, neg = pair_masks(indices_tuple, labels)
        if self.positive_rule == "similarity":  # Deep_Metric: same label, S_ij < 1 (the anchor itself included)
            pos = (pos | torch.eye(b, dtype=torch.bool, device=pos.device)) & (sim.detach() < 1)
        pos_f, neg_f = pos.to(sim.dtype), neg.to(sim.dtype)
        n_pos, n_neg = pos_f.sum(dim=1), neg_f.sum(dim=1)
        valid = (n_pos > 0) & (n_neg > 0)  # no positive: Deep_Metric's loss is NaN; 0 here (module docstring)
        pos_loss = (F.softplus(-self.pos_scale * (sim - self.margin)) * pos_f).sum(dim=1) / n_pos.clamp(min=1)
        neg_loss = (F.softplus(self.alpha * (sim - self.margin)) * neg_f).sum(dim=1) / n_neg.clamp(min=1)
        per_anchor = (pos_loss + neg_loss) * valid.to(sim.dtype)
        return per_anchor.sum() / b + zero_loss(embeddings)
