"""Certified low-precision kNN: bf16 candidate scores with an error bound, then an exact re-rank of the candidates.

**Exact scores.** The reference score of a (query, gallery) pair is the inner product accumulated in float64
from the float32 inputs (every product is exact in float64) and rounded once to float32:
``s = fl32(Σ_i q_i g_i)`` (:func:`exact_scores`). It does not depend on a BLAS summation order, so duplicated
vectors score identically and ties are real ties.

**Candidate scores.** ``a = low(q̃ @ g̃ᵀ)`` where ``q̃``, ``g̃`` are the inputs rounded to the low-precision type
(bfloat16 on CPUs with AVX512-BF16/AMX, float16 on CUDA), the GEMM accumulates in float32 and rounds its output
to the low type. Per query row the error is bounded by (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1; Cauchy–Schwarz for every Σ|x_i y_i|)::

    |a − s| ≤ ρ|a| + E,   ρ = u/(1 − u)                               (output rounding, u = unit roundoff)
    E = (1 + 2⁻¹⁰)·( ‖q̃‖·max‖g − g̃‖ + ‖q − q̃‖·max‖g‖                  (input rounding, measured residuals)
                   + γ_D·‖q̃‖·max‖g̃‖ + u₃₂·‖q‖·max‖g‖ ) + η            (GEMM fp32 accumulation, final fl32)

with γ_D = D·u₃₂/(1 − D·u₃₂), u₃₂ = 2⁻²⁴, and η one subnormal step of the low type. Both ends of the
interval ``[a − ρ|a| − E, a + ρ|a| + E]`` are increasing in ``a``, so "certainly above t" and "possibly at or
above t" are each one threshold on ``a`` per row (:class:`ErrorBound`).

**Top-k** (:func:`certified_topk`): with ``a_k`` the k-th largest candidate score of a row, the true k-th score
is at least ``lower(a_k)``, so every member of the exact top k (ties included) has ``upper(a) ≥ lower(a_k)``.
Those candidates — a few more than k where the scores are spread, more where they crowd — are re-scored exactly
and ranked by (−s, index). The result is identical to an exact search with :func:`exact_scores` for every row;
no row is left uncertified, so there is nothing to recompute afterwards.

The back-end (``bf16``) serves ``metric="ip"`` and k ≤ ``max_k``: past that, the exact re-rank of k + margin
candidates per row costs more than it saves and ``auto`` falls to the next back-end. Recall@K needs no top-k
at all (:func:`metric_retrieval.evaluation.metrics.retrieval_metrics` counts the items above each query's best
positive with the same bound), and :func:`certified_rank_and_relevance` reads the scores past the GEMM once, for
the maximum of each block of ``COLUMN_BLOCK`` columns, then compares only the blocks that can hold a candidate.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from metric_retrieval.evaluation.knn_registry import KNN_BACKENDS

__all__ = ["Bf16KNN", "ErrorBound", "LowPrecisionGallery", "certified_rank_and_relevance", "certified_topk",
           "exact_scores", "native_bf16"]

U32 = 2.0**-24
SLACK = 1.0 + 2.0**-10  # covers the float32/float64 rounding of the norms the bound is made of
PAIR_BLOCK = 4096  # (query, gallery) pairs re-scored per block (measured fastest of 2**10, 2**12, 2**15)
COLUMN_BLOCK = 64  # gallery columns summarised by one maximum in certified_rank_and_relevance


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``) and torch's
    oneDNN uses it. Elsewhere bf16 GEMMs are emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    has_flag = " avx512_bf16" in flags or " amx_bf16" in flags
    return has_flag and bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def exact_scores(q: torch.Tensor, g: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``fl32(q[rows[p]] · g[cols[p]])`` for every pair p, accumulated in float64: (P,) float32."""
    out = torch.empty(len(rows), dtype=torch.float32, device=q.device)
    for start in range(0, len(rows), PAIR_BLOCK):
        r, c = rows[start:start + PAIR_BLOCK], cols[start:start + PAIR_BLOCK]
        qs, gs = q.index_select(0, r).double(), g.index_select(0, c).double()
        out[start:start + PAIR_BLOCK] = torch.bmm(qs[:, None, :], gs[:, :, None]).flatten().float()
    return out


