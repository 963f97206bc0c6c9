"""Proxy-Anchor loss (Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020,
arXiv 2003.13911, eq. 4), DAS form (``loss/proxyanchor.py``) = PML ``ProxyAnchorLoss``.

With ``cos = norm(X) norm(P)ᵀ`` and P⁺ the proxies whose class is in the batch:

``L = (1/|P⁺|) Σ_{c∈P⁺} log(1 + Σ_{i: y_i = c} e^{−α(cos_ic − δ)})
    + (1/C) Σ_c log(1 + Σ_{i: y_i ≠ c} e^{α(cos_ic + δ)})``

Defaults (paper/DAS/PML agree): δ = 0.1, α = 32, proxies ``kaiming_normal_(mode="fan_out")``,
learning rate ×100 (paper/DAS), weight decay 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses._utils import masked_logsumexp, zero_loss
from metric_retrieval.losses.base import ProxyLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("proxy_anchor", aliases=("proxyanchor",))
class ProxyAnchorLoss(ProxyLoss):
    """Args:
        num_classes: number of training classes C.
        embedding_dim: D.
        margin: δ, default 0.1.
        alpha: α, default 32.
        lr_multiplier: proxy lr = base lr × this, default 100.
    """

    options = (
        Option("margin", float, help="margin delta", low=0.0),
        Option("alpha", float, help="scale alpha", low=0.0, low_ok=False),
        Option("lr_multiplier", float, help="multiplier of the proxies' learning rate", low=0.0),
    )

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float = 0.1,
        alpha: float = 32.0,
        lr_multiplier: float = 100.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, lr_multiplier)
        self.margin, self.alpha = float(margin), float(alpha)

    def init_proxies(self, num_classes: int, embedding_dim: int) -> Tensor:
        return nn.init.kaiming_normal_(torch.empty(num_classes, embedding_dim), mode="fan_out")

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        c = self.proxies.shape[0]
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).to(embeddings.dtype).t()
        pos = F.one_hot(labels, c).bool()  # (B, C)
        with_pos = pos.any(dim=0)
        pos_term = masked_logsumexp((-self.alpha * (cos - self.margin)).t(), pos.t(), add_one=True)
        neg_term = masked_logsumexp((self.alpha * (cos + self.margin)).t(), (~pos).t(), add_one=True)
        return pos_term.sum() / with_pos.sum().clamp(min=1) + neg_term.sum() / c + zero_loss(self.proxies)
