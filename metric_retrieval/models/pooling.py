"""Global pooling of feature maps ``(B, C, H, W)`` → ``(B, C)``: pure functions plus :class:`GeM`.

* SPoC (mean), MAC (max) — Babenko & Lempitsky ICCV 2015; Tolias et al. ICLR 2016 (arXiv 1511.05879).
* GeM ``f_c = (mean_{h,w} clamp(x_c, eps)^p)^(1/p)`` — Radenović, Tolias & Chum, TPAMI 2018
  (arXiv 1711.02512); cirtorch ``eps = 1e-6``. Used with fixed ``p = 3`` by CGD (the clamp
  only differs from the paper's formula on exact zeros, and keeps the gradient finite for all-zero channels).
* SAP, CLF's parameter-free "self-attention pooling" (leftthomas/CLF ``model.py``, commit 0c20d13): with ``Y = X`` as
  ``C×N`` (N = H·W), channel weights ``a_c = mean_j (Y Yᵀ)_{cj} / max_c(...)``, spatial weights
  ``s_i = mean_j (Yᵀ Y)_{ij} / max_i(...)``, output ``max_i a_c s_i Y_{ci}``.
* avgmax = mean + max (RDML ``double``: the two poolings summed).

>>> x = torch.arange(8.0).view(1, 2, 2, 2)
>>> spoc(x).tolist(), mac(x).tolist()
([[1.5, 5.5]], [[3.0, 7.0]])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.utils.options import Option

__all__ = ["GLOBAL_POOLINGS", "POOLING", "GeM", "avgmax", "check_pooling", "gem", "mac", "sap", "spoc"]

# the ``--pooling`` option of every head that pools one global descriptor (each checks its own subset)
POOLING = Option("pooling", str, None, "global pooling of a pooling head: max, avg, avgmax, gem, sap; "
                                       "baseline avg, avgmax")


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial positions: ``(B, C, H, W)`` → ``(B, C)``."""
    return x.mean(dim=(-2, -1))


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max over the spatial positions: ``(B, C, H, W)`` → ``(B, C)``."""
    return x.amax(dim=(-2, -1))


def avgmax(x: torch.Tensor) -> torch.Tensor:
    """``spoc(x) + mac(x)`` (RDML ``double`` pooling)."""
    return spoc(x) + mac(x)


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean ``(mean clamp(x, eps)^p)^(1/p)`` over positions; ``p`` a float or a scalar tensor."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def sap(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """CLF self-attention pooling (see the module docstring); ``eps`` guards the max-normalisations.

    Uses ``mean_j (Y Yᵀ)_{cj} = (Y · Σ_rows Y)_c / C`` and ``mean_j (Yᵀ Y)_{ij} = (Yᵀ · Σ_cols Y)_i / N``,
    which avoids building the ``C×C`` and ``N×N`` Gram matrices.
    """
    b, c = x.shape[:2]
    y = x.reshape(b, c, -1)  # (B, C, N)
    n = y.shape[-1]
    channel = torch.einsum("bcn,bn->bc", y, y.sum(dim=1)) / c
    spatial = torch.einsum("bcn,bc->bn", y, y.sum(dim=2)) / n
    channel = channel / channel.amax(dim=1, keepdim=True).clamp_min(eps)
    spatial = spatial / spatial.amax(dim=1, keepdim=True).clamp_min(eps)
    return (channel.unsqueeze(2) * spatial.unsqueeze(1) * y).amax(dim=2)


GLOBAL_POOLINGS = {"avg": spoc, "max": mac, "avgmax": avgmax, "gem": gem, "sap": sap}


def check_pooling(name: str, allowed: Sequence[str], head: str) -> str:
    """``name`` if it is one of the ``allowed`` keys of :data:`GLOBAL_POOLINGS` (the poolings ``head``
    offers), else a :class:`ModelConfigError` listing them."""
    if name not in allowed or name not in GLOBAL_POOLINGS:
        raise ModelConfigError(f"unknown {head} pooling {name!r}; choose one of: {', '.join(allowed)}")
    return name


class GeM(nn.Module):
    """GeM pooling with one learnable ``p`` (cirtorch ``GeM``: init 3, eps 1e-6) or a fixed one.

    Args:
        p: initial (or fixed) exponent; 1 → SPoC, → ∞ → MAC.
        eps: clamp floor for the activations.
        learn_p: register ``p`` as a parameter (``True``, cirtorch) or a buffer.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True) -> None:
        super().__init__()
        value = torch.tensor([float(p)])
        if learn_p:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C)``."""
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}, learn_p={isinstance(self.p, nn.Parameter)}"
