"""Label-smoothed softmax cross-entropy with temperature and optional class-balanced weights.

Label smoothing: Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, §7; temperature scaling
as used by CGD (Jun et al., arXiv 1903.10663, §3.2; leftthomas/CGD ``utils.py``) and the
class-balanced variant of CLF (leftthomas/CLF ``utils.py``).

With ``z = logits / T`` and ``p = softmax(z)``, per sample
``ℓ_i = (1 − ε)(−log p_{y_i}) + ε · (1/M) Σ_j (−log p_j)`` and ``L = mean_i w_{y_i} ℓ_i``
(``w ≡ 1`` unless weights are given; the mean is **not** renormalised by Σw, as in CLF).

Defaults are CGD's: ε = 0.1, T = 0.5, no weights. CLF's setting is ``temperature=1.0`` with
``class_balanced=True`` and the training ``class_counts``: ``w_c ∝ N / n_c`` normalised so that the
weights' mean over the M classes is 1 (Σ_c w_c = M). ``class_weights`` gives explicit weights instead
(used as given).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses.base import LogitsLoss
from metric_retrieval.utils.options import Option


def balanced_class_weights(class_counts: Sequence[int] | Tensor) -> Tensor:
    """CLF weights ``w_c = (N / n_c) · M / Σ_k (N / n_k)`` (mean 1) from per-class counts ``n_c``.

    >>> balanced_class_weights([1, 3]).tolist()
    [1.5, 0.5]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if bool((counts <= 0).any()):
        bad = torch.nonzero(counts <= 0).flatten().tolist()[:10]
        raise ValueError(f"class_counts must be > 0 for every class; classes {bad} have none")
    inv = counts.sum() / counts
    return inv * (counts.numel() / inv.sum())


@LOSSES.register("ls_ce", aliases=("label_smoothing_ce", "smoothed_ce"))
class LabelSmoothingCELoss(LogitsLoss):
    """Args:
        smoothing: ε, default 0.1 (CGD and CLF ``--smoothing``).
        temperature: T, default 0.5 (CGD ``--temperature``; CLF uses 1.0).
        class_balanced: weight samples by ``balanced_class_weights(class_counts)`` (CLF), default False.
        class_counts: per-class training image counts (the criterion passes them at run time).
        class_weights: explicit per-class weights ``(M,)``; overrides ``class_balanced``.
    """

    options = (
        Option("smoothing", float, help="label smoothing epsilon", low=0.0, high=1.0, high_ok=False),
        Option("temperature", float, help="softmax temperature", low=0.0, low_ok=False),
        Option("class_balanced", bool, help="weight classes by inverse frequency"),
        Option("class_weights", list, help="explicit per-class weights"),
    )

    def __init__(
        self,
        smoothing: float = 0.1,
        temperature: float = 0.5,
        class_balanced: bool = False,
        class_counts: Sequence[int] | Tensor | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"LabelSmoothingCELoss: smoothing must be in [0, 1), got {smoothing}")
        if temperature <= 0:
            raise ValueError(f"LabelSmoothingCELoss: temperature must be > 0, got {temperature}")
        self.smoothing, self.temperature = float(smoothing), float(temperature)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        elif class_balanced:
            if class_counts is None:
                raise ValueError("LabelSmoothingCELoss(class_balanced=True) needs class_counts")
            weights = balanced_class_weights(class_counts).float()
        self.register_buffer("class_weights", weights)

    def compute_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.shape[0] == 0:
            return (logits * 0).sum()
        logp = F.log_softmax(logits.float() / self.temperature, dim=1)
        nll = -logp.gather(1, labels[:, None]).squeeze(1)
        per_sample = (1 - self.smoothing) * nll + self.smoothing * (-logp.mean(dim=1))
        if self.class_weights is not None:
            if self.class_weights.numel() != logits.shape[1]:
                raise ValueError(
                    f"LabelSmoothingCELoss: {self.class_weights.numel()} class weights for {logits.shape[1]} logits"
                )
            per_sample = per_sample * self.class_weights.to(per_sample.dtype)[labels]
        return per_sample.mean().to(logits.dtype)
