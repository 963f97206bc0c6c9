"""ProxyNCA (Movshovitz-Attias, Toshev, Leung, Ioffe & Singh, "No Fuss Distance Metric Learning using
Proxies", ICCV 2017, arXiv 1703.07464, eq. 8), RDML form (``criteria/proxynca.py``).

With ``x̂ = s·x/||x||`` and ``p̂ = s·p/||p||`` (s = 3):

``L = mean_i [ ||x̂_i − p̂_{y_i}||² + logsumexp_{c ≠ y_i}(−||x̂_i − p̂_c||²) ]``

i.e. the original NCA form with the positive proxy **excluded** from the denominator (RDML). PML instead
normalises over all proxies with scale 1; not offered here. Defaults (RDML): s = 3, one
proxy per training class, initialised ``randn / 8``, learning rate ×50 (``loss_proxynca_lrmulti``), no
weight decay.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metric_retrieval.losses._registry import LOSSES
from metric_retrieval.losses.base import ProxyLoss
from metric_retrieval.utils.options import Option


@LOSSES.register("proxy_nca", aliases=("proxynca",))
class ProxyNCALoss(ProxyLoss):
    """Args:
        num_classes: number of training classes C (≥ 2: the denominator runs over the other proxies).
        embedding_dim: D.
        scale: s, default 3 (RDML).
        lr_multiplier: proxy lr = base lr × this, default 50 (RDML).
    """

    options = (
        Option("scale", float, help="distance scale", low=0.0, low_ok=False),
        Option("lr_multiplier", float, help="multiplier of the proxies' learning rate", low=0.0),
    )
    min_classes = 2

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        scale: float = 3.0,
        lr_multiplier: float = 50.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, lr_multiplier)
        self.scale = float(scale)

    def init_proxies(self, num_classes: int, embedding_dim: int) -> Tensor:
        return torch.randn(num_classes, embedding_dim) / 8

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        x = self.scale * F.normalize(embeddings, dim=1)
        p = self.scale * F.normalize(self.proxies, dim=1).to(x.dtype)
        d2 = (x.pow(2).sum(1, keepdim=True) + p.pow(2).sum(1)[None, :] - 2 * x @ p.t()).clamp(min=0)
        target = F.one_hot(labels, p.shape[0]).bool()
        pos = d2[target]
        neg = torch.logsumexp((-d2).masked_fill(target, float("-inf")), dim=1)
        return (pos + neg).mean()
