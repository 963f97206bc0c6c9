"""Feature database: the embeddings of an evaluated split saved for later queries (CGD/CLF ``test.py``).

File format (shared contract; one ``torch.save`` dict)::

    {"version": 1,
     "metric": "ip" | "l2",   (the recipe's metric, kept for readers of the older files)
     "recipe": dict,          (the model's InferenceRecipe.to_dict(): preprocessing, metric, normalisation)
     "query":   {"embeddings": (N, D) float32, "labels": (N,) int64, "paths": list[str],
                 ["classes": list[str], the name of each label]},
     "gallery": same as "query", or None (None = leave-one-out: the query set is its own gallery),
     "checkpoint": str path or None,
     "config": dict,
     "model": {"config": dict, "sha256": str}}  (optional: the checkpoint's model config and weights digest)

written by :func:`metric_retrieval.utils.io.atomic_save` (the SHA-256 of the file's bytes in its zip comment,
checked by load_database).

Searching ranks by the recipe's metric on the embeddings as the model gave them (nothing is normalised here, so
a database ranks exactly as the run's evaluation did). A query that is stored in the database uses its stored
feature and excludes its own gallery index (leave-one-out databases); an external image excludes nothing.
Distances reported to the user are Euclidean distances between the embeddings (for normalised ones
``sqrt(2 − 2 cos)``), ascending.

A database written before recipes existed (no ``"recipe"``) is read with the recipe derived from its saved
run config and model config (:func:`metric_retrieval.models.recipe.read_recipe`, on the model rebuilt without
weights); one without a model config is refused.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metric_retrieval.evaluation.knn import _as_tensor, iter_knn
from metric_retrieval.models.recipe import InferenceRecipe, read_recipe
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import CorruptFileError, atomic_save, load_verified, torch_file_problem

__all__ = ["DATABASE_VERSION", "QueryResult", "find_path", "load_database", "make_split", "query_database",
           "save_database", "search_database"]

DATABASE_VERSION = 1
_TOP_KEYS = ("version", "metric", "query", "gallery", "checkpoint", "config")
_SPLIT_KEYS = ("embeddings", "labels", "paths")


def make_split(embeddings: Any, labels: Any, paths: Sequence[str], classes: Sequence[str] | None = None
               ) -> dict[str, Any]:
    """A validated ``{"embeddings" (N, D) float32, "labels" (N,) int64, "paths" list[str]}`` split, with
    ``"classes"`` (``classes[label]`` names a label, e.g. its folder name) when given."""
    e = _as_tensor(embeddings, "embeddings").cpu().contiguous()
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    lab = lab.detach().cpu().long().reshape(-1)
    paths = [os.fspath(p) for p in paths]
    if not (e.shape[0] == lab.shape[0] == len(paths)):
        raise ValueError(f"split sizes disagree: {e.shape[0]} embeddings, {lab.shape[0]} labels, "
                         f"{len(paths)} paths")
    split = {"embeddings": e, "labels": lab, "paths": paths}
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(lab) and int(lab.max()) >= len(classes):
            raise ValueError(f"{len(classes)} class names for labels up to {int(lab.max())}")
        split["classes"] = classes
    return split


def _as_split(split: Any) -> dict[str, Any] | None:
    if split is None:
        return None
    if isinstance(split, Mapping):
        return make_split(split["embeddings"], split["labels"], split["paths"], split.get("classes"))
    return make_split(*split)


def save_database(path: str | os.PathLike, query: Any, gallery: Any = None, *, recipe: InferenceRecipe,
                  checkpoint: str | None = None, config: Mapping[str, Any] | None = None,
                  model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a feature database atomically; returns the saved dict (``"recipe"`` as an :class:`InferenceRecipe`,
    as :func:`load_database` returns it).

    Args:
        query: a mapping with ``embeddings``, ``labels``, ``paths`` (or a 3-tuple of them).
        gallery: the same for the gallery; ``None`` for a leave-one-out database.
        recipe: the inference recipe of the model that computed the embeddings.
        checkpoint: the checkpoint the embeddings came from.
        config: the resolved run config.
        model: optional ``{"config": model config, "sha256": weights digest}`` of that checkpoint's model, so
            that a query embedded with another checkpoint is refused (stored under the optional key ``model``).
    """
    q = _as_split(query)
    g = _as_split(gallery)
    for name, split in (("query", q), ("gallery", g)):
        if split is not None and split["embeddings"].shape[1] != recipe.embedding_dim:
            raise ValueError(f"{name} dim {split['embeddings'].shape[1]} != the recipe's {recipe.embedding_dim}")
    db = {"version": DATABASE_VERSION, "metric": recipe.metric, "recipe": recipe.to_dict(), "query": q,
          "gallery": g, "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
          "config": dict(config or {})}
    if model is not None:
        db["model"] = dict(model)
    atomic_save(db, path)
    return {**db, "recipe": recipe}


