"""Catalogue → persistent index, and index → answers: what ``index.py``, ``test.py --index`` and ``serve.py`` run.

An index directory holds the faiss index (:class:`metric_retrieval.retrieval.index_store.IndexStore`), the embedding
shards of every batch of items (``shards/batch-000`` from ``build``, one more per ``add``; they are the exact reference
``eval`` compares an approximate index against, and what a killed build resumes from) and ``bad_files.tsv``,
the images that could not be read.

``build`` and ``add`` hold the directory's lock (``.lock``, :class:`metric_retrieval.training.run_lock.RunLock`)
from start to commit: a second writer is refused with one line naming the holder, and the holder removes the
temporary files a killed writer left. ``add`` is idempotent: an image whose path and content (SHA-256 of its
bytes) the index already holds is skipped and counted, so rerunning an add, killed or not, adds nothing twice.
An image whose path the index holds but whose content changed is skipped and counted as ``changed``, with a
warning (its old vector stays), unless ``update`` is asked: then its new vector is added and every older item
of that path is dropped (:func:`add_items`).

The shards of all batches, in order, are the log of every vector the index was given: row ``r`` is the r-th
vector of that log. Item ``i`` of the index is the i-th row not listed in the manifest's ``superseded`` (the
rows an update replaced), which is how ``eval``'s exact reference and an update's refill find the vectors.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from metric_retrieval.evaluation.knn import knn
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.retrieval.catalogue import (
    Catalogue,
    bad_items,
    embed_catalogue,
    embed_paths,
    file_hashes,
    iter_shards,
    read_catalogue,
)
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.training.distributed import DistInfo
from metric_retrieval.training.run_lock import RunLock, remove_stale_temporaries
from metric_retrieval.utils.errors import UserError

__all__ = ["Hit", "add_items", "build_index", "check_compatible", "check_recipe", "classify", "evaluate_index",
           "labelled_neighbours", "open_index", "search", "write_results"]

logger = logging.getLogger(__name__)
BAD_REPORT = "bad_files.tsv"


def _batch_dir(root: Path, batch: int) -> Path:
    return root / "shards" / f"batch-{batch:03d}"


@contextlib.contextmanager
def _writer_lock(root: Path, info: DistInfo) -> Iterator[None]:
    """Rank 0 holds the index directory's lock (and clears a killed writer's temporary files) inside."""
    if not info.is_main:
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UserError(f"cannot create the index directory {root}: permission denied") from None
    with RunLock(root, "index", "another index.py build or add"):
        for folder in [root, *sorted((root / "shards").glob("batch-*"))]:
            remove_stale_temporaries(folder)
        yield


def _embed_batch(embedder: Embedder, catalogue: Catalogue, shard_dir: Path, opts: dict[str, Any],
                 info: DistInfo) -> None:
    """Every rank embeds its shards; all wait until the batch is complete."""
    embed_catalogue(embedder, catalogue, shard_dir, opts["shard_size"], opts["batch_size"], opts["workers"],
                    info.rank, info.world_size, progress=opts.get("progress", True))
    if info.enabled:
        dist.barrier()


def _train_sample(shard_dir: Path, count: int, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``size`` of the batch's ``count`` embedded vectors, read shard by shard."""
    pick = np.sort(np.random.default_rng(seed).choice(count, min(size, count), replace=False))
    rows, offset = [], 0
    for emb, _, _ in iter_shards(shard_dir):
        local = pick[(pick >= offset) & (pick < offset + len(emb))] - offset
        rows.append(emb[torch.from_numpy(local)].numpy())
        offset += len(emb)
    return np.concatenate(rows) if rows else np.empty((0, 0), np.float32)


def _add_shards(store: IndexStore, catalogue: Catalogue, shard_dir: Path) -> int:
    added = 0
    for emb, idx, hashes in iter_shards(shard_dir):
        i = idx.tolist()
        store.add(emb.numpy(), [catalogue.paths[j] for j in i], [catalogue.labels[j] for j in i],
                  [catalogue.ids[j] for j in i], hashes)
        added += len(i)
    return added


