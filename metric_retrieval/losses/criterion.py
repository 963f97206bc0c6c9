"""The training criterion: a weighted sum of registered losses, each reading the field it needs.

A term is ``{"name": "triplet", "weight": 1.0, "miner": "semihard" | {"name": ..., **kw} | None, **hparams}``.
Embedding terms (:class:`~metric_retrieval.losses.base.EmbeddingLoss`) read the embedding and use their miner;
logits terms (:class:`~metric_retrieval.losses.base.LogitsLoss`) read the model's classifier logits. CGD, for
instance, is ``[{"name": "ls_ce"}, {"name": "batch_hard_triplet"}]``.

An embedding producer (:mod:`producers`, e.g. DAS) plugs in here: with ``producer`` the embedding terms see
``producer(embeddings, labels)`` — real rows first, then the generated ones — while logits terms see only the
real rows. With ``aux_loss_weight = w`` each embedding term becomes ``L(real) + w · L(real + generated)``
(DAS ``--aux_loss``). In eval mode the producer is not called, so a validation loss never sees generated rows.

Cross-batch memory (:mod:`metric_retrieval.losses.memory`) is a term option: ``memory_size: M`` (and
``memory_warmup: K``) gives that term its own :class:`CrossBatchMemory`; the term then compares the batch (with DAS
rows) against batch ∪ memory, and after every term of the step the real rows are enqueued (training mode only).

Embeddings and logits in float16/bfloat16 (autocast) are cast to float32 before mining and the losses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metric_retrieval.losses._registry import LOSSES, MINERS, accepted_kwargs, build_loss, check_kwargs
from metric_retrieval.losses.base import EmbeddingLoss, LogitsLoss, reads_logits, takes_miner
from metric_retrieval.losses.memory import CrossBatchMemory, loss_with_references


def build_miner_from_spec(spec: str | Mapping[str, Any] | None, loss: nn.Module) -> nn.Module | None:
    """A miner from ``"name"`` or ``{"name": ..., **kw}`` (or None). A miner taking ``margin`` inherits the
    loss's ``margin`` unless given (RDML: the semihard window is the triplet loss margin)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        name, kw = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"miner spec {dict(spec)!r} needs a 'name'")
        kw = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise TypeError(f"miner must be a name, a dict with 'name', or None; got {type(spec).__name__}")
    cls = MINERS.get(name)
    check_kwargs("miner", name, cls, kw)
    names, _ = accepted_kwargs(cls)
    if "margin" in names and "margin" not in kw and isinstance(getattr(loss, "margin", None), float):
        kw["margin"] = loss.margin
    return cls(**kw)


