"""One-level base classes for the two kinds of loss (pytorch-metric-learning-style contract, no mixins).

* :class:`EmbeddingLoss` — ``input = "embedding"``; ``forward(embeddings (B, D), labels (B,),
  indices_tuple=None) -> scalar``. ``indices_tuple`` is a miner's ``(a, p, n)`` or ``(a1, p, a2, n)``;
  a loss whose ``accepts_miner`` is False mines internally or uses proxies and rejects one.
* :class:`LogitsLoss` — ``input = "logits"``; ``forward(logits (B, M), labels (B,)) -> scalar``.

Loss-owned parameters (proxies, class maps, β) get their learning rate from ``lr`` (absolute, when the
reference gives one) or ``base_lr * lr_multiplier``; the criterion builds the optimiser groups
(weight decay 0) from these attributes.
"""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from metric_retrieval.losses._utils import IndicesTuple, check_indices_tuple, check_inputs


class EmbeddingLoss(nn.Module):
    """Base of the losses that read the embedding. Subclasses implement :meth:`compute_loss`."""

    input: ClassVar[str] = "embedding"
    accepts_miner: ClassVar[bool] = True
    # reduced over its tuples or anchors only, so batch-vs-memory is the loss on [batch; memory] with
    # batch-anchored tuples (cross-batch memory, losses/memory.py)
    reference_path: ClassVar[bool] = False
    lr_multiplier: float = 1.0
    lr: float | None = None

    def forward(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None = None) -> Tensor:
        """Args: embeddings ``(B, D)`` float; labels ``(B,)`` int64; indices_tuple from a miner or None.

        Returns a 0-d tensor. Where no valid pair/tuple exists it is 0 and still attached to the graph.
        """
        name = type(self).__name__
        check_inputs(embeddings, labels, name)
        if indices_tuple is not None:
            if not self.accepts_miner:
                raise ValueError(f"{name} mines internally / uses proxies and takes no indices_tuple (miner)")
            check_indices_tuple(indices_tuple)
        return self.compute_loss(embeddings, labels.long(), indices_tuple)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        raise NotImplementedError


class LogitsLoss(nn.Module):
    """Base of the losses that read classifier logits ``(B, M)``."""

    input: ClassVar[str] = "logits"
    accepts_miner: ClassVar[bool] = False
    lr_multiplier: float = 1.0
    lr: float | None = None

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Args: logits ``(B, M)`` float; labels ``(B,)`` int64 in ``[0, M)``. Returns a 0-d tensor."""
        name = type(self).__name__
        if logits.dim() != 2 or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{name}: expected logits (B, M) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        return self.compute_loss(logits, labels.long())

    def compute_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


def check_num_classes(num_classes: int | None, name: str) -> int:
    """``num_classes`` as a positive int, or a ``ValueError`` naming the loss that needs it."""
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"{name} needs num_classes (the number of training classes), got {num_classes!r}")
    return int(num_classes)


def check_embedding_dim(embedding_dim: int | None, name: str) -> int:
    """``embedding_dim`` as a positive int, or a ``ValueError`` naming the loss that needs it."""
    if embedding_dim is None or int(embedding_dim) < 1:
        raise ValueError(f"{name} needs embedding_dim (the embedding width D), got {embedding_dim!r}")
    return int(embedding_dim)


def check_labels_in_range(labels: Tensor, num_classes: int, name: str) -> None:
    """Raise ``ValueError`` if a label falls outside ``[0, num_classes)`` (indexing would fail obscurely)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}); got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


__all__ = ["EmbeddingLoss", "LogitsLoss", "check_embedding_dim", "check_labels_in_range", "check_num_classes"]
