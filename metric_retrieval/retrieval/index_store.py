"""A persistent faiss index of a catalogue's embeddings, stored with everything needed to search it safely.

Index types are faiss ``index_factory`` strings (https://github.com/facebookresearch/faiss/wiki/The-index-factory):
``Flat`` (exact, the reference every other type is measured against), ``IVF4096,Flat``, ``IVF4096,PQ64``,
``HNSW32``, ... Types that need training (IVF, PQ) are trained on a sample of the catalogue drawn with a fixed
seed; IVF's k-means uses the same seed.

**Refine stages** (``IVF1024,PQ64x4fs,RFlat``, ``...,Refine(SQ8)``, ``...,Refine(PQ128)``): the first stage
proposes ``k_factor × k`` candidates and the refine stage re-ranks them with its more precise codes (``RFlat``:
the full vectors; ``SQ8``: one byte a dimension; ``PQ128``: 128 bytes a vector). ``k_factor`` is stored with the
index (``meta.json``; :data:`DEFAULT_K_FACTOR` unless ``--k_factor`` is given at build time) and applied on
every open; ``--k_factor`` at search time overrides it for that run. faiss's own default, 1, re-ranks only the k
candidates the coarse stage already chose and gains nothing from the refine stage. ``…,RFlatDisk`` (ours, not
faiss's) re-ranks with the full vectors read from a file in the index folder instead of RAM
(:mod:`metric_retrieval.retrieval.disk_vectors`).

**Scores** are inner products of L2-normalised embeddings (cosine similarity; ``metric="ip"``), larger is better,
or squared Euclidean distances (``metric="l2"``), smaller is better, as faiss returns them.

**On disk** (``INDEX_DIR``)::

    meta.json            the manifest of the current version: format version, factory string, metric, dim, count,
                         faiss version, the model (checkpoint path and weight fingerprint), its inference
                         recipe and runtime settings (an index built by a model; see docs/recipe.md), the
                         generation of the two files below and their SHA-256 ("files"), and the SHA-256 of all
                         that ("sha256")
    meta-prev.json       the manifest of the previous version, whose two data files are kept too
    index-<gen>.faiss    faiss.write_index
    items-<gen>.json     {"paths": [...], "labels": [... or null], "ids": [...], "sha256": [file content hashes]};
                         item i is faiss id i
    vectors-<gen>.f32    ``…,RFlatDisk`` only: the full vectors, row i = faiss id i (kept from an earlier
                         generation when unchanged)

Saving writes a new generation of the two data files, then replaces ``meta.json`` atomically (the manifest it
replaces becomes ``meta-prev.json``) and removes the generation before the previous one, so a process killed at
any moment leaves the previous complete index or the new one. Opening verifies the manifest's own checksum and
every file's SHA-256 on the bytes read (the faiss index is deserialised from those bytes, never re-read); a
version that fails is reported, and the previous version is opened instead with a warning, as
``checkpoint_prev.pth`` is for a training run. The manifest's ``sha256`` is also the index's *version*: what
``/health`` reports and what a server compares to see a newer committed version.

**GPU**: where faiss is built with GPU support and a GPU is asked for, the index is cloned to every visible GPU
(:func:`to_gpus`), sharded (``IndexShards``) when there are several, for training and searching; it is filled
and stored on the CPU (faiss's sharded GPU copy of a ``Flat`` index takes only one ``add``). faiss-gpu is not
installed on the development machines: there the tests replace the GPU count and faiss's cloners
(``tests/index/test_index_gpu.py``); its ``cuda`` test runs the real path (``pytest -m cuda``,
``benchmarks/gpu_check.sh``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metric_retrieval.retrieval.disk_vectors import REMEDY, DiskVectors, split_disk_refine
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.faiss_lib import faiss_gpu_count
from metric_retrieval.utils.faiss_lib import load_faiss as _faiss
from metric_retrieval.utils.io import atomic_write

__all__ = ["DEFAULT_K_FACTOR", "FORMAT_VERSION", "ITEM_KEYS", "IndexStore", "IndexVersionError", "faiss_metric",
           "gpu_count", "has_refine", "on_gpu", "to_cpu", "to_gpus"]

ITEM_KEYS = ("paths", "labels", "ids", "sha256")  # per item; sha256: the SHA-256 of the image file's bytes
FORMAT_VERSION = 2
DEFAULT_K_FACTOR = 16  # issue 28: IVF1024,PQ64x4fs,RFlat at 1M x 512 reaches recall@10 0.955-0.990 (nprobe 8-32)
META = "meta.json"
PREVIOUS_META = "meta-prev.json"
logger = logging.getLogger(__name__)


def faiss_metric(metric: str) -> int:
    faiss = _faiss()
    if metric not in ("ip", "l2"):
        raise UserError(f"--metric must be ip or l2, got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def gpu_count() -> int:
    """GPUs faiss can use (0 for the faiss-cpu wheel)."""
    return faiss_gpu_count(_faiss())


def to_gpus(index: Any) -> Any:
    """``index`` cloned onto every GPU faiss sees, or ``index`` itself where there is none (the faiss-cpu wheel).

    One GPU holds the whole index; several hold an ``IndexShards`` of 1/n of the vectors each
    (``index_cpu_to_all_gpus`` with ``shard=True``), searched in parallel and merged. A type faiss has no GPU
    version of (HNSW, fast-scan PQ, PQ with more than 96 bytes a code, ...) stays on the CPU, with a warning.
    This is the one place the index meets the GPU: :func:`gpu_count` and faiss's cloners are the seam a test
    on a CPU machine replaces.
    """
    faiss, n = _faiss(), gpu_count()
    if n == 0:
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.shard = n > 1
    try:
        return faiss.index_cpu_to_all_gpus(index, options, ngpu=n)
    except RuntimeError as err:
        logger.warning("the %s index has no faiss GPU version (%s): it stays on the CPU", type(index).__name__,
                       _short(err))
        return index


def to_cpu(index: Any) -> Any:
    """The CPU copy of a :func:`to_gpus` index (the shards merged), what is written to disk."""
    return _faiss().index_gpu_to_cpu(index) if on_gpu(index) else index


def on_gpu(index: Any) -> bool:
    """Whether ``index`` is a faiss GPU index or the ``IndexShards`` :func:`to_gpus` makes over several GPUs."""
    return "Gpu" in type(index).__name__ or "Shards" in type(index).__name__


def has_refine(index: Any) -> bool:
    """Whether ``index`` ends in a refine stage (``RFlat``, ``Refine(...)``), the indexes ``k_factor`` applies to."""
    faiss = _faiss()
    return isinstance(faiss.downcast_index(index), faiss.IndexRefine)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest without its own ``sha256`` (keys sorted: the JSON text may be reformatted)."""
    return _sha256(json.dumps({k: v for k, v in manifest.items() if k != "sha256"}, sort_keys=True).encode())