def _bad(path: Any, why: str) -> UserError:
    return UserError(f"feature database {os.fspath(path)!r} {why}; expected a file written by "
                     f"save_database (keys {', '.join(_TOP_KEYS)}) — re-run the evaluation to create it")


def load_database(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a feature database; a missing or corrupt file or wrong keys → :class:`UserError`."""
    if not os.path.isfile(path):
        raise _bad(path, "does not exist")
    problem = torch_file_problem(path)
    if problem:
        raise _bad(path, problem)
    try:
        db = load_verified(path, "feature database")
    except CorruptFileError as exc:
        raise _bad(path, f"is not readable or corrupt ({exc})") from None
    if not isinstance(db, dict):
        raise _bad(path, f"holds a {type(db).__name__}, not a dict")
    missing = [k for k in _TOP_KEYS if k not in db]
    if missing:
        raise _bad(path, f"lacks the keys {missing}")
    if db["version"] != DATABASE_VERSION:
        raise _bad(path, f"has version {db['version']!r} (this code reads version {DATABASE_VERSION})")
    for name in ("query", "gallery"):
        split = db[name]
        if split is None and name == "gallery":
            continue
        if not isinstance(split, dict) or any(k not in split for k in _SPLIT_KEYS):
            raise _bad(path, f"has a malformed {name!r} split (needs keys {', '.join(_SPLIT_KEYS)})")
        try:
            db[name] = make_split(split["embeddings"], split["labels"], split["paths"], split.get("classes"))
        except (ValueError, TypeError) as exc:
            raise _bad(path, f"has an inconsistent {name!r} split ({exc})") from exc
    db["recipe"] = _recipe(db, path)
    for name in ("query", "gallery"):
        if db[name] is not None and db[name]["embeddings"].shape[1] != db["recipe"].embedding_dim:
            raise _bad(path, f"holds {db[name]['embeddings'].shape[1]}-d {name} embeddings but its recipe says "
                             f"{db['recipe'].embedding_dim}-d")
    return db


def _recipe(db: dict[str, Any], path: str | os.PathLike) -> InferenceRecipe:
    """The database's recipe: stored, or derived (older files) from the model its model config rebuilds."""
    if "recipe" in db:
        return InferenceRecipe.from_dict(db["recipe"], path)
    mc = (db.get("model") or {}).get("config") if isinstance(db.get("model"), Mapping) else None
    if not isinstance(mc, Mapping):
        raise _bad(path, "predates inference recipes and names no model config to derive one from")
    from metric_retrieval import models  # local: building a model pulls in the backbones

    try:
        model = models.build_model(mc["backbone"], mc["head"], mc["feature_dim"], mc["num_classes"], **mc["options"])
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"predates inference recipes and its model config cannot be rebuilt ({err})") from None
    return read_recipe(db, path, model)


def _to_cpu_tensor(x: Any) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _gallery(db: Mapping[str, Any]) -> dict[str, Any]:
    return db["gallery"] if db["gallery"] is not None else db["query"]


