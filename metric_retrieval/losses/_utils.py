"""Shared tensor helpers for losses and miners: distances, label masks and index-tuple conversions.

Index tuples follow the pytorch-metric-learning convention: a *triplet* tuple
``(a, p, n)`` or a *pair* tuple ``(a1, p, a2, n)`` of int64 tensors indexing the batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

IndicesTuple = tuple[Tensor, ...]


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose gradient is 0 (not inf/NaN) where ``x == 0``."""
    zero = x <= 0
    return torch.sqrt(torch.where(zero, torch.ones_like(x), x)) * (~zero).to(x.dtype)


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """Squared Euclidean distances ``(B, B)`` via the Gram matrix, clamped at 0, exact 0 on the diagonal."""
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())).clamp(min=0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0.0)


def pairwise_distances(x: Tensor, squared: bool = False) -> Tensor:
    """Euclidean (or squared) distance matrix ``(B, B)``; RDML ``pdist`` with a safe square root."""
    d2 = pairwise_sq_distances(x)
    return d2 if squared else safe_sqrt(d2)


def row_distances(x: Tensor, i: Tensor, j: Tensor, squared: bool = False) -> Tensor:
    """Distances between rows ``x[i]`` and ``x[j]`` computed from the differences (exact, not via Gram)."""
    d2 = (x[i] - x[j]).pow(2).sum(dim=1)
    return d2 if squared else safe_sqrt(d2)


def gathered_distances(x: Tensor, i: Tensor, j: Tensor, squared: bool = False) -> Tensor:
    """Exact distances between rows ``x[i]`` and ``x[j]`` for any number of pairs.

    Few pairs (≤ 2B): from the row differences (memory ``len(i)·D``). Many pairs (all pairs or all triplets
    of a DAS-sized batch): gathered from an exact ``(R, B)`` ``torch.cdist`` matrix between the R distinct
    rows of ``i`` and all rows, computed without the Gram-matrix shortcut, so memory stays ``R·B`` (R = B
    in a batch; the batch size, not the memory size, against a cross-batch memory) and identical rows still
    get distance 0 with zero gradient.
    """
    if len(i) <= 2 * x.shape[0]:
        return row_distances(x, i, j, squared)
    rows, inverse = torch.unique(i, return_inverse=True)
    dist = torch.cdist(x[rows], x, compute_mode="donot_use_mm_for_euclid_dist")[inverse, j]
    return dist * dist if squared else dist


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(pos_mask, neg_mask)``, both ``(B, B)`` bool: same label without the diagonal, different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def zero_loss(*tensors: Tensor) -> Tensor:
    """A 0 that stays connected to the graph of ``tensors`` (gradients exist and are exactly 0)."""
    out = None
    for t in tensors:
        if t is None or not torch.is_tensor(t):
            continue
        z = (t * 0).sum()
        out = z if out is None else out + z
    if out is None:
        raise ValueError("zero_loss needs at least one tensor")
    return out