def _write_bad_report(root: Path, batches: int) -> int:
    """``bad_files.tsv`` (batch, path, error) over every batch; returns the number of skipped images."""
    rows = [(b, path, err) for b in range(batches) for _, path, err in bad_items(_batch_dir(root, b))]
    with (root / BAD_REPORT).open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["batch", "path", "error"])
        writer.writerows(rows)
    return len(rows)


def build_index(checkpoint: str, images: str, out: str | Path, opts: dict[str, Any], info: DistInfo,
                device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Embed ``images`` with ``checkpoint`` into ``out`` and build the ``opts["factory"]`` index.

    ``opts``: factory, shard_size, batch_size, workers, train_size, seed (and progress). The index compares
    vectors by the model's recipe metric and stores the recipe. Rerunning a killed build resumes it. Returns
    ``describe()`` of the index on rank 0, None on the other ranks.
    """
    root = Path(out)
    with _writer_lock(root, info):
        return _build(checkpoint, images, root, opts, info, device)


def _build(checkpoint: str, images: str, root: Path, opts: dict[str, Any], info: DistInfo,
           device: str | torch.device) -> dict[str, Any] | None:
    if (root / "meta.json").is_file():
        raise UserError(f"--out {root} already holds an index; add images with `index.py add {root} --images ...` "
                        "or choose another --out")
    embedder = Embedder(checkpoint, device)
    catalogue = read_catalogue(images)
    shard_dir = _batch_dir(root, 0)
    _embed_batch(embedder, catalogue, shard_dir, opts, info)
    if not info.is_main:
        return None
    count = sum(len(idx) for _, idx, _ in iter_shards(shard_dir))
    if not count:
        _write_bad_report(root, 1)
        raise UserError(f"--images {images}: none of the {len(catalogue)} images could be read (they are listed "
                        f"in {root / BAD_REPORT})")
    def sample() -> np.ndarray:
        return _train_sample(shard_dir, count, opts["train_size"], opts["seed"])

    store = IndexStore.create(root, embedder.dim, opts["factory"], embedder.recipe.metric, sample, opts["seed"],
                              use_gpu=torch.device(device).type == "cuda", k_factor=opts.get("k_factor"),
                              model={"checkpoint": str(checkpoint), "fingerprint": embedder.fingerprint},
                              recipe=embedder.recipe.to_dict(), runtime=embedder.runtime,
                              batches=[{"images": str(images), "count": len(catalogue)}])
    _add_shards(store, catalogue, shard_dir)
    store.meta["bad_files"] = _write_bad_report(root, 1)
    store.save()
    return store.describe()


def open_index(index_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu",
               flag: str = "--checkpoint", search_on_gpu: bool = True) -> tuple[IndexStore, Embedder]:
    """The index and the model to embed its queries: ``checkpoint`` if given (refused unless it is the model
    that built the index), else the checkpoint the index names. With a CUDA ``device`` the index is searched on
    the GPUs unless ``search_on_gpu`` is False."""
    store = IndexStore.open(index_dir, use_gpu=search_on_gpu and torch.device(device).type == "cuda")
    path = checkpoint or store.meta["model"]["checkpoint"]
    if not Path(path).is_file():
        raise UserError(f"index {index_dir} was built with {path}, which no longer exists; pass {flag} with "
                        "that model (its weights are checked)")
    embedder = Embedder(path, device)
    check_compatible(store, embedder, path)
    return store, embedder


def check_compatible(store: IndexStore, embedder: Embedder, path: str | Path) -> None:
    """Refuse a model (at ``path``) other than the one that built ``store``, or one that embeds images
    differently from when it did (:func:`check_recipe`)."""
    store.check_model(embedder.fingerprint, str(path))
    check_recipe(store, embedder)


def check_recipe(store: IndexStore, embedder: Embedder) -> None:
    """Refuse to embed queries for ``store`` other than as its items were: the index's recipe (and runtime
    settings) must be the model's, and its metric the recipe's. An index written before recipes existed is
    refused (its vectors were always L2-normalised, whatever the model): rebuild it."""
    if "recipe" not in store.meta:
        raise UserError(f"index {store.root} predates inference recipes (its vectors were normalised whatever the "
                        "model): rebuild it with `metric-retrieval index build`")
    recipe = InferenceRecipe.from_dict(store.meta["recipe"], store.root / "meta.json")
    for what, built, now in (("recipe", recipe, embedder.recipe), ("runtime", store.meta.get("runtime"),
                                                                    json.loads(json.dumps(embedder.runtime)))):
        if built != now:
            raise UserError(f"the model {embedder.checkpoint} embeds images differently from when it built index "
                            f"{store.root} ({what} then {built}, now {now}): its embeddings would not be "
                            "comparable; rebuild the index")
    if store.meta["metric"] != recipe.metric:
        raise UserError(f"index {store.root} compares by {store.meta['metric']!r} but its recipe by "
                        f"{recipe.metric!r}: rebuild the index")


def add_items(index_dir: str | Path, images: str, opts: dict[str, Any], info: DistInfo,
              checkpoint: str | None = None, device: str | torch.device = "cpu",
              update: bool = False) -> dict[str, Any] | None:
    """Embed the images of ``images`` the index does not hold yet as a new batch and append them (no
    retraining); resumable like a build, idempotent (see the module docstring). ``update``: also re-embed the
    images whose content changed and drop their older items (the index is refilled from the shards, with its
    training kept); without it they are skipped and counted as ``changed``.

    The items are appended to the CPU index, as in a build: faiss's sharded GPU copy of a ``Flat`` index takes
    only one ``add``."""
    with _writer_lock(Path(index_dir), info):
        store, embedder = open_index(index_dir, checkpoint, device, search_on_gpu=False)
        catalogue, present, changed = _new_items(store, read_catalogue(images), update)
        counts = {"already_present": present, "updated" if update else "changed": len(changed)}
        if not len(catalogue):
            return {**store.describe(), "added": 0, **counts} if info.is_main else None
        batch = len(store.meta["batches"])
        shard_dir = _batch_dir(store.root, batch)
        _embed_batch(embedder, catalogue, shard_dir, opts, info)
        if not info.is_main:
            return None
        before = len(store)
        added = _add_shards(store, catalogue, shard_dir)
        store.meta["batches"].append({"images": str(images), "count": len(catalogue), **counts})
        if update:  # a changed image that can no longer be read keeps its old vector (and is in bad_files.tsv)
            counts["updated"] = _drop_older(store, set(changed) & set(store.items["paths"][before:]), before)
            store.meta["batches"][-1].update(counts)
        store.meta["bad_files"] = _write_bad_report(store.root, batch + 1)
        store.save()
        return {**store.describe(), "added": added, **counts}


def _new_items(store: IndexStore, catalogue: Catalogue, update: bool) -> tuple[Catalogue, int, list[str]]:
    """The catalogue without the items the index holds already (same path, same file content) and, unless
    ``update``, without those whose path it holds with another content; the count of the first kind and the
    paths of the second. Only files whose path is in the index are hashed here."""
    held: dict[str, set[str]] = {}
    for path, digest in zip(store.items["paths"], store.items["sha256"]):
        held.setdefault(path, set()).add(digest)
    known = [n for n, p in enumerate(catalogue.paths) if p in held]
    hashes = dict(zip(known, file_hashes([catalogue.paths[n] for n in known])))
    present = {n for n in hashes if hashes[n] in held[catalogue.paths[n]]}
    changed = [n for n in hashes if n not in present]
    if changed and not update:
        logger.warning("%d image(s) changed since they were indexed and were not added (their old vectors stay; "
                       "add --update replaces them): %s", len(changed),
                       ", ".join(catalogue.paths[n] for n in changed[:5]))
    skip = present if update else present | set(changed)
    keep = [n for n in range(len(catalogue)) if n not in skip]
    subset = Catalogue([catalogue.paths[n] for n in keep], [catalogue.labels[n] for n in keep],
                       [catalogue.ids[n] for n in keep])
    return subset, len(present), [catalogue.paths[n] for n in changed]


def _log_rows(store: IndexStore) -> Iterator[tuple[int, torch.Tensor]]:
    """``(row of its first vector, embeddings (n, D))`` of every shard of every batch, in order (the log)."""
    row = 0
    for b in range(len(store.meta["batches"])):
        for emb, _, _ in iter_shards(_batch_dir(store.root, b)):
            yield row, emb
            row += len(emb)


def _current(emb: torch.Tensor, row: int, superseded: set[int]) -> torch.Tensor:
    """The rows of a shard starting at log row ``row`` that are items of the index (not superseded)."""
    if not superseded:
        return emb
    return emb[torch.tensor([row + n not in superseded for n in range(len(emb))], dtype=torch.bool)]


def _drop_older(store: IndexStore, paths: set[str], before: int) -> int:
    """Drop the items among the first ``before`` whose path is in ``paths`` (their new vectors were just
    appended), refilling the index from the log without their rows; returns how many were dropped."""
    drop = {n for n in range(before) if store.items["paths"][n] in paths}
    if not drop:
        return 0
    superseded = set(store.meta.get("superseded", []))
    rows = [r for r in range(len(store) + len(superseded)) if r not in superseded]  # item n is log row rows[n]
    superseded |= {rows[n] for n in drop}
    store.keep_items([n for n in range(len(store)) if n not in drop],
                     (_current(emb, row, superseded).numpy() for row, emb in _log_rows(store)))
    store.meta["superseded"] = sorted(superseded)
    return len(drop)


@dataclass(frozen=True)
class Hit:
    """One ranked result; ``item`` is its position in the index (the faiss id)."""

    rank: int
    path: str
    id: str
    label: str | None
    score: float
    item: int


def search(store: IndexStore, embeddings: torch.Tensor | np.ndarray, k: int) -> list[list[Hit]]:
    """Top-``k`` hits of each (D,) row of ``embeddings`` (faiss's -1 padding, when an IVF probe finds fewer
    than k items, is dropped)."""
    scores, ids = store.search(np.asarray(embeddings, dtype=np.float32), k)
    items = store.items
    return [[Hit(r + 1, items["paths"][j], items["ids"][j], items["labels"][j], float(s), j)
             for r, (s, j) in enumerate((s, j) for s, j in zip(srow, irow) if j >= 0)]
            for srow, irow in zip(scores.tolist(), ids.tolist())]


def labelled_neighbours(store: IndexStore, embeddings: torch.Tensor | np.ndarray, k: int) -> list[list[Hit]]:
    """The ``k`` nearest *labelled* hits of each (D,) row of ``embeddings``, unlabelled items skipped.

    The search starts ``k`` deep and doubles its depth for the queries still short of ``k`` labelled hits, until
    it reaches the whole index or the index returns fewer hits than asked (an IVF probe that has run out of
    lists); such a query gets the labelled hits there are. Ranks stay those of the full ranking.
    """
    x = np.asarray(embeddings, dtype=np.float32).reshape(len(embeddings), -1)
    labelled = sum(lab is not None for lab in store.items["labels"])
    out: list[list[Hit]] = [[] for _ in range(len(x))]
    todo, depth = list(range(len(x))), k
    while todo and labelled:
        depth = min(depth, len(store))
        found = search(store, x[todo], depth)
        for n, hits in zip(todo, found):
            out[n] = [h for h in hits if h.label is not None][:k]
        todo = [n for n, hits in zip(todo, found) if len(out[n]) < min(k, labelled) and len(hits) == depth < len(store)]
        depth *= 2
    return out


def classify(hits: Sequence[Hit], metric: str = "ip") -> tuple[str | None, dict[str, int]]:
    """kNN vote: the label most frequent among the labelled hits; a tie goes to the label with the best summed
    score. Returns (label or None when no hit is labelled, votes per label)."""
    votes = Counter(h.label for h in hits if h.label is not None)
    if not votes:
        return None, {}
    sign = 1.0 if metric == "ip" else -1.0
    strength = Counter()
    for h in hits:
        if h.label is not None:
            strength[h.label] += sign * h.score
    best = max(votes, key=lambda lab: (votes[lab], strength[lab]))
    return best, dict(votes)


def embed_queries(embedder: Embedder, paths: Sequence[str], batch_size: int = 64, workers: int = 0,
                  flag: str = "query") -> tuple[torch.Tensor, list[int]]:
    """Embeddings of the readable query files and their positions; an unreadable query → :class:`UserError`."""
    emb, good, bad = embed_paths(embedder, paths, batch_size, workers)
    if bad:
        listed = "; ".join(f"{paths[i]} ({err})" for i, err in bad[:5])
        raise UserError(f"{len(bad)} {flag} image(s) cannot be read: {listed}")
    return emb, good


def write_results(queries: Sequence[str], hits: Sequence[Sequence[Hit]], out: str | Path,
                  predictions: Sequence[tuple[str | None, dict[str, int]]] | None = None) -> Path:
    """Results as ``.json`` (one object per query) or ``.csv`` (one row per hit: query, rank, path, id, label,
    score[, predicted])."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        rows = []
        for n, (q, h) in enumerate(zip(queries, hits)):
            row = {"query": q, "results": [asdict(x) for x in h]}
            if predictions is not None:
                row["predicted"], row["votes"] = predictions[n]
            rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
    elif out.suffix.lower() == ".csv":
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["query", "rank", "path", "id", "label", "score"]
                            + (["predicted"] if predictions is not None else []))
            for n, (q, h) in enumerate(zip(queries, hits)):
                extra = [predictions[n][0]] if predictions is not None else []
                writer.writerows([q, x.rank, x.path, x.id, x.label, f"{x.score:.6f}", *extra] for x in h)
    else:
        raise UserError(f"--results {out}: expected a .json or .csv file name")
    return out


