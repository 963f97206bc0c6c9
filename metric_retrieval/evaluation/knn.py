"""Exact k-nearest-neighbour search with interchangeable back-ends.

One entry point, :func:`knn`, and back-ends found by name in :data:`KNN_BACKENDS`
(:mod:`metric_retrieval.evaluation.knn_registry`: each declares its priority, ``max_k`` and metrics):

=============  ========  ======================================================  =============================
back-end       priority  how                                                     available when
=============  ========  ======================================================  =============================
``faiss_gpu``  40        ``IndexFlatIP`` / ``IndexFlatL2`` on GPU 0 (k ≤ 2047)   ``faiss.get_num_gpus() > 0``
``torch_cuda`` 30        chunked ``matmul`` + ``topk`` on CUDA                   ``torch.cuda.is_available()``
``bf16``       25        bf16 candidates + exact re-rank (ip, k ≤ 256)           native bf16 on the CPU
``faiss_cpu``  20        ``IndexFlatIP`` / ``IndexFlatL2``, query chunks         ``import faiss`` works
``torch``      10        chunked ``matmul`` + ``topk`` on the CPU                always
``fp16_cuda``  5         fp16 candidates + exact re-rank (ip, k ≤ 256), opt-in   ``torch.cuda.is_available()``
=============  ========  ======================================================  =============================

``backend="auto"`` takes the available back-end of highest priority that serves the search width and metric.
``faiss_gpu`` serves search widths k ≤ 2047 only: faiss on the GPU selects at most 2048 neighbours and the faiss
back-ends ask for one more than k (the tie probe below). The certified low-precision back-ends
(:mod:`metric_retrieval.evaluation.knn_bf16`) rank by an exact float64-accumulated score; the others by their
BLAS's float32 sums. A named back-end that does not serve a search falls to the next one with a warning, and so
does ``faiss_gpu`` when its GPU index cannot be built.

**Scores.** ``metric="ip"``: inner products, best (largest) first. ``metric="l2"``: Euclidean distances
(not squared), best (smallest) first. Every back-end ranks by a key where larger is better: the inner
product, or minus the squared distance.

**Ties** are broken by the lower gallery index, the same way for every back-end:

- ``torch`` / ``torch_cuda`` (exact): ``topk`` finds the k-th best key; a row with more than k candidates at
  or above it (a tie at the boundary) is re-selected from ALL its candidates with a stable sort, so the
  lowest indices win; the k survivors are then ordered by (−key, index) with a stable sort.
- ``faiss_cpu`` / ``faiss_gpu``: k+1 neighbours are searched and re-ordered by (−key, index) with the same
  stable sort. faiss keeps arbitrary members of a tie that straddles the k-th position (its BLAS path does
  not prefer low ids), so a row whose k-th and (k+1)-th keys are equal is recomputed exactly with the
  torch routine above; other rows are unambiguous. Keys are computed by BLAS, so two items whose keys
  should tie but differ in the last bit (summation order) are ordered by the computed value; exact
  duplicates of integer-valued data tie exactly in every back-end.

**Leave-one-out** (``exclude_self=True``): k+1 neighbours are searched, and in each row the column whose
index equals the query's own index is dropped; if the own index is not among the k+1 (duplicates or ties
pushed it out) the last column is dropped instead, so exactly k remain (pytorch-metric-learning
``FaissKNN`` semantics). The own index is never returned, whatever the embeddings.

**Memory.** Queries are processed in chunks; only a (chunk, N) block of scores exists at any time. With
``chunk_size=None`` the chunk is sized so the block is at most ~256 MB and at most a quarter of the free
memory (``os.sysconf`` on the CPU, ``torch.cuda.mem_get_info`` on the GPU). SOP's 60,502² score matrix
(14.6 GB) is never materialised.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from metric_retrieval.evaluation import knn_bf16  # noqa: F401 - registers the bf16 / fp16_cuda back-ends
from metric_retrieval.evaluation.knn_registry import KNN_BACKENDS, available_backends, resolve_backend, serves
from metric_retrieval.utils.errors import UnknownOptionError
from metric_retrieval.utils.faiss_lib import faiss_gpu_count, load_faiss
from metric_retrieval.utils.options import Option

__all__ = ["KNN_BACKENDS", "auto_chunk_size", "available_backends", "iter_knn", "knn", "resolve_backend"]

logger = logging.getLogger(__name__)

TARGET_CHUNK_BYTES = 256 * 2**20
FAISS_GPU_MAX_K = 2048  # faiss GPU_MAX_SELECTION_K: the most neighbours one GPU search returns
METRICS = ("ip", "l2")


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """A float32 2-D tensor (numpy arrays are wrapped without a copy when already float32)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) array, got shape {tuple(x.shape)}")
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    return x


