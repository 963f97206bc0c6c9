"""Retrieval metrics for deep metric learning: Recall@K, precision@1, R-precision, MAP@R and NMI.

Definitions:

- **Recall@K** is the DML hit-rate of the papers (CGD/CLF ``recall``, RDML ``e_recall@k``): the fraction of
  queries with at least one same-label item among their K nearest gallery items.
- **precision@1**, **R-precision** and **MAP@R** follow pytorch-metric-learning's ``AccuracyCalculator``
  ("A Metric Learning Reality Check", Musgrave et al., ECCV 2020, §3.2): for a query with label L,
  ``R = #gallery items with label L`` minus one when the query is itself in the gallery (leave-one-out);
  ``r_precision = (1/R) Σ_{i≤R} rel_i`` and ``map@r = (1/R) Σ_{i≤R} rel_i · P@i``.
- Leave-one-out (``gallery=None``): the query's own index is removed explicitly
  (:func:`metric_retrieval.evaluation.knn.knn`), never by a distance trick.
- **Lone queries** — queries without any same-label gallery item (R = 0) — are excluded from ALL metrics
  (PML semantics) and counted in ``num_excluded_queries``. (RDML/CGD keep them as misses; no standard
  benchmark has any.)
- **NMI**: faiss k-means on the query embeddings with k = #distinct query labels, 20 iterations, fixed
  seed, no sub-sampling; normalised mutual information with the arithmetic-mean normaliser (sklearn's
  default), computed here without sklearn. NMI uses all queries (it needs no neighbours).

**Counting instead of searching** (certified low-precision back-ends ``bf16`` / ``fp16_cuda``,
:mod:`metric_retrieval.evaluation.knn_bf16`; ``metric="ip"``): a query's Recall@K is decided by the rank of its
best positive (the same-label item of largest exact score, lowest index among equals), i.e. by the number of
gallery items ranked before it, so no top-1000 list is selected. Low-precision scores classify most items as
certainly above or below that score; the few within the error bound are re-scored exactly. Only the top R of
each query is listed, for precision@1, R-precision and MAP@R. Ranks and lists are those of an exact search with
float64-accumulated scores, ties by lower index.

Exactness of R-precision / MAP@R: one kNN search is run with ``k = max(max(ks), max R)``. When max R exceeds
``r_cap`` (default 1024) the search uses ``k = max(max(ks), r_cap)`` and the few queries with R > k are
re-searched exactly with their own k = R (grouped, chunked), so the values are exact for every query, never
truncated as PML's are when k < R. SOP's max R is 11 and In-shop's a few tens, so this never triggers there.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metric_retrieval.data import DATASETS, get_benchmark
from metric_retrieval.evaluation.knn import _as_tensor, auto_chunk_size, iter_knn, resolve_backend
from metric_retrieval.evaluation.knn_bf16 import certified_rank_and_relevance, exact_scores, rank_pairs
from metric_retrieval.evaluation.knn_registry import KNN_BACKENDS

LOW_PRECISION = ("bf16", "fp16_cuda")  # back-ends whose search certifies low-precision scores

__all__ = ["default_recall_ks", "kmeans_assign", "normalized_mutual_info", "rel_metrics", "retrieval_metrics"]

def default_recall_ks(dataset_name: str) -> tuple[int, ...]:
    """The Recall@K list the papers report for a benchmark: its reader's ``recall_ks``
    (:mod:`metric_retrieval.data.registry`; aliases accepted, case-insensitive).

    >>> default_recall_ks("CUB_200_2011")
    (1, 2, 4, 8)
    >>> default_recall_ks("sop")
    (1, 10, 100, 1000)
    >>> default_recall_ks("isc")
    (1, 10, 20, 30, 40, 50)
    """
    name = dataset_name if dataset_name in DATASETS else str(dataset_name).lower()
    return get_benchmark(name).recall_ks


def rel_metrics(rel: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query R-precision and MAP@R from a relevance matrix.

    Args:
        rel: (Q, k) bool, ``rel[q, i]`` = the (i+1)-th neighbour of q has q's label; k ≥ max R.
        r: (Q,) int64 ≥ 1, the number of relevant gallery items of each query.

    Returns:
        (r_precision (Q,), map_at_r (Q,)) float64.

    >>> rel = torch.tensor([[True, False, True, False], [False, True, True, True]])
    >>> rp, ap = rel_metrics(rel, torch.tensor([2, 3]))
    >>> [round(v, 6) for v in rp.tolist()], [round(v, 6) for v in ap.tolist()]
    ([0.5, 0.666667], [0.5, 0.388889])
    """
    k = rel.shape[1]
    if r.numel() and int(r.max()) > k:
        raise ValueError(f"relevance matrix has {k} columns but some query has R={int(r.max())}")
    pos = torch.arange(1, k + 1, dtype=torch.float64)
    relw = (rel & (pos[None, :] <= r[:, None])).to(torch.float64)
    hits = relw.sum(dim=1)
    prec_at_i = relw.cumsum(dim=1) / pos[None, :]
    rf = r.to(torch.float64)
    return hits / rf, (relw * prec_at_i).sum(dim=1) / rf


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """NMI with the arithmetic-mean normaliser: ``MI / ((H(U) + H(V)) / 2)`` (sklearn's default, incl. its
    special cases: 1.0 when both labelings are a single cluster, 0.0 when MI is 0).

    >>> round(normalized_mutual_info([0, 0, 1, 1], [5, 5, 3, 3]), 6)
    1.0
    >>> normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1])
    0.0
    >>> round(normalized_mutual_info([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]), 6)
    0.515804
    """
    a = np.asarray(labels_true).ravel()
    b = np.asarray(labels_pred).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    if len(ua) == len(ub) and len(ua) in (0, 1):
        return 1.0
    n = float(a.size)
    ca = np.bincount(ia).astype(np.float64)
    cb = np.bincount(ib).astype(np.float64)
    # sparse contingency table: count each (class, cluster) pair that occurs
    pairs, nij = np.unique(ia.astype(np.int64) * len(ub) + ib, return_counts=True)
    pi, pj = np.divmod(pairs, len(ub))
    nij = nij.astype(np.float64)
    # same operation order as sklearn.metrics.mutual_info_score / entropy
    p_nm = nij / n
    terms = p_nm * (np.log(nij) - math.log(n)) + p_nm * (-np.log(ca[pi] * cb[pj]) + 2 * math.log(n))
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    mi = max(float(terms.sum()), 0.0)
    if mi == 0.0:
        return 0.0
    ha = float(-np.sum(ca / n * (np.log(ca) - math.log(n))))
    hb = float(-np.sum(cb / n * (np.log(cb) - math.log(n))))
    return float(mi / ((ha + hb) / 2.0))