@dataclass
class LowPrecisionGallery:
    """A gallery prepared for certified search: the float32 rows, their low-precision copy and the norms the
    error bound needs."""

    g: torch.Tensor  # (N, D) float32
    low: torch.Tensor  # (N, D) low-precision copy: the first N rows of ``padded``
    padded: torch.Tensor  # (N', D): ``low`` and zero rows up to a multiple N' of COLUMN_BLOCK
    max_norm: float  # max ‖g_j‖
    max_low_norm: float  # max ‖g̃_j‖
    max_residual: float  # max ‖g_j − g̃_j‖

    @classmethod
    def build(cls, g: torch.Tensor, dtype: torch.dtype) -> LowPrecisionGallery:
        if not bool(torch.isfinite(g).all()):
            raise ValueError("the gallery embeddings contain NaN or infinite values")
        n = g.shape[0]
        padded = torch.zeros((-(-n // COLUMN_BLOCK) * COLUMN_BLOCK, g.shape[1]), dtype=dtype, device=g.device)
        low = padded[:n]
        low.copy_(g)
        if not bool(torch.isfinite(low).all()):
            raise ValueError(f"the gallery embeddings overflow {dtype}")
        return cls(g, low, padded, _max_norm(g), _max_norm(low), _max_norm(g - low.float()))


def _max_norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.float(), dim=1).max()) if len(x) else 0.0


@dataclass
class ErrorBound:
    """Per-row bound ``|a − s| ≤ ρ|a| + E`` (module docstring) and the thresholds on ``a`` it implies."""

    rho: float
    e: torch.Tensor  # (c,) float64

    @classmethod
    def of(cls, q: torch.Tensor, q_low: torch.Tensor, gallery: LowPrecisionGallery) -> ErrorBound:
        info = torch.finfo(gallery.low.dtype)
        u = info.eps / 2
        d = q.shape[1]
        gamma = d * U32 / (1 - d * U32)
        nq = torch.linalg.vector_norm(q.double(), dim=1)
        nq_low = torch.linalg.vector_norm(q_low.double(), dim=1)
        n_res = torch.linalg.vector_norm((q - q_low.float()).double(), dim=1)
        e = SLACK * (nq_low * gallery.max_residual + n_res * gallery.max_norm
                     + gamma * nq_low * gallery.max_low_norm + U32 * nq * gallery.max_norm)
        return cls(u / (1 - u), e + info.tiny * info.eps)

    def lower(self, a: torch.Tensor) -> torch.Tensor:
        """Smallest exact score a candidate score ``a`` (c, m) float64 allows."""
        return a - self.rho * a.abs() - self.e[:, None]

    def upper(self, a: torch.Tensor) -> torch.Tensor:
        """Largest exact score a candidate score ``a`` (c, m) float64 allows."""
        return a + self.rho * a.abs() + self.e[:, None]

    def at_least(self, t: torch.Tensor) -> torch.Tensor:
        """(c,) float64 thresholds: ``upper(a) ≥ t[r]`` ⇔ ``a ≥ at_least(t)[r]`` (inverse of ``upper``)."""
        v = t - self.e
        return torch.where(v >= 0, v / (1 + self.rho), v / (1 - self.rho))


def round_down(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Thresholds rounded down into ``dtype`` (a value ≥ the result whenever it is ≥ ``t``): moved down by
    more than one ulp of ``dtype`` before the round-to-nearest conversion."""
    eps = torch.finfo(dtype).eps
    return (t - t.abs() * (2 * eps) - torch.finfo(dtype).tiny).to(dtype)


def candidate_scores(q: torch.Tensor, gallery: LowPrecisionGallery, padded: bool = False
                     ) -> tuple[torch.Tensor, ErrorBound]:
    """Low-precision scores (c, N) of a query chunk and their error bound; ``padded``: (c, N') with −inf in the
    padding columns (a whole number of COLUMN_BLOCK-column blocks)."""
    if not bool(torch.isfinite(q).all()):
        raise ValueError("the query embeddings contain NaN or infinite values")
    q_low = q.to(gallery.low.dtype)
    largest = float(torch.linalg.vector_norm(q_low.float(), dim=1).max()) * gallery.max_low_norm if len(q) else 0.0
    if largest >= torch.finfo(gallery.low.dtype).max / 2:  # |q̃·g̃| ≤ ‖q̃‖‖g̃‖: the scores could overflow
        raise ValueError(f"inner products up to {largest:.3g} overflow {gallery.low.dtype}; normalise the "
                         "embeddings or use another kNN back-end")
    with _exact_accumulation():
        a = q_low @ (gallery.padded if padded else gallery.low).T
    if padded:
        a[:, gallery.low.shape[0]:] = float("-inf")
    return a, ErrorBound.of(q, q_low, gallery)


class _exact_accumulation:
    """Keep cuBLAS from accumulating fp16/bf16 GEMMs in reduced precision (the bound assumes float32)."""

    def __enter__(self) -> None:
        m = torch.backends.cuda.matmul
        self.saved = (m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction)
        m.allow_fp16_reduced_precision_reduction = False
        m.allow_bf16_reduced_precision_reduction = False

    def __exit__(self, *exc) -> None:
        m = torch.backends.cuda.matmul
        m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction = self.saved


def rank_pairs(rows: torch.Tensor, cols: torch.Tensor, s: torch.Tensor, num_rows: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Order pairs given in (row, col) order by (row, −s, col); returns (order, position of each ordered pair in
    its row)."""
    o = torch.argsort(-s, stable=True)
    o = o[torch.argsort(rows[o], stable=True)]
    counts = torch.bincount(rows, minlength=num_rows)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(rows), device=rows.device) - starts[rows[o]]
    return o, pos


def certified_topk(q: torch.Tensor, gallery: LowPrecisionGallery, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of a query chunk (scores by :func:`exact_scores`, ties by lower index), float32 / int64."""
    a, bound = candidate_scores(q, gallery)
    a_k = a.topk(k, dim=1, sorted=False).values.min(dim=1).values.double()
    thr = round_down(bound.at_least(bound.lower(a_k[:, None])[:, 0]), a.dtype)
    rows, cols = torch.nonzero(a >= thr[:, None], as_tuple=True)
    del a
    s = exact_scores(q, gallery.g, rows, cols)
    o, pos = rank_pairs(rows, cols, s, q.shape[0])
    keep = o[pos < k]  # each row has ≥ k candidates: the k with a ≥ a_k
    return s[keep].view(-1, k), cols[keep].view(-1, k)


def certified_rank_and_relevance(q: torch.Tensor, gallery: LowPrecisionGallery, exclude: torch.Tensor,
                                 t: torch.Tensor, t_col: torch.Tensor, cuts: torch.Tensor, top: torch.Tensor,
                                 labels: torch.Tensor, query_labels: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """What Recall@K and MAP@R need of a query chunk's exact ranking, without a top-k search.

    The exact ranking of row r orders the gallery (item ``exclude[r]`` left out when ≥ 0) by
    (−:func:`exact_scores`, index). Items are re-scored exactly only where the bound leaves an answer open.

    Args:
        q: (c, D) float32 queries.
        exclude: (c,) int64 gallery index left out of row r's ranking (leave-one-out), −1 for none.
        t, t_col: (c,) float32 / int64: the exact score of gallery item ``t_col[r]`` for row r.
        cuts: (m,) int64 rank cuts K: only whether ``rank < K`` is asked of the rank.
        top: (c,) int64 ≥ 1: how many leading positions of each ranking to report.
        labels, query_labels: (N,) gallery and (c,) query labels.

    Returns:
        rank (c,) int64: the position (from 0) of item ``t_col[r]``; exact wherever the bound leaves it open on
        which side of a cut it lies, else a value on the same side of every cut as the exact one;
        rel (c, max(top)) bool: ``labels[i-th item] == query_labels[r]`` for positions i < top[r], False beyond.
    """
    c = q.shape[0]
    a, bound = candidate_scores(q, gallery, padded=True)
    has = torch.nonzero(exclude >= 0).flatten()
    a[has, exclude[has]] = float("-inf")
    width = int(top.max())
    # one pass over the scores: the maximum of each block of COLUMN_BLOCK columns. The top[r]-th largest block
    # maximum is at most the top[r]-th largest score (top[r] blocks each hold a score at least that large), so it
    # stands in for the top[r]-th best candidate: a lower bound costs no top-k over every column
    blocks = a.view(c, -1, COLUMN_BLOCK).amax(dim=2)
    a_top = (blocks if blocks.shape[1] >= width else a).topk(width, dim=1).values.gather(1, (top - 1)[:, None])
    floor_top = bound.lower(a_top.double())[:, 0]  # the exact top[r]-th score is at least this
    t64 = t.double()
    thr = round_down(torch.minimum(bound.at_least(floor_top), bound.at_least(t64)), a.dtype)
    # every other item is below t and the top; an item at or above thr lies in a block whose maximum is too, so
    # only those blocks are compared column by column (in (row, col) order, as rank_pairs needs)
    block_rows, block_ids = torch.nonzero(blocks >= thr[:, None], as_tuple=True)
    segments = a.view(c, -1, COLUMN_BLOCK)[block_rows, block_ids]
    del a
    hit, offset = torch.nonzero(segments >= thr[block_rows, None], as_tuple=True)
    rows, cols = block_rows[hit], block_ids[hit] * COLUMN_BLOCK + offset
    av = segments[hit, offset].double()[:, None]
    del segments
    e = ErrorBound(bound.rho, bound.e[rows])
    lo, up = e.lower(av)[:, 0], e.upper(av)[:, 0]

    # rank of t_col: items certainly above t, plus the undecided band where it matters for a cut
    above = lo > t64[rows]
    band = ~above & (up >= t64[rows])
    n_above = torch.bincount(rows[above], minlength=c)
    n_most = n_above + torch.bincount(rows[band], minlength=c)
    open_rows = ((n_above[:, None] < cuts[None, :]) != (n_most[:, None] < cuts[None, :])).any(dim=1)
    sel = band & open_rows[rows]
    br, bc = rows[sel], cols[sel]
    s = exact_scores(q, gallery.g, br, bc)
    before = (s > t[br]) | ((s == t[br]) & (bc < t_col[br]))
    rank = n_above + torch.bincount(br[before], minlength=c)

    # relevance of the leading positions: the window holds every possible member of each top list
    win = up >= floor_top[rows]
    wr, wc, wa, wlo, wup = rows[win], cols[win], av[win, 0], lo[win], up[win]
    o, pos = rank_pairs(wr, wc, wa, c)  # order by the candidate scores
    wr, wc, wlo, wup = wr[o], wc[o], wlo[o], wup[o]
    rel_p = labels[wc] == query_labels[wr]
    # runs of consecutive candidates whose intervals overlap: the exact order permutes items within a run only,
    # so a run of one relevance fixes those positions; a mixed run before position top[r] needs exact scores
    brk = torch.ones(len(wr), dtype=torch.bool, device=q.device)
    brk[1:] = (wr[1:] != wr[:-1]) | (wlo[:-1] > wup[1:])
    run = torch.cumsum(brk, 0) - 1
    n_runs = int(run[-1]) + 1 if len(run) else 0
    rel_i = rel_p.to(torch.int64)
    r_min = torch.ones(n_runs, dtype=torch.int64, device=q.device).scatter_reduce(0, run, rel_i, "amin")
    r_max = torch.zeros(n_runs, dtype=torch.int64, device=q.device).scatter_reduce(0, run, rel_i, "amax")
    lead = pos < top[wr]
    redo = torch.zeros(c, dtype=torch.bool, device=q.device)
    redo[wr[lead & (r_min[run] != r_max[run])]] = True
    rel = torch.zeros((c, width), dtype=torch.bool, device=q.device)
    keep = lead & ~redo[wr]
    rel[wr[keep], pos[keep]] = rel_p[keep]
    sel = redo[wr]
    if bool(sel.any()):
        xr, xc = wr[sel], wc[sel]
        back = torch.argsort(xr * gallery.g.shape[0] + xc)  # (row, col) order for rank_pairs
        xr, xc = xr[back], xc[back]
        xs = exact_scores(q, gallery.g, xr, xc)
        o, pos = rank_pairs(xr, xc, xs, c)
        xr, xc = xr[o], xc[o]
        keep = pos < top[xr]
        rel[xr[keep], pos[keep]] = labels[xc[keep]] == query_labels[xr[keep]]
    return rank, rel


@KNN_BACKENDS.register("bf16")
class Bf16KNN:
    """bf16 candidates + exact re-rank on a CPU with native bf16 (AVX512-BF16/AMX); ``metric="ip"``, k ≤ 256."""

    priority = 25  # above faiss_cpu: 2.5-3x its GEMM rate where bf16 is native
    max_k = 256
    limit_reason = "re-ranks k + margin candidates per row, worth it for k <= 256 only"
    metrics = ("ip",)
    dtype = torch.bfloat16
    device = torch.device("cpu")
    # Query rows per counted chunk (retrieval_metrics): the passes over a (256, 60,512) bf16 block (31 MB) run
    # from cache; at SOP size, with the block maxima, 256 rows cost 25.3-26.9 CPU-s, 128 rows 27.4-27.6 and 512
    # rows 27.6-30.9 (before them: 37.0 at 256, 45.1 with the ~1,000 rows of auto_chunk_size). None:
    # auto_chunk_size.
    chunk_rows: int | None = 256

    @classmethod
    def available(cls) -> bool:
        return native_bf16()

    @classmethod
    def prepare(cls, gallery: torch.Tensor, metric: str) -> LowPrecisionGallery:
        return LowPrecisionGallery.build(gallery.to(cls.device), cls.dtype)

    @classmethod
    def search(cls, state: LowPrecisionGallery, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, i = certified_topk(q.to(cls.device), state, k)
        return s.cpu(), i.cpu()

    @classmethod
    def chunk_device(cls) -> torch.device:
        return cls.device


@KNN_BACKENDS.register("fp16_cuda")
class Fp16CudaKNN(Bf16KNN):
    """fp16 candidates + exact re-rank on the current CUDA device; ``metric="ip"``, k ≤ 256."""

    priority = 5  # opt-in (--knn_backend fp16_cuda) until measured on a GPU: "auto" prefers faiss_gpu/torch_cuda
    dtype = torch.float16
    device = torch.device("cuda")
    chunk_rows = None

    @classmethod
    def available(cls) -> bool:
        return torch.cuda.is_available()
