"""Cross-batch memory (XBM): Wang, Zhang, Huang & Scott, "Cross-Batch Memory for Embedding Learning",
CVPR 2020 (arXiv 1912.06798; original code msight-tech/research-xbm).

A ring buffer keeps the embeddings and labels of the last ``size`` training rows. A pair- or triplet-based
loss then compares the current batch with batch ∪ memory: it is computed on the concatenation
``[batch; memory]`` with every tuple anchored in the batch (:func:`loss_with_references`), the form of
pytorch-metric-learning's ``CrossBatchMemory``; memory rows are detached, so gradients reach the batch only.

Rules the criterion follows (:class:`metric_retrieval.losses.criterion.Criterion`):

* the memory is read during the loss and filled only afterwards (:meth:`CrossBatchMemory.enqueue` runs once
  per training step, after every term), so a row never meets its own copy;
* nothing is enqueued during the first ``warmup_steps`` steps (XBM's "start iteration": early embeddings
  drift too fast to be useful references);
* only the real rows are enqueued, never DAS's generated ones;
* the criterion receives the batch gathered from every rank, so under DDP every rank holds the same memory;
* the buffers live in the criterion's ``state_dict`` and are therefore checkpointed and restored exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metric_retrieval.losses._utils import IndicesTuple

__all__ = ["CrossBatchMemory", "anchored_pairs", "loss_with_references"]


class CrossBatchMemory(nn.Module):
    """The last ``size`` embeddings ``(size, D)`` and labels, oldest first in :meth:`get`.

    Args:
        size: M, the number of rows kept (XBM: 8192 or more for SOP/In-shop).
        embedding_dim: D.
        warmup_steps: K, training steps before the first enqueue.
    """

    def __init__(self, size: int, embedding_dim: int, warmup_steps: int = 0) -> None:
        super().__init__()
        if int(size) < 1 or int(embedding_dim) < 1 or int(warmup_steps) < 0:
            raise ValueError(f"cross-batch memory needs memory_size >= 1, embedding_dim >= 1 and "
                             f"memory_warmup >= 0; got {size}, {embedding_dim}, {warmup_steps}")
        self.size, self.warmup_steps = int(size), int(warmup_steps)
        self.register_buffer("embeddings", torch.zeros(self.size, int(embedding_dim)))
        self.register_buffer("labels", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next row to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen

    def __len__(self) -> int:
        return int(self.filled)

    def get(self) -> tuple[Tensor, Tensor]:
        """``(embeddings (n, D), labels (n,))`` of the ``n <= size`` stored rows, oldest first."""
        n, ptr = int(self.filled), int(self.ptr)
        order = torch.arange(ptr - n, ptr, device=self.labels.device) % self.size
        return self.embeddings[order], self.labels[order]

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Count one training step and, after the warm-up, store its rows (the oldest are overwritten)."""
        self.steps += 1
        if int(self.steps) <= self.warmup_steps:
            return
        embeddings, labels = embeddings.detach()[-self.size:], labels[-self.size:]
        rows = (int(self.ptr) + torch.arange(len(labels), device=self.labels.device)) % self.size
        self.embeddings[rows] = embeddings.to(self.embeddings.dtype)
        self.labels[rows] = labels.long()
        self.ptr.copy_((self.ptr + len(labels)) % self.size)
        self.filled.copy_(torch.clamp(self.filled + len(labels), max=self.size))

    def extra_repr(self) -> str:
        return f"size={self.size}, embedding_dim={self.embeddings.shape[1]}, warmup_steps={self.warmup_steps}"


def anchored_pairs(labels: Tensor, num_anchors: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every positive and negative pair ``(a1, p, a2, n)`` of ``labels`` whose anchor is one of the first
    ``num_anchors`` rows (``a != p``); built from a ``(num_anchors, N)`` mask, never ``(N, N)``."""
    same = labels[:num_anchors, None] == labels[None, :]
    eye = torch.zeros_like(same)
    eye[:, :num_anchors] = torch.eye(num_anchors, dtype=torch.bool, device=labels.device)
    a1, p = torch.where(same & ~eye)
    a2, n = torch.where(~same)
    return a1, p, a2, n


def _keep_anchored(indices_tuple: IndicesTuple, num_anchors: int) -> IndicesTuple:
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        keep = a < num_anchors
        return a[keep], p[keep], n[keep]
    a1, p, a2, n = indices_tuple
    k1, k2 = a1 < num_anchors, a2 < num_anchors
    return a1[k1], p[k1], a2[k2], n[k2]


def loss_with_references(loss: nn.Module, miner: nn.Module | None, embeddings: Tensor, labels: Tensor,
                         ref_embeddings: Tensor, ref_labels: Tensor) -> Tensor:
    """``loss`` between the batch and batch ∪ references: the loss on ``[embeddings; ref_embeddings]`` with
    the tuples (the miner's, or all pairs) restricted to anchors in the batch. References get no gradient."""
    n = embeddings.shape[0]
    all_emb = torch.cat([embeddings, ref_embeddings.detach().to(embeddings.dtype)])
    all_labels = torch.cat([labels, ref_labels.to(labels.device)])
    if miner is None:
        tuples = anchored_pairs(all_labels, n)
    else:
        tuples = _keep_anchored(miner(all_emb, all_labels), n)
    return loss(all_emb, all_labels, tuples)