def search_database(db: Mapping[str, Any], query_embedding: Any, k: int,
                    exclude_index: int | Sequence[int] | None = None, backend: str = "auto",
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest gallery items of one (D,) or several (Q, D) query embeddings.

    Args:
        db: a loaded database.
        query_embedding: (D,) or (Q, D).
        k: results per query (clamped to the number of gallery items that can be returned).
        exclude_index: gallery index to leave out (one int, or one per query; −1 = none). Use the query's own
            index for a query stored in a leave-one-out database; None for an external image.

    Returns:
        (distances, indices): gallery indices ranked by the recipe's metric and the Euclidean distances between
        the embeddings (ascending: ``sqrt(2 − 2·score)`` for ``ip`` on normalised ones); shapes (k,) for a (D,)
        query, else (Q, k).
    """
    qt = _to_cpu_tensor(query_embedding)
    single = qt.dim() == 1
    q = _as_tensor(qt.reshape(1, -1) if single else qt, "query_embedding")
    g = _gallery(db)["embeddings"].float()
    metric = db["recipe"].metric
    self_index = None
    if exclude_index is not None:
        ex = torch.as_tensor(exclude_index, dtype=torch.long).reshape(-1)
        if ex.numel() == 1:
            ex = ex.expand(q.shape[0]).clone()
        if ex.numel() != q.shape[0]:
            raise ValueError(f"exclude_index has {ex.numel()} entries for {q.shape[0]} queries")
        self_index = ex
    k = max(1, min(int(k), g.shape[0] - (1 if self_index is not None else 0)))
    dist = torch.empty((q.shape[0], k))
    idx = torch.empty((q.shape[0], k), dtype=torch.long)
    for rows, key, ix in iter_knn(q, g, k, metric, self_index, backend):
        dist[rows] = (2 - 2 * key if metric == "ip" else key.neg()).clamp(min=0).sqrt()
        idx[rows] = ix
    return (dist[0], idx[0]) if single else (dist, idx)


def find_path(db: Mapping[str, Any], path: str | os.PathLike) -> tuple[str, int] | None:
    """``(split, index)`` of a stored image path (exact match, then by normalised path, then by file name
    if unique), or None."""
    target = os.fspath(path)
    for how in ("exact", "norm", "name"):
        hits = []
        for split in ("query", "gallery"):
            if db.get(split) is None:
                continue
            for i, p in enumerate(db[split]["paths"]):
                if (how == "exact" and p == target) or \
                        (how == "norm" and os.path.normpath(os.path.abspath(p)) ==
                         os.path.normpath(os.path.abspath(target))) or \
                        (how == "name" and os.path.basename(p) == os.path.basename(target)):
                    hits.append((split, i))
        if len(hits) == 1 or (hits and how != "name"):
            return hits[0]
    return None


@dataclass(frozen=True)
class QueryResult:
    """Results of :func:`query_database` (ranked, best first)."""

    query_path: str
    query_label: int | None
    paths: list[str]
    labels: list[int]
    distances: list[float]
    indices: list[int]
    correct: list[bool | None]
    query_class: str | None = None  # class names, where the database stores them
    classes: list[str] | None = None


def query_database(db: Mapping[str, Any], query: str | os.PathLike | Any, k: int = 8,
                   query_label: int | None = None, backend: str = "auto") -> QueryResult:
    """Retrieve for a stored image path (its stored feature; its own index excluded in a leave-one-out
    database) or for an external (D,) embedding (nothing excluded; ``query_label`` optional)."""
    gal = _gallery(db)
    if isinstance(query, (str, os.PathLike)):
        found = find_path(db, query)
        if found is None:
            raise UserError(f"{os.fspath(query)!r} is not in the feature database; pass one of its stored "
                            f"paths (e.g. {db['query']['paths'][0]!r}) or an external image")
        split, i = found
        emb = db[split]["embeddings"][i]
        query_label = int(db[split]["labels"][i])
        query_class = _class_name(db[split], query_label)
        own = i if (db["gallery"] is None or split == "gallery") else None
        qpath = db[split]["paths"][i]
    else:
        emb, own, qpath = _to_cpu_tensor(query).reshape(-1).float(), None, ""
        query_class = None if query_label is None else _class_name(db["query"], query_label)
    dist, idx = search_database(db, emb, k, exclude_index=own, backend=backend)
    labels = [int(gal["labels"][j]) for j in idx.tolist()]
    correct = [None if query_label is None else lab == int(query_label) for lab in labels]
    return QueryResult(os.fspath(qpath), query_label, [gal["paths"][j] for j in idx.tolist()], labels,
                       dist.tolist(), idx.tolist(), correct, query_class,
                       [gal["classes"][lab] for lab in labels] if "classes" in gal else None)


def _class_name(split: Mapping[str, Any], label: int) -> str | None:
    return split["classes"][label] if "classes" in split else None