def kmeans_assign(x: Any, num_clusters: int, niter: int = 20, seed: int = 0) -> np.ndarray:
    """faiss k-means (L2, ``niter`` iterations, no sub-sampling, seeded) → (N,) nearest-centroid ids."""
    import faiss  # noqa: PLC0415 - optional dependency

    x = np.ascontiguousarray(_as_tensor(x, "embeddings").cpu().numpy(), dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], int(num_clusters), niter=niter, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(1, x.shape[0]))
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign.ravel()


def _labels(x: Any, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().long().ravel()
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} entries but there are {n} embeddings")
    return t


def retrieval_metrics(query: Any, query_labels: Any, gallery: Any = None, gallery_labels: Any = None,
                      ks: Sequence[int] = (1, 2, 4, 8), metric: str = "ip", backend: str = "auto",
                      include_nmi: bool = False, chunk_size: int | None = None, r_cap: int = 1024,
                      seed: int = 0) -> dict[str, float | int]:
    """Recall@K, precision@1, R-precision, MAP@R (and NMI) of a query set against a gallery.

    Args:
        query: (Q, D) embeddings (torch or numpy). Use L2-normalised embeddings with ``metric="ip"``.
        query_labels: (Q,) integer labels.
        gallery: (N, D) embeddings, or ``None`` for leave-one-out on the query set.
        gallery_labels: (N,) integer labels, or ``None`` with ``gallery=None``.
        ks: the K of Recall@K; a K larger than the gallery (minus self) is clamped to it.
        metric: "ip" or "l2" (see :func:`metric_retrieval.evaluation.knn.knn`).
        backend: passed to the kNN search.
        chunk_size: passed to the kNN search.
        include_nmi: also compute ``nmi`` (faiss k-means; slow for SOP-sized sets).
        r_cap: search width above which queries with a larger R are re-searched separately (exact anyway).
        seed: k-means seed.

    Returns:
        ``{"recall@K": ..., "precision@1", "r_precision", "map@r", ["nmi"], "num_queries",
        "num_excluded_queries"}``; fractions in [0, 1], NaN when every query is excluded.

    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    >>> x = torch.nn.functional.normalize(x, dim=1)
    >>> m = retrieval_metrics(x, [0, 0, 1, 1, 2], ks=(1, 2), backend="torch")
    >>> m["recall@1"], m["map@r"], m["num_queries"], m["num_excluded_queries"]
    (1.0, 1.0, 5, 1)
    """
    q = _as_tensor(query, "query")
    ql = _labels(query_labels, q.shape[0], "query_labels")
    loo = gallery is None
    if loo:
        g, gl = q, ql
    else:
        if gallery_labels is None:
            raise ValueError("gallery_labels is required when a gallery is given")
        g = _as_tensor(gallery, "gallery")
        gl = _labels(gallery_labels, g.shape[0], "gallery_labels")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")

    # R per query: same-label gallery items, minus the query itself for leave-one-out
    uniq, counts = torch.unique(gl, return_counts=True)
    pos = torch.searchsorted(uniq, ql).clamp(max=max(len(uniq) - 1, 0))
    found = uniq[pos] == ql if len(uniq) else torch.zeros_like(ql, dtype=torch.bool)
    r = torch.where(found, counts[pos], torch.zeros_like(ql)) - int(loo)
    valid = torch.nonzero(r > 0).flatten()
    n_avail = g.shape[0] - int(loo)

    out: dict[str, float | int] = {}
    nan = float("nan")
    if len(valid) == 0 or n_avail < 1:
        out.update({f"recall@{k}": nan for k in ks})
        out.update({"precision@1": nan, "r_precision": nan, "map@r": nan})
    else:
        rv = r[valid]
        r_max = int(rv.max())
        k_rec = min(ks[-1], n_avail)
        k_search = min(max(k_rec, min(r_max, max(int(r_cap), 1))), n_avail)
        win = min(k_search, r_max)  # columns needed for R-precision / MAP@R
        qlv = ql[valid]
        name = resolve_backend(backend, win, metric)
        if name in LOW_PRECISION:
            cuts = torch.tensor([min(k, n_avail) for k in ks])
            ranks, rel_win = _counted_ranks(q[valid], qlv, g, gl, valid if loo else None, cuts, rv.clamp(max=win),
                                            name, chunk_size)
            hits = {k: int((ranks < min(k, n_avail)).sum()) for k in ks}
        else:
            hits = {k: 0 for k in ks}
            rel_win = torch.zeros((len(valid), win), dtype=torch.bool)
            self_index = valid if loo else None
            for rows, _, idx in iter_knn(q[valid], g, k_search, metric, self_index, name, chunk_size):
                rel = gl[idx] == qlv[rows][:, None]
                first_hit = torch.where(rel.any(dim=1), rel.to(torch.int8).argmax(dim=1), k_search)
                for k in ks:
                    hits[k] += int((first_hit < min(k, n_avail)).sum())
                rel_win[rows] = rel[:, :win]
        n = len(valid)
        for k in ks:
            out[f"recall@{k}"] = hits[k] / n
        out["precision@1"] = float(rel_win[:, 0].double().mean())
        small = rv <= win
        rp = torch.empty(n, dtype=torch.float64)
        ap = torch.empty(n, dtype=torch.float64)
        sel = torch.nonzero(small).flatten()
        block = max(1, 2**22 // max(win, 1))
        for s in range(0, len(sel), block):
            b = sel[s: s + block]
            rp[b], ap[b] = rel_metrics(rel_win[b], rv[b])
        big = torch.nonzero(~small).flatten()
        if len(big):
            rp[big], ap[big] = _exact_large_r(q, g, gl, valid[big], ql, rv[big], metric, backend, loo)
        out["r_precision"] = float(rp.mean())
        out["map@r"] = float(ap.mean())
    if include_nmi:
        n_clusters = int(torch.unique(ql).numel())
        out["nmi"] = normalized_mutual_info(ql.numpy(), kmeans_assign(q, n_clusters, seed=seed))
    out["num_queries"] = int(q.shape[0])
    out["num_excluded_queries"] = int(q.shape[0] - len(valid))
    return out


def _exact_large_r(q: torch.Tensor, g: torch.Tensor, gl: torch.Tensor, qi: torch.Tensor, ql: torch.Tensor,
                   r: torch.Tensor, metric: str, backend: str, loo: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """R-precision / MAP@R of queries ``qi`` whose R exceeded the main search width: searched again with
    k = R, in groups of similar R so that one group's (rows × R) results stay small."""
    order = torch.argsort(r)
    rp = torch.empty(len(qi), dtype=torch.float64)
    ap = torch.empty(len(qi), dtype=torch.float64)
    budget = 2**24  # result elements per group
    start = 0
    while start < len(order):
        rows_max = max(1, budget // int(r[order[start]]))
        stop = min(len(order), start + rows_max)
        while stop > start + 1 and (stop - start) * int(r[order[stop - 1]]) > budget:
            stop -= 1
        grp = order[start:stop]
        k = int(r[grp].max())
        sub = qi[grp]
        rel = torch.zeros((len(grp), k), dtype=torch.bool)
        for rows, _, idx in iter_knn(q[sub], g, k, metric, sub if loo else None, backend):
            rel[rows] = gl[idx] == ql[sub][rows][:, None]
        rp[grp], ap[grp] = rel_metrics(rel, r[grp])
        start = stop
    return rp, ap


def _best_positives(q: torch.Tensor, ql: torch.Tensor, g: torch.Tensor, gl: torch.Tensor, exclude: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's best positive: (exact score (Q,) float32, gallery index (Q,) int64), the same-label item
    other than ``exclude[i]`` of largest :func:`exact_scores` score, lowest index among equals. Every query must
    have one."""
    order = torch.argsort(gl, stable=True)  # gallery indices by (label, index)
    uniq, counts = torch.unique_consecutive(gl[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    cls = torch.searchsorted(uniq, ql)
    n_each = counts[cls]
    rows = torch.repeat_interleave(torch.arange(len(ql)), n_each)
    offset = torch.arange(len(rows)) - torch.repeat_interleave(torch.cumsum(n_each, 0) - n_each, n_each)
    cols = order[starts[cls][rows] + offset]
    keep = cols != exclude[rows]
    rows, cols = rows[keep], cols[keep]
    s = exact_scores(q, g, rows, cols)
    o, pos = rank_pairs(rows, cols, s, len(ql))
    first = o[pos == 0]
    return s[first], cols[first]


def _counted_ranks(q: torch.Tensor, ql: torch.Tensor, g: torch.Tensor, gl: torch.Tensor,
                   self_index: torch.Tensor | None, cuts: torch.Tensor, top: torch.Tensor, backend: str,
                   chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each query's best positive (Recall@K: a hit iff rank < K, decided for every K of ``cuts``) and the
    relevance (Q, max(top)) of its exact top ``top[i]`` items; see "Counting instead of searching" in the module
    docstring."""
    impl = KNN_BACKENDS.get(backend)
    exclude = torch.full((len(q),), -1, dtype=torch.long) if self_index is None else self_index
    t, t_col = _best_positives(q, ql, g, gl, exclude)
    state = impl.prepare(g, "ip")
    device = impl.chunk_device()
    chunk = chunk_size or min(auto_chunk_size(g.shape[0], int(top.max()), device),
                              getattr(impl, "chunk_rows", None) or len(q) or 1)
    ranks = torch.empty(len(q), dtype=torch.long)
    rel = torch.zeros((len(q), int(top.max())), dtype=torch.bool)
    for start in range(0, len(q), chunk):
        rows = slice(start, start + chunk)
        args = (exclude[rows], t[rows], t_col[rows], cuts, top[rows], gl, ql[rows])
        rank, r = certified_rank_and_relevance(q[rows].to(device), state, *(x.to(device) for x in args))
        ranks[rows] = rank.cpu()
        rel[rows, :r.shape[1]] = r.cpu()
    return ranks, rel
