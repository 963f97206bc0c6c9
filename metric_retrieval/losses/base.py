"""Base classes for the kinds of loss (pytorch-metric-learning-style contract, no mixins).

* :class:`EmbeddingLoss` — ``input = "embedding"``; ``forward(embeddings (B, D), labels (B,),
  indices_tuple=None) -> scalar``. ``indices_tuple`` is a miner's ``(a, p, n)`` or ``(a1, p, a2, n)``;
  a loss whose ``takes_miner`` is False mines internally or uses proxies and rejects one.
* :class:`ProxyLoss` — an embedding loss against one learned ``(C, D)`` vector per training class (proxies,
  class centres); it takes no miner.
* :class:`LogitsLoss` — ``input = "logits"``; ``forward(logits (B, M), labels (B,)) -> scalar``.

Every registered loss derives from :class:`EmbeddingLoss` or :class:`LogitsLoss`; :func:`reads_logits` and
:func:`takes_miner` are the framework's only tests of which one a loss is.

Loss-owned parameters (proxies, class maps, β) get their learning rate from ``lr`` (absolute, when the
reference gives one) or ``base_lr * lr_multiplier``; the criterion builds the optimiser groups
(weight decay 0) from these attributes.
"""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from metric_retrieval.losses._utils import IndicesTuple, check_indices_tuple, check_inputs, zero_loss


class EmbeddingLoss(nn.Module):
    """Base of the losses that read the embedding. Subclasses implement :meth:`compute_loss`."""

    input: ClassVar[str] = "embedding"
    takes_miner: ClassVar[bool] = True
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
            if not self.takes_miner:
                raise ValueError(f"{name} mines internally / uses proxies and takes no indices_tuple (miner)")
            check_indices_tuple(indices_tuple)
        return self.compute_loss(embeddings, labels.long(), indices_tuple)

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        raise NotImplementedError


class LogitsLoss(nn.Module):
    """Base of the losses that read classifier logits ``(B, M)``."""

    input: ClassVar[str] = "logits"
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


class ProxyLoss(EmbeddingLoss):
    """Base of the losses that compare the batch with one learned vector per training class.

    The ``(C, D)`` parameter is named ``proxy_name`` (``proxies``, or ``weight`` for the class maps of the
    classification losses; the name is its state-dict key) and drawn by :meth:`init_proxies`; it is trained
    with ``lr`` (absolute) or ``base_lr * lr_multiplier``. Subclasses implement :meth:`proxy_loss`, which sees
    a non-empty batch whose labels index the proxies.
    """

    takes_miner: ClassVar[bool] = False
    proxy_name: ClassVar[str] = "proxies"
    min_classes: ClassVar[int] = 1

    def __init__(self, num_classes: int | None, embedding_dim: int | None, lr_multiplier: float,
                 lr: float | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        c, d = check_num_classes(num_classes, name), check_embedding_dim(embedding_dim, name)
        if c < self.min_classes:
            raise ValueError(f"{name} needs num_classes >= {self.min_classes}, got {c}")
        self.register_parameter(self.proxy_name, nn.Parameter(self.init_proxies(c, d)))
        self.lr, self.lr_multiplier = lr, float(lr_multiplier)

    @property
    def class_vectors(self) -> Tensor:
        """The ``(C, D)`` proxies, whatever their name."""
        return getattr(self, self.proxy_name)

    def init_proxies(self, num_classes: int, embedding_dim: int) -> Tensor:
        """The initial ``(num_classes, embedding_dim)`` proxies (the loss's paper or reference code says how)."""
        raise NotImplementedError

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        proxies = self.class_vectors
        if embeddings.shape[0] == 0:
            return zero_loss(embeddings, proxies)
        check_labels_in_range(labels, proxies.shape[0], type(self).__name__)
        return self.proxy_loss(embeddings, labels)

    def proxy_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


def _loss_class(loss: nn.Module | type) -> type:
    return loss if isinstance(loss, type) else type(loss)


def reads_logits(loss: nn.Module | type) -> bool:
    """Whether ``loss`` (a loss or its class) reads classifier logits rather than the embedding."""
    return issubclass(_loss_class(loss), LogitsLoss)


def takes_miner(loss: nn.Module | type) -> bool:
    """Whether ``loss`` (a loss or its class) is an embedding loss that takes a miner's tuples."""
    cls = _loss_class(loss)
    return issubclass(cls, EmbeddingLoss) and cls.takes_miner


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


__all__ = ["EmbeddingLoss", "LogitsLoss", "ProxyLoss", "check_embedding_dim", "check_labels_in_range",
           "check_num_classes", "reads_logits", "takes_miner"]
