"""Normalized softmax (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019,
arXiv 1811.12649, eq. 2), RDML form (``criteria/softmax.py``).

``logits = x · norm_rows(W)ᵀ / T``, cross-entropy with the labels. ``x`` is used as given (RDML: the model
L2-normalises it; PML normalises inside the loss). W is ``(C, D)``, initialised ``U(−1/√D, 1/√D)`` (RDML).
Defaults: T = 0.05 (RDML and PML agree). RDML trains W with ``loss_softmax_lr`` = 1e-5, its base learning
rate, so ``lr_multiplier`` defaults to 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses.base import ProxyLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("normalized_softmax", aliases=("softmax", "norm_softmax"))
class NormalizedSoftmaxLoss(ProxyLoss):
    """Args:
        num_classes: C.
        embedding_dim: D.
        temperature: T, default 0.05.
        lr_multiplier: class-map lr = base lr × this, default 1 (RDML).
    """

    options = (
        Option("temperature", float, help="softmax temperature", low=0.0, low_ok=False),
        Option("lr_multiplier", float, help="multiplier of the proxies' learning rate", low=0.0),
    )
    proxy_name = "weight"

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        temperature: float = 0.05,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, lr_multiplier)
        self.temperature = float(temperature)

    def init_proxies(self, num_classes: int, embedding_dim: int) -> Tensor:
        bound = 1.0 / math.sqrt(embedding_dim)
        return torch.empty(num_classes, embedding_dim).uniform_(-bound, bound)

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        logits = embeddings @ F.normalize(self.weight, dim=1).to(embeddings.dtype).t() / self.temperature
        return F.cross_entropy(logits, labels)
