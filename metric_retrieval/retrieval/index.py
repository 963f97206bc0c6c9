"""The library's index: build, extend and search a persistent index from your own embeddings, or from images
embedded by a trained model. It is the store behind ``metric-retrieval index`` (:class:`IndexStore`), with the
items' bookkeeping done for you.

Example (embeddings computed anywhere)::

    import torch
    from metric_retrieval.retrieval import Index

    gallery = torch.nn.functional.normalize(torch.randn(1000, 128), dim=1)   # cosine similarity = inner product
    index = Index.build("my_index", gallery, ids=[f"item{i}" for i in range(1000)])
    hits = Index.open("my_index").search(gallery[:3], k=5)                  # hits[q][r].id, .score, .rank
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import Hit, add_items, build_index, embed_queries, open_index, search
from metric_retrieval.utils.errors import UserError

__all__ = ["Hit", "Index"]


def _matrix(embeddings: Any) -> np.ndarray:
    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if x.ndim != 2:
        raise UserError(f"embeddings must be a (N, D) matrix, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _items(count: int, start: int, ids: Sequence[str] | None, labels: Sequence[Any] | None
           ) -> tuple[list[str], list[str | None]]:
    ids = [str(i) for i in ids] if ids is not None else [str(start + n) for n in range(count)]
    labels = [None if lab is None else str(lab) for lab in labels] if labels is not None else [None] * count
    if len(ids) != count or len(labels) != count:
        raise UserError(f"{count} embeddings but {len(ids)} ids and {len(labels)} labels")
    return ids, labels


class Index:
    """A persistent faiss index of embeddings with their ids (and optional labels), searched by
    :meth:`search` (embeddings) or :meth:`search_images` (image files, embedded by the index's model)."""

    def __init__(self, store: IndexStore, checkpoint: str | None = None, device: str = "cpu") -> None:
        self.store, self._checkpoint, self._device, self._embedder = store, checkpoint, device, None

    @classmethod
    def build(cls, root: str | Path, embeddings: Any, ids: Sequence[str] | None = None,
              labels: Sequence[Any] | None = None, factory: str = "Flat", metric: str = "ip", seed: int = 0
              ) -> Index:
        """A new index at ``root`` of (N, D) ``embeddings``; ``ids`` default to ``"0" ... "N-1"``. ``metric``:
        ``ip`` (inner product: cosine similarity for L2-normalised rows, larger is better) or ``l2`` (squared
        distance, smaller is better). ``factory`` is a faiss index_factory string; trained types (IVF, PQ) are
        trained on the embeddings themselves."""
        root, x = Path(root), _matrix(embeddings)
        if (root / "meta.json").exists():
            raise UserError(f"{root} already holds an index; open it with Index.open and add to it")
        store = IndexStore.create(root, x.shape[1], factory, metric, lambda: x, seed)
        index = cls(store)
        index.add(x, ids, labels)
        return index

    @classmethod
    def from_images(cls, checkpoint: str | Path, images: str | Path, root: str | Path, factory: str = "Flat",
                    batch_size: int = 64, workers: int = 0, device: str = "cpu", seed: int = 0) -> Index:
        """Embed ``images`` (a folder tree, or a .txt/.csv list) with the model ``checkpoint`` (a run's
        ``model_best.pth`` or an exported model) and index them at ``root``, as ``metric-retrieval index build``."""
        from metric_retrieval.training.distributed import DistInfo

        opts = {"factory": factory, "shard_size": 4096, "batch_size": batch_size,
                "workers": workers, "train_size": 100_000, "seed": seed, "progress": False}
        build_index(str(checkpoint), str(images), root, opts, DistInfo(), device)
        return cls.open(root, device=device)

    @classmethod
    def open(cls, root: str | Path, checkpoint: str | None = None, device: str = "cpu") -> Index:
        """An existing index; ``checkpoint`` overrides the model it names (used by :meth:`search_images`)."""
        return cls(IndexStore.open(root), checkpoint, device)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def metric(self) -> str:
        return self.store.meta["metric"]

    def add(self, embeddings: Any, ids: Sequence[str] | None = None, labels: Sequence[Any] | None = None) -> None:
        """Append (N, D) ``embeddings`` (ids default to their positions) and save the index."""
        x = _matrix(embeddings)
        ids, labels = _items(len(x), len(self), ids, labels)
        self.store.add(x, ids, labels, ids)
        self.store.save()

    def add_images(self, images: str | Path, batch_size: int = 64, workers: int = 0) -> int:
        """Embed ``images`` with the index's model and append them (``metric-retrieval index add``); returns the
        number added."""
        from metric_retrieval.training.distributed import DistInfo

        opts = {"shard_size": 4096, "batch_size": batch_size, "workers": workers, "progress": False}
        added = add_items(self.store.root, str(images), opts, DistInfo(), self._checkpoint, self._device)["added"]
        self.store = IndexStore.open(self.store.root)
        return added

    def search(self, queries: Any, k: int = 10) -> list[list[Hit]]:
        """The ``k`` best hits of each row of (Q, D) ``queries``, best first."""
        return search(self.store, _matrix(queries), k)

    def search_images(self, paths: Sequence[str | Path], k: int = 10, batch_size: int = 64) -> list[list[Hit]]:
        """Embed the image files ``paths`` with the index's model (checked against the index) and search."""
        if self._embedder is None:
            _, self._embedder = open_index(self.store.root, self._checkpoint, self._device)
        embeddings, _ = embed_queries(self._embedder, [str(p) for p in paths], batch_size, 0)  # unreadable: raises
        return self.search(embeddings, k)