class IndexVersionError(UserError):
    """One version of an index (a manifest and its files) is missing, unreadable or fails its checksums."""


def _read_version(root: Path, manifest_name: str
                  ) -> tuple[Any, dict[str, Any], dict[str, list], DiskVectors | None]:
    """``(faiss index, meta, items, disk vectors or None)`` of the version ``manifest_name`` describes, every
    checksum verified."""
    faiss = _faiss()
    try:
        meta = json.loads((root / manifest_name).read_text())
    except (OSError, ValueError) as err:
        raise IndexVersionError(f"{manifest_name} is unreadable ({_short(err)})") from None
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise UserError(f"index {root} has format version {found!r}; this code reads {FORMAT_VERSION}: rebuild it "
                        "with index.py build")
    if meta.get("sha256") != _manifest_digest(meta):
        raise IndexVersionError(f"{manifest_name} does not match its checksum (edited or damaged)")
    gen = meta["generation"]
    data = {}
    for name in (f"index-{gen}.faiss", f"items-{gen}.json"):
        try:
            data[name] = (root / name).read_bytes()
        except OSError as err:
            raise IndexVersionError(f"{name} is unreadable ({_short(err)})") from None
        if _sha256(data[name]) != meta["files"].get(name):
            raise IndexVersionError(f"{name} does not match the checksum in {manifest_name} (edited or damaged)")
    try:
        items = json.loads(data[f"items-{gen}.json"])
        index = faiss.deserialize_index(np.frombuffer(data[f"index-{gen}.faiss"], dtype=np.uint8))
    except (ValueError, RuntimeError) as err:
        raise IndexVersionError(f"generation {gen} is unreadable ({_short(err)})") from None
    vectors = None
    if split_disk_refine(meta["factory"])[1]:
        name = next((n for n in meta["files"] if n.startswith("vectors-")), None)
        try:
            if name is None:
                raise ValueError(f"{manifest_name} names no vectors file")
            vectors = DiskVectors.open(root, name, meta["dim"], meta["count"], meta["files"][name])
        except ValueError as err:
            raise IndexVersionError(str(err)) from None
    sizes = {index.ntotal, meta["count"], *(len(items[key]) for key in ITEM_KEYS)}
    if len(sizes) != 1:
        raise IndexVersionError(f"generation {gen} is inconsistent (faiss holds {index.ntotal} vectors, the "
                                f"metadata {meta['count']} and the item list {len(items['paths'])})")
    return index, meta, items, vectors