def _free_cpu_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * TARGET_CHUNK_BYTES


def _free_cuda_bytes(device: torch.device) -> int:
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except Exception:  # pragma: no cover - depends on the driver
        return 4 * TARGET_CHUNK_BYTES


def auto_chunk_size(num_gallery: int, k: int, device: str | torch.device = "cpu",
                    target_bytes: int = TARGET_CHUNK_BYTES) -> int:
    """Number of query rows per chunk so that one (rows, N) float32 score block stays ≤ ``target_bytes``
    and ≤ a quarter of the free memory of ``device``; at least 1.

    >>> auto_chunk_size(60502, 1000, target_bytes=256 * 2**20) <= 1109
    True
    """
    device = torch.device(device)
    free = _free_cuda_bytes(device) if device.type == "cuda" else _free_cpu_bytes()
    budget = max(1, min(int(target_bytes), free // 4))
    per_row = 4 * max(1, num_gallery) + 12 * (k + 1)  # scores row + kept (score, index) row
    return max(1, budget // per_row)


def _order_rows(key: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (−key, index): stable sort by index first, then stable sort by −key."""
    o = torch.argsort(idx, dim=1, stable=True)
    idx = torch.gather(idx, 1, o)
    key = torch.gather(key, 1, o)
    o = torch.sort(-key, dim=1, stable=True).indices
    return torch.gather(key, 1, o), torch.gather(idx, 1, o)


def _order_ties(key: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows already sorted by key (descending): re-order only rows with equal neighbouring keys."""
    if key.shape[1] < 2:
        return key, idx
    same = key[:, 1:] == key[:, :-1]
    rows = torch.nonzero(same.any(dim=1)).flatten()
    if len(rows):  # one sort of (run id, index): run ids number the runs of equal keys in each row
        run = torch.zeros((len(rows), key.shape[1]), dtype=torch.int64, device=key.device)
        run[:, 1:] = (~same[rows]).cumsum(dim=1)
        sub = idx[rows]
        o = torch.argsort(run * (int(sub.max()) + 1) + sub, dim=1)
        key[rows] = torch.gather(key[rows], 1, o)
        idx[rows] = torch.gather(sub, 1, o)
    return key, idx


def _exact_topk(key: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``key`` (larger is better) with ties broken by the lower column index."""
    vals, idx = key.topk(k, dim=1, largest=True, sorted=True)
    thr = vals[:, -1:]
    n_cand = (key >= thr).sum(dim=1)
    for r in torch.nonzero(n_cand > k).flatten().tolist():  # a tie straddles the boundary: redo the row
        cand = torch.nonzero(key[r] >= thr[r]).flatten()  # ascending column indices
        cv = key[r, cand]
        o = torch.sort(-cv, stable=True).indices[:k]
        vals[r] = cv[o]
        idx[r] = cand[o]
    return _order_ties(vals, idx)


def _drop_self(key: torch.Tensor, idx: torch.Tensor,
               self_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From (c, k+1) results drop each row's own index, or the last column when it is absent."""
    self_index = self_index.to(idx.device)
    first = idx[:, 0] == self_index
    if bool(first.all()):  # the usual case: every query is its own nearest neighbour
        return key[:, 1:], idx[:, 1:]
    if bool(first.any()):
        other = torch.nonzero(~first).flatten()
        k_out, i_out = key[:, 1:].clone(), idx[:, 1:].clone()
        k_out[other], i_out[other] = _drop_self(key[other], idx[other], self_index[other])
        return k_out, i_out
    c, kp1 = idx.shape
    match = idx == self_index[:, None]
    has = match.any(dim=1)
    last = torch.full_like(has, kp1 - 1, dtype=torch.long)
    drop = torch.where(has, match.to(torch.int8).argmax(dim=1), last)
    cols = torch.arange(kp1 - 1, device=idx.device)[None, :].expand(c, -1)
    cols = cols + (cols >= drop[:, None])  # skip the dropped column
    return torch.gather(key, 1, cols), torch.gather(idx, 1, cols)


# ----------------------------------------------------------------------------------------------------------
# back-ends: each has ``available()``, ``prepare(gallery, metric)`` and ``search(state, query_chunk, k)``
# returning (key (c, k) float32 CPU, index (c, k) int64 CPU), best first, ties by lower index.
# ----------------------------------------------------------------------------------------------------------
# the option every back-end takes: the query rows per scored block (None: sized to the memory, see above)
CHUNK_SIZE = Option("eval_chunk_size", int, None, "query rows per kNN block; default: sized to the free memory",
                    low=1, to_builder=False)


class _TorchBackend:
    options = (CHUNK_SIZE,)
    device = torch.device("cpu")
    priority = 10
    max_k = None
    metrics = METRICS

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def prepare(cls, gallery: torch.Tensor, metric: str) -> dict:
        g = gallery.to(cls.device)
        sq = (g * g).sum(dim=1) if metric == "l2" else None
        return {"g": g, "sq": sq, "metric": metric}

    @classmethod
    def search(cls, state: dict, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = q.to(cls.device)
        key = q @ state["g"].T
        if state["metric"] == "l2":  # key = −‖q − g‖² = 2 q·g − ‖g‖² − ‖q‖²
            key.mul_(2).sub_(state["sq"][None, :]).sub_((q * q).sum(dim=1, keepdim=True))
        vals, idx = _exact_topk(key, k)
        return vals.cpu(), idx.cpu()

    @classmethod
    def chunk_device(cls) -> torch.device:
        return cls.device


@KNN_BACKENDS.register("torch")
class TorchKNN(_TorchBackend):
    """Chunked matmul + exact top-k on the CPU."""


@KNN_BACKENDS.register("torch_cuda")
class TorchCudaKNN(_TorchBackend):
    """Chunked matmul + exact top-k on the current CUDA device."""

    device = torch.device("cuda")
    priority = 30

    @classmethod
    def available(cls) -> bool:
        return torch.cuda.is_available()


@KNN_BACKENDS.register("faiss_cpu")
class FaissCpuKNN:
    """``faiss.IndexFlatIP`` / ``IndexFlatL2`` (exact) on the CPU."""

    options = (CHUNK_SIZE,)
    priority = 20
    max_k = None
    metrics = METRICS

    @classmethod
    def available(cls) -> bool:
        try:
            load_faiss()
        except ImportError:
            return False
        return True

    @classmethod
    def _index(cls, gallery: torch.Tensor, metric: str):
        faiss = load_faiss()
        index = faiss.IndexFlatIP(gallery.shape[1]) if metric == "ip" else faiss.IndexFlatL2(gallery.shape[1])
        index.add(np.ascontiguousarray(gallery.cpu().numpy(), dtype=np.float32))
        return index

    @classmethod
    def prepare(cls, gallery: torch.Tensor, metric: str) -> dict:
        return {"index": cls._index(gallery, metric), "metric": metric, "g": gallery.cpu(), "sq": None}

    @classmethod
    def search(cls, state: dict, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = state["g"].shape[0]
        k_probe = min(k + 1, n)  # one extra column reveals a tie straddling the k-th position
        d, i = state["index"].search(np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32), k_probe)
        key = torch.from_numpy(d)
        if state["metric"] == "l2":
            key = key.neg_()  # faiss returns squared L2
        key, idx = _order_ties(key, torch.from_numpy(i))  # faiss output is sorted; fix tie order only
        if k_probe > k:
            tied = torch.nonzero(key[:, k - 1] == key[:, k]).flatten()
            if len(tied):  # faiss picks arbitrary members of a boundary tie: redo those rows exactly
                if state["sq"] is None and state["metric"] == "l2":
                    state["sq"] = (state["g"] * state["g"]).sum(dim=1)
                tk, ti = _TorchBackend.search(state, q[tied].cpu(), k)
                key[tied, :k], idx[tied, :k] = tk, ti
            key, idx = key[:, :k].contiguous(), idx[:, :k].contiguous()
        return key, idx

    @classmethod
    def chunk_device(cls) -> torch.device:
        return torch.device("cpu")


@KNN_BACKENDS.register("faiss_gpu")
class FaissGpuKNN(FaissCpuKNN):
    """``faiss.IndexFlat*`` copied to GPU 0 (needs faiss built with GPU support); k ≤ 2047."""

    priority = 40
    max_k = FAISS_GPU_MAX_K - 1  # the tie probe searches k + 1
    limit_reason = f"searches at most {FAISS_GPU_MAX_K} neighbours, i.e. k <= {FAISS_GPU_MAX_K - 1} plus the tie probe"

    @classmethod
    def available(cls) -> bool:
        try:
            return faiss_gpu_count(load_faiss()) > 0
        except Exception:
            return False

    @classmethod
    def prepare(cls, gallery: torch.Tensor, metric: str) -> dict:
        faiss = load_faiss()
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, cls._index(gallery, metric))
        return {"index": index, "metric": metric, "res": res, "g": gallery.cpu(), "sq": None}

    @classmethod
    def chunk_device(cls) -> torch.device:
        return torch.device("cuda")


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def _check_args(q: torch.Tensor, g: torch.Tensor, k: int, metric: str, n_excluded: int) -> None:
    if metric not in METRICS:
        raise UnknownOptionError(f"unknown kNN metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]} (shapes {tuple(q.shape)}, "
                         f"{tuple(g.shape)})")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > g.shape[0] - n_excluded:
        raise ValueError(f"k={k} exceeds the {g.shape[0] - n_excluded} gallery items that can be returned "
                         f"(gallery {g.shape[0]}{', self excluded' if n_excluded else ''})")


def iter_knn(query: Any, gallery: Any, k: int, metric: str = "ip", self_index: torch.Tensor | None = None,
             backend: str = "auto", chunk_size: int | None = None,
             ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, key, indices)`` per query chunk (CPU tensors; key = score for "ip", minus the squared
    distance for "l2"). ``self_index`` (Q,) int64: the gallery index to exclude for each query (k+1 are
    searched; −1 excludes nothing and drops the last column). The building block of
    :func:`knn` and :func:`metric_retrieval.evaluation.metrics.retrieval_metrics`, which consume results chunk by chunk
    to keep memory bounded."""
    q = _as_tensor(query, "query")
    g = _as_tensor(gallery, "gallery")
    extra = 0 if self_index is None else 1
    _check_args(q, g, k, metric, extra)
    k_search = int(k) + extra
    name = resolve_backend(backend, k_search, metric)
    impl = KNN_BACKENDS.get(name)
    if chunk_size is None:
        chunk_size = auto_chunk_size(g.shape[0], k_search, impl.chunk_device())
        if name.startswith("faiss"):  # faiss blocks the score matrix itself: only the outputs are ours
            chunk_size = max(chunk_size, min(4096, TARGET_CHUNK_BYTES // 4 // (12 * k_search)))
    chunk_size = max(1, int(chunk_size))
    if self_index is not None:
        self_index = torch.as_tensor(self_index, dtype=torch.long).cpu()
        if self_index.shape != (q.shape[0],):
            raise ValueError(f"self_index must have shape ({q.shape[0]},), got {tuple(self_index.shape)}")
    try:
        state = impl.prepare(g, metric)
    except Exception as exc:  # faiss GPU resources can fail at run time: fall back cleanly
        if name != "faiss_gpu":
            raise
        warnings.warn(f"faiss_gpu failed ({exc}); falling back to the next back-end", stacklevel=2)
        fallback = next(n for n in available_backends() if n != name and serves(n, k_search, metric))
        yield from iter_knn(q, g, k, metric, self_index, fallback, None)
        return
    logger.debug("knn: backend=%s Q=%d N=%d k=%d chunk=%d",
                 name, q.shape[0], g.shape[0], k_search, chunk_size)
    for start in range(0, q.shape[0], chunk_size):
        rows = slice(start, min(start + chunk_size, q.shape[0]))
        key, idx = impl.search(state, q[rows], k_search)
        if self_index is not None:
            key, idx = _drop_self(key, idx, self_index[rows])
        yield rows, key, idx


def knn(query: Any, gallery: Any = None, k: int = 1, metric: str = "ip", exclude_self: bool = False,
        backend: str = "auto", chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest gallery items of every query.

    Args:
        query: (Q, D) torch tensor or numpy array.
        gallery: (N, D), or ``None`` to search the query set itself.
        k: neighbours per query (≤ N, or ≤ N − 1 with ``exclude_self``).
        metric: ``"ip"`` (inner product; cosine for L2-normalised inputs) or ``"l2"`` (Euclidean).
        exclude_self: leave-one-out; query i is gallery item i (``gallery`` is None, is ``query``, or has
            the same number of rows, row i being the same item). Each query's own index is removed
            explicitly (see the module docstring), never by a distance trick.
        backend: ``"auto"`` or one of :data:`KNN_BACKENDS` (``fp16_cuda``, ``faiss_gpu``, ``torch_cuda``,
            ``bf16``, ``faiss_cpu``, ``torch``).
        chunk_size: queries per chunk; ``None`` sizes it from the free memory (≤ ~256 MB of scores).

    Returns:
        scores (Q, k) float32 — similarities (descending) for "ip", Euclidean distances (ascending) for
        "l2" — and indices (Q, k) int64 into the gallery; CPU tensors. Ties: lower gallery index first.

    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> s, i = knn(x, None, k=2, exclude_self=True, backend="torch")
    >>> i.tolist()
    [[1, 2], [0, 2], [0, 1]]
    >>> knn(x, x, k=1, metric="l2", backend="torch")[0].flatten().tolist()
    [0.0, 0.0, 0.0]
    """
    q = _as_tensor(query, "query")
    g = q if gallery is None or gallery is query else _as_tensor(gallery, "gallery")
    self_index = None
    if exclude_self:
        if g.shape[0] != q.shape[0]:
            raise ValueError(f"exclude_self needs the gallery to be the query set (got {q.shape[0]} queries, "
                             f"{g.shape[0]} gallery items)")
        self_index = torch.arange(q.shape[0])
    _check_args(q, g, k, metric, 1 if exclude_self else 0)
    scores = torch.empty((q.shape[0], int(k)), dtype=torch.float32)
    indices = torch.empty((q.shape[0], int(k)), dtype=torch.int64)
    for rows, key, idx in iter_knn(q, g, k, metric, self_index, backend, chunk_size):
        scores[rows] = key
        indices[rows] = idx
    if metric == "l2":
        scores.neg_().clamp_(min=0).sqrt_().add_(0.0)  # +0.0 turns -0.0 into 0.0
    return scores, indices
