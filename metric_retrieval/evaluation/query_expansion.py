"""Query expansion and database-side augmentation for landmark retrieval.

Descriptors are rows, L2-normalised; similarity = inner product. Neighbours come from the exact
:func:`metric_retrieval.evaluation.knn.knn` (ties by lower database index).

- :func:`average_qe` — AQE (Chum et al., ICCV 2007; DIR ``--aqe``): ``q' = mean(q, x_1..x_k)``, then L2
  (DIR does not re-normalise; the ranking is the same).
- :func:`alpha_qe` — αQE (Radenović et al., TPAMI 2018): ``q' = q + Σ_{i≤k} max(qᵀx_i, 0)^α x_i``, then L2.
- :func:`database_augmentation` — DBA with DIR's weights (``--dbe k``): each database vector is replaced by
  the weighted mean of its top-(k+1) neighbours (position 0 is normally itself) with weights
  ``[1, k/k, (k−1)/k, …, 1/k]``; no re-normalisation by default (as DIR), ``normalize=True`` adds L2.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from metric_retrieval.evaluation.knn import _as_tensor, knn

__all__ = ["QE_METHODS", "alpha_qe", "average_qe", "check_qe", "database_augmentation", "expand"]

QE_METHODS = ("aqe", "alpha", "none")  # none: DBA only
_QE_ALIASES = {"alpha_qe": "alpha", "aqe_alpha": "alpha"}


def check_qe(qe: Mapping[str, Any]) -> dict[str, Any]:
    """The one validation of a query-expansion setting ``{"method", "k", "alpha", "dba_k"}``: method one of
    :data:`QE_METHODS` (aliases ``alpha_qe``, ``aqe_alpha``), ``k >= 1`` neighbours unless ``none``,
    ``dba_k >= 0``. Returns it completed with the defaults (``aqe``, α = 3, no DBA); ``ValueError`` otherwise."""
    method = str(qe.get("method", "aqe")).lower()
    method = _QE_ALIASES.get(method, method)
    if method not in QE_METHODS:
        raise ValueError(f"unknown query expansion method {method!r}; choose aqe, alpha or none")
    spec = {"method": method, "k": int(qe.get("k", 0)), "alpha": float(qe.get("alpha", 3.0)),
            "dba_k": int(qe.get("dba_k") or 0)}
    if (method != "none" and spec["k"] < 1) or spec["dba_k"] < 0:
        raise ValueError("K must be a positive number of neighbours (e.g. aqe:5) and DBA's K must be >= 0")
    return spec


def expand(Q: torch.Tensor, X: torch.Tensor, qe: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q', X')``: DBA on the database first (``dba_k``, DIR weights), then AQE / αQE on the queries."""
    spec = check_qe(qe)
    if spec["dba_k"]:
        X = database_augmentation(X, spec["dba_k"])
    if spec["method"] == "aqe":
        Q = average_qe(Q, X, spec["k"])
    elif spec["method"] == "alpha":
        Q = alpha_qe(Q, X, spec["k"], spec["alpha"])
    return Q, X


def _prep(Q: Any, X: Any, k: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    squeeze = (isinstance(Q, torch.Tensor) and Q.dim() == 1) or getattr(Q, "ndim", 2) == 1
    q = _as_tensor(Q.reshape(1, -1) if squeeze else Q, "Q")
    x = _as_tensor(X, "X")
    if k < 0 or k > x.shape[0]:
        raise ValueError(f"k must be in [0, {x.shape[0]}], got {k}")
    return q, x, squeeze


def average_qe(Q: Any, X: Any, k: int) -> torch.Tensor:
    """Average query expansion: (Q, D) queries, (N, D) database → (Q, D) expanded queries (L2).

    >>> import torch
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> average_qe(torch.tensor([[1.0, 0.0]]), X, k=1).tolist()
    [[1.0, 0.0]]
    """
    q, x, squeeze = _prep(Q, X, k)
    if k == 0:
        out = F.normalize(q, dim=1)
    else:
        _, idx = knn(q, x, k, metric="ip")
        out = F.normalize((q + x[idx].sum(dim=1)) / (k + 1), dim=1)
    return out[0] if squeeze else out


def alpha_qe(Q: Any, X: Any, k: int, alpha: float = 3.0) -> torch.Tensor:
    """αQE: neighbours weighted by their similarity to the query raised to ``alpha`` (negatives → 0)."""
    q, x, squeeze = _prep(Q, X, k)
    if k == 0:
        out = F.normalize(q, dim=1)
    else:
        s, idx = knn(q, x, k, metric="ip")
        w = s.clamp(min=0).pow(alpha)
        out = F.normalize(q + (w[:, :, None] * x[idx]).sum(dim=1), dim=1)
    return out[0] if squeeze else out


def database_augmentation(X: Any, k: int, normalize: bool = False) -> torch.Tensor:
    """DBA with DIR weights: (N, D) → (N, D).

    >>> import torch
    >>> X = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> [[round(v, 4) for v in row] for row in database_augmentation(X, k=1).tolist()]  # (x_self + x_nn) / 2
    [[0.9, 0.3], [0.9, 0.3], [0.4, 0.8]]
    """
    x = _as_tensor(X, "X")
    if k < 0 or k + 1 > x.shape[0]:
        raise ValueError(f"k must be in [0, {x.shape[0] - 1}], got {k}")
    if k == 0:
        return F.normalize(x, dim=1) if normalize else x.clone()
    _, idx = knn(x, x, k + 1, metric="ip")
    w = torch.cat([torch.ones(1), torch.arange(k, 0, -1, dtype=torch.float32) / k])  # [1, k/k, ..., 1/k]
    out = (w[None, :, None] * x[idx]).sum(dim=1) / w.sum()
    return F.normalize(out, dim=1) if normalize else out
