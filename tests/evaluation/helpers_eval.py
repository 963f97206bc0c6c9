"""Brute-force NumPy references for the evaluation tests (full argsort with an explicit tie rule)."""
from __future__ import annotations

import numpy as np


def integer_embeddings(n: int, dim: int, low: int = -2, high: int = 3, seed: int = 0) -> np.ndarray:
    """Small-integer embeddings: many exact duplicates and tied scores, all sums exact in float32."""
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=(n, dim)).astype(np.float32)


def brute_rank(query: np.ndarray, gallery: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Full ranking of the gallery for each query: sort by (−key, index) (key: ip, or −squared L2)."""
    q = query.astype(np.float64)
    g = gallery.astype(np.float64)
    if metric == "ip":
        key = q @ g.T
    else:
        key = -((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    n = g.shape[0]
    order = np.stack([np.lexsort((np.arange(n), -row)) for row in key])
    return order, np.take_along_axis(key, order, axis=1)


def brute_knn(query, gallery, k, metric="ip", exclude_self=False):
    order, key = brute_rank(query, gallery, metric)
    if exclude_self:
        keep = order != np.arange(len(query))[:, None]
        order = order[keep].reshape(len(query), -1)
        key = key[keep].reshape(len(query), -1)
    order, key = order[:, :k], key[:, :k]
    score = key if metric == "ip" else np.sqrt(np.maximum(-key, 0))
    return score, order


def brute_metrics(query, qlab, gallery=None, glab=None, ks=(1, 2, 4, 8), metric="ip") -> dict:
    loo = gallery is None
    if loo:
        gallery, glab = query, qlab
    order, _ = brute_rank(query, gallery, metric)
    recalls = {k: [] for k in ks}
    p1, rp, ap = [], [], []
    excluded = 0
    for i in range(len(query)):
        ranking = [j for j in order[i] if not (loo and j == i)]
        rel = np.array([glab[j] == qlab[i] for j in ranking], dtype=bool)
        r = int(rel.sum())
        if r == 0:
            excluded += 1
            continue
        for k in ks:
            recalls[k].append(rel[:k].any())
        p1.append(rel[0])
        rp.append(rel[:r].sum() / r)
        s = 0.0
        hits = 0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                s += hits / (pos + 1)
        ap.append(s / r)
    out = {f"recall@{k}": float(np.mean(v)) if v else float("nan") for k, v in recalls.items()}
    out.update({"precision@1": float(np.mean(p1)) if p1 else float("nan"),
                "r_precision": float(np.mean(rp)) if rp else float("nan"),
                "map@r": float(np.mean(ap)) if ap else float("nan"),
                "num_queries": len(query), "num_excluded_queries": excluded})
    return out