class Criterion(nn.Module):
    """Weighted sum of loss terms with optional miners and an embedding producer.

    Args:
        losses: the loss modules.
        weights: one weight per loss.
        miners: one miner (or None) per loss; only embedding losses may have one.
        names: the key under which each term is reported (unique).
        producer: an optional embedding producer, any ``(emb, labels) -> (emb', labels')`` module with the real
            rows first (:mod:`producers`); its ``last_stats`` are reported by :meth:`stats`.
        aux_loss_weight: with a producer, the embedding part is ``L(real) + w·L(real+generated)``.
        memories: term name → :class:`CrossBatchMemory` for the terms that use one.
    """

    def __init__(
        self,
        losses: Sequence[nn.Module],
        weights: Sequence[float],
        miners: Sequence[nn.Module | None],
        names: Sequence[str],
        producer: nn.Module | None = None,
        aux_loss_weight: float | None = None,
        memories: Mapping[str, CrossBatchMemory] | None = None,
    ) -> None:
        super().__init__()
        if not (len(losses) == len(weights) == len(miners) == len(names)) or not losses:
            raise ValueError("Criterion needs at least one term and equal numbers of losses/weights/miners/names")
        if len(set(names)) != len(names):
            raise ValueError(f"term names must be unique, got {list(names)}")
        if aux_loss_weight is not None and producer is None:
            raise ValueError("aux_loss_weight only applies together with an embedding producer (producer=...)")
        for loss, miner, name in zip(losses, miners, names, strict=True):
            if not isinstance(loss, (EmbeddingLoss, LogitsLoss)):
                raise TypeError(f"loss {name!r} ({type(loss).__name__}) must derive from EmbeddingLoss or LogitsLoss "
                                "(metric_retrieval.losses.base)")
            if miner is not None and not takes_miner(loss):
                raise ValueError(f"loss {name!r} ({type(loss).__name__}) takes no miner (it mines internally, "
                                 "reads logits or uses proxies); drop its 'miner'")
        memories = dict(memories or {})
        for name in memories:
            if name not in names:
                raise ValueError(f"memory for unknown term {name!r}; terms: {list(names)}")
            check_memory_support(losses[list(names).index(name)], name)
        self.memories = nn.ModuleDict(memories)  # empty: no state_dict keys, old checkpoints still load
        self.losses = nn.ModuleList(losses)
        self.miners = nn.ModuleList([m if m is not None else nn.Identity() for m in miners])
        self._has_miner = [m is not None for m in miners]
        self.weights = [float(w) for w in weights]
        self.names = list(names)
        self.producer = producer
        self.aux_loss_weight = None if aux_loss_weight is None else float(aux_loss_weight)

    def _embedding_term(self, i: int, emb: Tensor, labels: Tensor) -> Tensor:
        loss = self.losses[i]
        memory = self.memories[self.names[i]] if self.names[i] in self.memories else None
        if memory is not None and self.training and len(memory):
            return loss_with_references(loss, self.miners[i] if self._has_miner[i] else None, emb, labels,
                                        *memory.get())
        if self._has_miner[i]:
            return loss(emb, labels, self.miners[i](emb, labels))
        return loss(emb, labels)

    def forward(
        self, embeddings: Tensor | None, logits: Tensor | None, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Args: embeddings ``(B, D)``, logits ``(B, M)`` or None, labels ``(B,)`` int64.

        Returns ``(total, {term name: detached unweighted term value})``; ``total = Σ weight · term``.
        """
        labels = labels.long()
        if embeddings is not None and embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()
        if logits is not None and logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        emb_all, labels_all = embeddings, labels
        produce = self.producer is not None and self.training and embeddings is not None
        if produce and not all(reads_logits(loss) for loss in self.losses):
            emb_all, labels_all = self.producer(embeddings, labels)
        total: Tensor | None = None
        values: dict[str, Tensor] = {}
        for i, (loss, weight, name) in enumerate(zip(self.losses, self.weights, self.names, strict=True)):
            if reads_logits(loss):
                if logits is None:
                    raise ValueError(f"loss {name!r} reads classifier logits but the model returned none "
                                     "(give the model a classifier head, e.g. num_classes > 0)")
                value = loss(logits, labels)
            else:
                if embeddings is None:
                    raise ValueError(f"loss {name!r} reads the embedding but none was given")
                value = self._embedding_term(i, emb_all, labels_all)
                if produce and self.aux_loss_weight is not None:
                    value = self._embedding_term(i, embeddings, labels) + self.aux_loss_weight * value
            values[name] = value.detach()
            total = weight * value if total is None else total + weight * value
        assert total is not None  # at least one term (checked in __init__)
        if self.training and embeddings is not None:
            for memory in self.memories.values():  # after the loss: a row never meets its own copy
                memory.enqueue(embeddings, labels)
        return total, values

    def stats(self) -> dict[str, float]:
        """What the producer reports about its last call (``{}`` without one), for the training log."""
        return dict(getattr(self.producer, "last_stats", {})) if self.producer is not None else {}

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimiser param groups for loss-owned parameters: one per loss that has any, with
        ``lr = loss.lr`` if set else ``base_lr * loss.lr_multiplier``, weight decay 0, and a ``name``."""
        groups = []
        for loss, name in zip(self.losses, self.names, strict=True):
            params = [p for p in loss.parameters() if p.requires_grad]
            if not params:
                continue
            lr = float(loss.lr) if loss.lr is not None else float(base_lr) * float(loss.lr_multiplier)
            groups.append({"params": params, "lr": lr, "weight_decay": 0.0, "name": f"loss.{name}"})
        return groups


def check_memory_support(loss: nn.Module, name: str) -> None:
    """``ValueError`` saying why term ``name`` cannot use a cross-batch memory, if it cannot."""
    kind = type(loss).__name__
    if reads_logits(loss):
        raise ValueError(f"loss {name!r} ({kind}) reads classifier logits and takes no cross-batch memory "
                         "(memory_size); give it to a pair or triplet loss")
    if not takes_miner(loss):
        raise ValueError(f"loss {name!r} ({kind}) compares the batch with learned proxies or mines inside the "
                         "batch itself, and takes no cross-batch memory (memory_size)")
    if not loss.reference_path:
        able = [n for n in LOSSES.names() if takes_miner(LOSSES.get(n)) and LOSSES.get(n).reference_path]
        raise ValueError(f"loss {name!r} ({kind}) averages over every row it is given, so a memory would change "
                         "its normalisation; it takes no cross-batch memory (memory_size). Losses that do: "
                         + ", ".join(able))


def build_criterion(
    terms: Sequence[Mapping[str, Any]],
    *,
    num_classes: int | None = None,
    embedding_dim: int | None = None,
    class_counts: Sequence[int] | Tensor | None = None,
    producer: nn.Module | None = None,
    aux_loss_weight: float | None = None,
) -> Criterion:
    """Build a :class:`Criterion` from term dicts (see the module docstring).

    ``producer`` is a built embedding producer (:func:`producers.build_producer`) or None. Term names are the
    loss names, suffixed ``_2``, ``_3`` ... on repeats, or a term's explicit ``"key"``. A term's
    ``memory_size``/``memory_warmup`` give it a :class:`CrossBatchMemory` of ``embedding_dim``-wide rows.
    """
    if isinstance(terms, Mapping) or not terms:
        raise ValueError("terms must be a non-empty list of {'name': ..., 'weight': ..., ...} dicts")
    runtime = {"num_classes": num_classes, "embedding_dim": embedding_dim, "class_counts": class_counts}
    losses, weights, miners, names, memories = [], [], [], [], {}
    for term in terms:
        if not isinstance(term, Mapping) or "name" not in term:
            raise ValueError(f"each criterion term needs a 'name', got {term!r}")
        hparams = dict(term)
        name = hparams.pop("name")
        weight = hparams.pop("weight", 1.0)
        miner_spec = hparams.pop("miner", None)
        key = hparams.pop("key", None) or LOSSES.canonical(name)
        memory_size, memory_warmup = hparams.pop("memory_size", None), hparams.pop("memory_warmup", 0)
        loss = build_loss(name, runtime, **hparams)
        miner = build_miner_from_spec(miner_spec, loss)
        base, k = key, 2
        while key in names:
            key, k = f"{base}_{k}", k + 1
        if memory_size is not None:
            if embedding_dim is None:
                raise ValueError(f"loss {key!r}: memory_size needs embedding_dim")
            check_memory_support(loss, key)
            memories[key] = CrossBatchMemory(memory_size, embedding_dim, warmup_steps=memory_warmup)
        elif memory_warmup:
            raise ValueError(f"loss {key!r}: memory_warmup only applies with memory_size")
        losses.append(loss)
        weights.append(weight)
        miners.append(miner)
        names.append(key)
    return Criterion(losses, weights, miners, names, producer=producer, aux_loss_weight=aux_loss_weight,
                     memories=memories)