class IndexStore:
    """A faiss index with its items and metadata (see the module docstring). ``store.index`` is the faiss index."""

    def __init__(self, root: str | Path, index: Any, meta: dict[str, Any], items: dict[str, list],
                 vectors: DiskVectors | None = None) -> None:
        self.root, self.index, self.meta, self.items = Path(root), index, meta, items
        self.vectors = vectors  # the full vectors on disk of a …,RFlatDisk index; None for every other type
        self.k_factor = 1  # the disk refine's (faiss refine stages keep theirs in the faiss index)
        self.search_params: dict[str, int] = {}  # what set_search_params applied (a reopened version gets them too)

    @property
    def refines(self) -> bool:
        """Whether the index re-ranks its candidates (a faiss refine stage or ``RFlatDisk``): ``k_factor`` applies."""
        return self.vectors is not None or has_refine(self.index)

    # -- creation ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, dim: int, factory: str = "Flat", metric: str = "ip",
               train_sample: Callable[[], np.ndarray] | None = None, seed: int = 0, use_gpu: bool = False,
               k_factor: int | None = None, **meta: Any) -> IndexStore:
        """An empty index of ``factory`` type, trained on ``train_sample()`` (n, dim) when the type needs it;
        ``k_factor``: the refine stage's (default :data:`DEFAULT_K_FACTOR`), stored with the index."""
        faiss = _faiss()
        try:
            base, on_disk = split_disk_refine(factory)
            index = faiss.index_factory(int(dim), base, faiss_metric(metric))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"--index_factory {factory!r} is not a faiss index_factory string ({_short(err)}); "
                            "e.g. Flat, IVF1024,Flat, IVF4096,PQ64, HNSW32") from None
        sample = None
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.cp.seed = seed
            sample = None if train_sample is None else train_sample()
            if sample is None or len(sample) == 0:
                raise UserError(f"--index_factory {factory} needs training vectors and the catalogue has none")
            trainable = to_gpus(index) if use_gpu else index
            try:
                trainable.train(np.ascontiguousarray(sample, dtype=np.float32))
            except RuntimeError as err:
                raise UserError(f"--index_factory {factory}: training on {len(sample)} vectors failed "
                                f"({_short(err)}); use fewer lists/centroids or a bigger catalogue") from None
            index = to_cpu(trainable)
        if on_disk or has_refine(index):
            k_factor = DEFAULT_K_FACTOR if k_factor is None else k_factor
            meta["k_factor"] = int(k_factor)
        elif k_factor is not None:
            raise UserError(f"--k_factor applies to indexes with a refine stage (…,RFlat, …,Refine(…) or "
                            f"…,RFlatDisk); --index_factory {factory!r} has none")
        meta = {"version": FORMAT_VERSION, "factory": factory, "metric": metric, "dim": int(dim), "count": 0,
                "faiss_version": faiss.__version__, "seed": seed,
                "train_size": 0 if sample is None else len(sample), "generation": 0, **meta}
        store = cls(root, index, meta, {key: [] for key in ITEM_KEYS}, DiskVectors(root, dim) if on_disk else None)
        store.set_search_params(k_factor=meta.get("k_factor"))
        return store

    @classmethod
    def open(cls, root: str | Path, use_gpu: bool = False, fallback: bool = True) -> IndexStore:
        """Load and verify an index directory (the previous version, with a warning, when the current one fails
        its checks, unless ``fallback`` is False); nothing usable → :class:`UserError`."""
        root = Path(root)
        if not (root / META).is_file() and not (root / PREVIOUS_META).is_file():
            hint = " (a build in progress or killed: rerun index.py build to finish it)" if root.is_dir() else ""
            raise UserError(f"{root} is not an index directory: no {META}{hint}")
        try:
            index, meta, items, vectors = _read_version(root, META)
        except IndexVersionError as err:
            if not fallback:
                raise IndexVersionError(f"index {root}: {err}") from None
            if not (root / PREVIOUS_META).is_file():
                raise UserError(f"index {root}: {err}; there is no previous version to fall back to: rebuild it "
                                "with index.py build") from None
            try:
                index, meta, items, vectors = _read_version(root, PREVIOUS_META)
            except IndexVersionError as prev_err:
                raise UserError(f"index {root}: {err}, and the previous version too: {prev_err}; rebuild it with "
                                "index.py build") from None
            logger.warning("index %s: %s; opened the previous version (generation %d, %d items) instead",
                           root, err, meta["generation"], meta["count"])
        store = cls(root, to_gpus(index) if use_gpu else index, meta, items, vectors)
        store.set_search_params(k_factor=meta.get("k_factor"))
        return store

    @property
    def version(self) -> str:
        """The manifest checksum of the version held (changes with every committed ``save``)."""
        return str(self.meta.get("sha256", ""))

    # -- contents ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.meta["count"])

    def add(self, embeddings: np.ndarray, paths: Sequence[str], labels: Sequence[str | None],
            ids: Sequence[str], hashes: Sequence[str] | None = None) -> None:
        """Append items (faiss ids continue from ``len(self)``); trained types are not retrained. ``hashes``: the
        SHA-256 of each item's file (what makes ``index.py add`` idempotent; "" where unknown)."""
        hashes = [""] * len(paths) if hashes is None else hashes
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.meta["dim"]:
            raise UserError(f"index {self.root} holds {self.meta['dim']}-d vectors, got shape {x.shape}")
        if not (len(x) == len(paths) == len(labels) == len(ids) == len(hashes)):
            raise ValueError(f"{len(x)} embeddings but {len(paths)} paths, {len(labels)} labels, {len(ids)} ids, "
                             f"{len(hashes)} hashes")
        if self.vectors is not None:
            self.vectors.append(x)
        self.index.add(x)
        for key, values in zip(ITEM_KEYS, (paths, labels, ids, hashes)):
            self.items[key].extend(values)
        self.meta["count"] = len(self.items["paths"])

    def keep_items(self, keep: Sequence[int], vectors: Iterable[np.ndarray]) -> None:
        """Keep only the items at positions ``keep`` (ascending), in a faiss index (and, for ``…,RFlatDisk``, a
        vectors file) refilled with ``vectors``: their vectors in that order, in batches. The index keeps its
        training (faiss ``reset`` empties the lists of an IVF index and the codes of a PQ one, not the quantiser or
        the codebooks)."""
        index = _faiss().clone_index(to_cpu(self.index))
        index.reset()
        if self.vectors is not None:
            vectors = self.vectors.replace(vectors)
        for x in vectors:
            index.add(np.ascontiguousarray(x, dtype=np.float32))
        if index.ntotal != len(keep):
            raise ValueError(f"{index.ntotal} vectors given for {len(keep)} items")
        self.index = index
        self.items = {key: [values[n] for n in keep] for key, values in self.items.items()}
        self.meta["count"] = len(keep)

    def save(self) -> None:
        """Write a new generation and switch ``meta.json`` to it (atomic; see the module docstring)."""
        faiss = _faiss()
        self.root.mkdir(parents=True, exist_ok=True)
        gen = self.meta["generation"] + 1
        index_bytes = faiss.serialize_index(to_cpu(self.index)).tobytes()
        items_bytes = json.dumps(self.items).encode()
        files = {f"index-{gen}.faiss": index_bytes, f"items-{gen}.json": items_bytes}
        meta = {**self.meta, "generation": gen, "files": {name: _sha256(data) for name, data in files.items()}}
        try:
            if self.vectors is not None:
                meta["files"].update(self._commit_vectors(gen))
            meta["sha256"] = _manifest_digest(meta)
            for name, data in [*files.items(), (META, json.dumps(meta).encode())]:
                atomic_write(self.root / name, lambda f, data=data: f.write(data), need=len(data),
                             previous=self.root / PREVIOUS_META if name == META else None, remedy=REMEDY)
        except (OSError, RuntimeError) as err:
            raise UserError(f"cannot write index {self.root}: {_short(err)} (the previous version is intact)") from None
        self.meta = meta
        keep = {self.root / name for m in (META, PREVIOUS_META) if (self.root / m).is_file()
                for name in json.loads((self.root / m).read_text()).get("files", {})}
        for path in [*self.root.glob("index-*.faiss"), *self.root.glob("items-*.json"),
                     *self.root.glob("vectors-*.f32"), *self.root.glob(".vectors-*.tmp")]:  # .tmp: a killed writer's
            if path not in keep:
                path.unlink(missing_ok=True)

    def _commit_vectors(self, gen: int) -> dict[str, str]:
        """``{file name: SHA-256}`` of the disk vectors of generation ``gen``: the staged rows committed under a new
        name, or the file of an earlier generation when nothing changed."""
        if self.vectors.path is None and not self.vectors.dirty:
            self.vectors.append(np.zeros((0, self.meta["dim"]), np.float32))  # an empty index: an empty file
        if self.vectors.dirty:
            self.vectors.commit(f"vectors-{gen}.f32")
        return {self.vectors.path.name: self.vectors.sha256}

    def describe(self) -> dict[str, Any]:
        """What ``index.py info`` prints: the metadata plus counts of labelled items and classes."""
        labels = [lab for lab in self.items["labels"] if lab is not None]
        return {**{k: v for k, v in self.meta.items() if k not in ("generation", "files", "sha256", "superseded")},
                "version": self.version[:12], "labelled": len(labels),
                "classes": len(set(labels)), "directory": str(self.root)}

    # -- search -----------------------------------------------------------------------------------------------
    def check_model(self, fingerprint: str, checkpoint: str) -> None:
        """Refuse a model other than the one whose embeddings the index holds."""
        built = self.meta.get("model", {})
        if fingerprint != built.get("fingerprint"):
            raise UserError(
                f"the model {checkpoint} is not the one that built index {self.root} (it was built with "
                f"{built.get('checkpoint')!r}, weights {str(built.get('fingerprint'))[:12]}…, this model's are "
                f"{fingerprint[:12]}…): embeddings of different models are not comparable; use that checkpoint "
                "or rebuild the index with this one")

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          k_factor: int | None = None) -> None:
        """IVF ``nprobe`` (lists visited per query), HNSW ``efSearch`` (candidate list size) and the refine
        stage's ``k_factor`` (candidates re-ranked per result): speed vs recall. ``None`` leaves a value as is."""
        faiss = _faiss()
        space = faiss.GpuParameterSpace() if on_gpu(self.index) else faiss.ParameterSpace()
        kinds = {"nprobe": "IVF indexes", "efSearch": "HNSW indexes",
                 "k_factor_rf": "indexes with a refine stage (…,RFlat, …,Refine(…) or …,RFlatDisk)"}
        for flag, name, value in (("--nprobe", "nprobe", nprobe), ("--ef_search", "efSearch", ef_search),
                                  ("--k_factor", "k_factor_rf", k_factor)):
            if value is None:
                continue
            if value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
            if name == "k_factor_rf" and self.vectors is not None:
                self.k_factor = int(value)
                self.search_params["k_factor"] = int(value)
                continue
            try:
                space.set_index_parameter(self.index, name, int(value))
            except RuntimeError:
                raise UserError(f"{flag} applies to {kinds[name]}; index {self.root} is "
                                f"{self.meta['factory']!r}") from None
            self.search_params[flag.lstrip("-")] = int(value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float32, faiss ids (Q, k) int64), best first; k is capped at ``len(self)``."""
        if not len(self):
            raise UserError(f"index {self.root} is empty")
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.meta["dim"])
        k = max(1, min(int(k), len(self)))
        if self.vectors is None:
            return self.index.search(q, k)
        candidates = self.index.search(q, min(k * self.k_factor, len(self)))[1]
        return self.vectors.rerank(q, candidates, k, self.meta["metric"])


def _short(err: BaseException) -> str:
    """faiss messages carry a C++ stack location: keep the readable last line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