def exact_search(store: IndexStore, queries: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, k) faiss ids of the true nearest neighbours: exact search over the stored shards, one at a time."""
    metric, best_key, best_id, offset = store.meta["metric"], None, None, 0
    superseded = set(store.meta.get("superseded", []))
    for row, emb in _log_rows(store):
        emb = _current(emb, row, superseded)
        if len(emb):
            kk = min(k, len(emb))
            scores, idx = knn(queries, emb, kk, metric=metric, backend="torch")
            key = scores if metric == "ip" else -scores
            key, ids = (key, idx + offset) if best_key is None else (
                torch.cat([best_key, key], 1), torch.cat([best_id, idx + offset], 1))
            order = torch.sort(-key, dim=1, stable=True).indices[:, :k]  # ties: the earlier (lower) id
            best_key, best_id = torch.gather(key, 1, order), torch.gather(ids, 1, order)
        offset += len(emb)
    if offset != len(store):
        raise UserError(f"index {store.root}: its shards hold {offset} vectors but the index {len(store)}; "
                        "the exact reference needs the shards the index was built from")
    return best_id


def evaluate_index(store: IndexStore, queries: torch.Tensor, query_labels: Sequence[str | None], k: int = 10,
                   ks: Sequence[int] = (1, 2, 4, 8)) -> dict[str, float]:
    """The approximate index against exact search on the same queries.

    ``recall@k``: the mean fraction of the k true nearest neighbours the index returns among its top k.
    ``label_recall@K`` (approximate) and ``exact_label_recall@K``: the fraction of labelled queries with an item
    of their label among the top K (Recall@K of the metric-learning papers), when labels exist.
    """
    k = min(k, len(store))
    approx = store.search(queries.numpy(), max([k, *ks]))[1]
    exact = exact_search(store, queries, max([k, *ks])).numpy()
    out = {f"recall@{k}": float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)])),
           "queries": len(queries)}
    labels = store.items["labels"]
    labelled = [n for n, lab in enumerate(query_labels) if lab is not None]
    if labelled and any(lab is not None for lab in labels):
        for name, ranked in (("label_recall", approx), ("exact_label_recall", exact)):
            for kk in ks:
                hits = [any(j >= 0 and labels[j] == query_labels[n] for j in ranked[n][:kk]) for n in labelled]
                out[f"{name}@{kk}"] = float(np.mean(hits))
    return out
