"""Dynamic batching for the search server: concurrent requests share one forward pass and one index search.

:class:`DynamicBatcher` takes items from request threads; a worker thread gathers them for at most
``window_ms`` after the first one arrives (or until ``max_batch`` are waiting, whichever comes first), processes
the batch with one call and hands every request its own result (or its own error). While a batch is being
processed the next requests queue up, so under load batches fill without waiting; a lone request waits only
the window. The queue is bounded (``max_queue``): past it a request is refused at once (:class:`Overloaded`)
instead of piling up memory and latency.

:func:`decode_upload` decodes an upload once, the way :meth:`metric_retrieval.data.RetrievalDataset.load`
decodes a catalogue file; :func:`search_batch` embeds a batch of decoded images in one forward pass and searches
the index once per distinct k, giving each request the hits and the kNN vote that the unbatched path
(``Embedder.embed_file``, ``indexing.search``, ``indexing.labelled_neighbours``) gives.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from metric_retrieval.data.dataset import read_transformed
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import Hit, classify, labelled_neighbours, search

__all__ = ["DynamicBatcher", "Overloaded", "SearchResult", "decode_upload", "search_batch"]

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(RuntimeError):
    """The batcher's queue is full: the server is past the load it accepts."""


@dataclass
class _Job(Generic[T, R]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class DynamicBatcher(Generic[T, R]):
    """Calls ``process(items) -> results`` (same length, same order) on batches of concurrently submitted items.

    Args:
        process: the batch function; an exception fails every request of that batch with it.
        max_batch: most items per call.
        window_ms: how long the first item of a batch waits for company.
        max_queue: most items waiting; more are refused with :class:`Overloaded`.
    """

    def __init__(self, process: Callable[[list[T]], Sequence[R]], max_batch: int = 8, window_ms: float = 2.0,
                 max_queue: int = 256) -> None:
        if max_batch < 1 or window_ms < 0 or max_queue < 1:
            raise ValueError(f"need max_batch >= 1, window_ms >= 0, max_queue >= 1; got {max_batch}, {window_ms}, "
                             f"{max_queue}")
        self.process, self.max_batch, self.window = process, int(max_batch), window_ms / 1000.0
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []  # every batch processed, for tests and benchmarks

    def __call__(self, item: T) -> R:
        """Submit ``item`` and wait for its result (re-raises the batch's exception)."""
        self._start()
        job: _Job[T, R] = _Job(item)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"more than {self._queue.maxsize} requests are waiting") from None
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="dynamic-batcher", daemon=True)
                self._worker.start()

    def _gather(self) -> list[_Job[T, R]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:  # take what is already queued, then wait out the window
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._gather()
            self.batch_sizes.append(len(batch))
            try:
                results = list(self.process([job.item for job in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
                for job, result in zip(batch, results):
                    job.result = result
            except BaseException as err:  # noqa: BLE001 - handed to every waiting request
                for job in batch:
                    job.error = err
            for job in batch:
                job.done.set()


def decode_upload(embedder: Embedder, body: bytes) -> torch.Tensor:
    """The evaluation image (3, H, W) of an uploaded file, decoded once and exactly as ``RetrievalDataset.load``
    decodes a catalogue file for ``embedder``; the decoder's ``OSError`` / ``ValueError`` for a truncated or
    corrupt image."""
    return read_transformed(body, embedder.transform, embedder.decode)


@dataclass
class SearchResult:
    """One request's answer: its hits and the vote of its nearest labelled hits."""

    hits: list[Hit]
    predicted: str | None
    votes: dict[str, int]


def search_batch(store: IndexStore, embedder: Embedder, requests: list[tuple[torch.Tensor, int]]
                 ) -> list[SearchResult]:
    """``requests``: (decoded image, k) pairs → their results, with one forward pass per image shape and one index
    search per distinct k (the labelled-hit search goes deeper only for queries whose top k lacks labels)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for n, (image, _) in enumerate(requests):
        by_shape.setdefault(tuple(image.shape), []).append(n)
    parts = {}
    for rows in by_shape.values():
        out = embedder(torch.stack([requests[n][0] for n in rows]))
        parts.update(zip(rows, out))
    emb = torch.stack([parts[n] for n in range(len(requests))]).numpy()
    results: list[SearchResult | None] = [None] * len(requests)
    labelled = sum(lab is not None for lab in store.items["labels"])
    for k in sorted({k for _, k in requests}):
        rows = [n for n, (_, kn) in enumerate(requests) if kn == k]
        found = search(store, emb[rows], k)
        for n, hits in zip(rows, found):
            votes_from = [h for h in hits if h.label is not None][:k]
            if len(votes_from) < min(k, labelled) and len(hits) == min(k, len(store)) < len(store):
                votes_from = labelled_neighbours(store, emb[n:n + 1], k)[0]  # short of labels: search deeper
            results[n] = SearchResult(hits, *classify(votes_from, store.meta["metric"]))
    return results  # type: ignore[return-value]