def all_pairs(labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every positive pair (i != j, same label) and every negative pair of the batch, as ``(a1, p, a2, n)``."""
    pos, neg = label_masks(labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def all_triplets(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every valid triplet ``(a, p, n)``: ``a != p``, ``y_a == y_p``, ``y_n != y_a``."""
    pos, neg = label_masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    a, p, n = torch.where(valid)
    return a, p, n


def to_pairs(indices_tuple: IndicesTuple | None, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pairs ``(a1, p, a2, n)`` from a triplet tuple (``(a, p, a, n)``), a pair tuple, or all pairs if None."""
    if indices_tuple is None:
        return all_pairs(labels)
    check_indices_tuple(indices_tuple)
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p, a, n
    return tuple(indices_tuple)  # type: ignore[return-value]


def to_triplets(indices_tuple: IndicesTuple | None, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets ``(a, p, n)`` from a triplet tuple, a pair tuple (joined on the anchor) or all triplets."""
    if indices_tuple is None:
        return all_triplets(labels)
    check_indices_tuple(indices_tuple)
    if len(indices_tuple) == 3:
        return tuple(indices_tuple)  # type: ignore[return-value]
    a1, p, a2, n = indices_tuple
    join = a1[:, None] == a2[None, :]
    i, j = torch.where(join)
    return a1[i], p[i], n[j]


def check_indices_tuple(indices_tuple: IndicesTuple) -> None:
    """Raise ``ValueError`` unless ``indices_tuple`` is a valid triplet or pair tuple of 1-D int tensors."""
    if len(indices_tuple) not in (3, 4):
        raise ValueError(f"indices_tuple must be (a, p, n) or (a1, p, a2, n), got {len(indices_tuple)} tensors")
    for t in indices_tuple:
        if not torch.is_tensor(t) or t.dim() != 1 or t.dtype not in (torch.int64, torch.int32):
            raise ValueError("indices_tuple entries must be 1-D integer tensors")
    if len(indices_tuple) == 3 and not (len(indices_tuple[0]) == len(indices_tuple[1]) == len(indices_tuple[2])):
        raise ValueError("triplet indices (a, p, n) must have equal lengths")
    if len(indices_tuple) == 4 and (
        len(indices_tuple[0]) != len(indices_tuple[1]) or len(indices_tuple[2]) != len(indices_tuple[3])
    ):
        raise ValueError("pair indices (a1, p, a2, n) must satisfy len(a1) == len(p) and len(a2) == len(n)")


def pair_masks(
    indices_tuple: IndicesTuple | None, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Boolean ``(B, B)`` masks of the positive and negative pairs named by ``indices_tuple`` (all if None)."""
    if indices_tuple is None:
        return label_masks(labels)
    a1, p, a2, n = to_pairs(indices_tuple, labels)
    b = labels.shape[0]
    pos = torch.zeros(b, b, dtype=torch.bool, device=labels.device)
    neg = torch.zeros(b, b, dtype=torch.bool, device=labels.device)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg


def row_pair_masks(indices_tuple: IndicesTuple | None, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, pos, neg)``: the R anchor rows that have a pair in ``indices_tuple`` (all rows if None) and
    their ``(R, B)`` positive / negative masks, i.e. the rows of :func:`pair_masks` that are not empty."""
    if indices_tuple is None:
        pos, neg = label_masks(labels)
        return torch.arange(labels.shape[0], device=labels.device), pos, neg
    a1, p, a2, n = to_pairs(indices_tuple, labels)
    used = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    used[a1] = True
    used[a2] = True
    slot = used.long().cumsum(0) - 1  # row index -> its place among the used rows (a scatter, no sort)
    pos = torch.zeros(int(used.sum()), labels.shape[0], dtype=torch.bool, device=labels.device)
    neg = torch.zeros_like(pos)
    pos[slot[a1], p] = True
    neg[slot[a2], n] = True
    return torch.nonzero(used).flatten(), pos, neg


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1, add_one: bool = False) -> Tensor:
    """``log(Σ_{mask} e^x)`` (``log(1 + Σ ...)`` with ``add_one``) along ``dim``; empty rows give 0 / -inf safely.

    Rows whose mask is empty return 0 when ``add_one`` (log 1) and 0 otherwise (callers skip those rows).
    """
    neg_inf = torch.finfo(x.dtype).min
    x = x.masked_fill(~mask, neg_inf)
    if add_one:
        zeros = torch.zeros_like(x.narrow(dim, 0, 1))
        x = torch.cat([x, zeros], dim=dim)
        mask = torch.cat([mask, torch.ones_like(mask.narrow(dim, 0, 1))], dim=dim)
    out = torch.logsumexp(x, dim=dim)
    return torch.where(mask.any(dim=dim), out, torch.zeros_like(out))


def check_inputs(embeddings: Tensor, labels: Tensor, name: str) -> None:
    """Shape checks shared by the embedding losses and miners; errors name both shapes."""
    if embeddings.dim() != 2:
        raise ValueError(f"{name}: embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{name}: labels must be (B,) matching embeddings (B, D); got labels {tuple(labels.shape)}, "
            f"embeddings {tuple(embeddings.shape)}"
        )


def uniform_choice(mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """For each row of a bool ``(R, C)`` mask, one column drawn uniformly among its True entries.

    Returns ``(column, has_any)``; ``column`` is meaningless where ``has_any`` is False. Random numbers come
    from ``generator`` (drawn on its device, then moved) so results are reproducible.
    """
    scores = rand_like_on(mask.shape, mask.device, generator)
    scores = scores.masked_fill(~mask, -1.0)
    return scores.argmax(dim=1), mask.any(dim=1)


def rand_like_on(shape: tuple[int, ...] | torch.Size, device: torch.device,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``U[0, 1)`` numbers of ``shape`` on ``device``; drawn from ``generator`` on its own device if given."""
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
