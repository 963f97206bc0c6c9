"""Dynamic batching: the batcher's gathering, errors and bound, and the server's per-request results under
concurrency against the unbatched path (one image, one forward pass, one search each)."""
from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from metric_retrieval.retrieval.batching import DynamicBatcher, Overloaded
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.indexing import classify, labelled_neighbours, search
from metric_retrieval.retrieval.live_index import shown_paths
from metric_retrieval.retrieval.serve_app import create_app


def run_together(fn, items, workers):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def wait_until(condition, seconds: float = 30.0) -> None:
    """Poll ``condition`` (a worker thread's progress) until it holds; fail instead of hanging."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the batcher's worker made no progress"
        time.sleep(0.001)


def test_concurrent_items_share_a_batch_and_get_their_own_results():
    batcher = DynamicBatcher(lambda items: [x * 10 for x in items], max_batch=4, window_ms=300)
    assert run_together(batcher, range(8), 8) == [x * 10 for x in range(8)]
    assert sum(batcher.batch_sizes) == 8 and max(batcher.batch_sizes) == 4 and len(batcher.batch_sizes) < 8


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_working():
    def process(items):
        if "bad" in items:
            raise ValueError("bad item in the batch")
        return items

    batcher = DynamicBatcher(process, max_batch=1, window_ms=0)
    with pytest.raises(ValueError, match="bad item"):
        batcher("bad")
    assert batcher("good") == "good"
    short = DynamicBatcher(lambda items: items[:-1], max_batch=1, window_ms=0)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        short("x")


def test_the_queue_is_bounded():
    release = threading.Event()

    def process(items):
        release.wait(10)
        return items

    batcher = DynamicBatcher(process, max_batch=1, window_ms=0, max_queue=2)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher, 0)  # taken by the worker, which blocks
        wait_until(lambda: batcher.batch_sizes)
        queued = [pool.submit(batcher, n) for n in (1, 2)]  # fill the queue
        wait_until(lambda: batcher._queue.qsize() >= 2)
        with pytest.raises(Overloaded, match="more than 2 requests are waiting"):
            batcher(3)
        release.set()
        assert [first.result(), *(f.result() for f in queued)] == [0, 1, 2]
    with pytest.raises(ValueError, match="max_batch >= 1"):
        DynamicBatcher(lambda items: items, max_batch=0)


def test_batched_server_answers_each_request_as_the_unbatched_path(small_index, checkpoint):
    store, embedder = small_index
    app = create_app(store, embedder, k=4, allowed_hosts=["testserver"], max_batch=8, batch_window_ms=500)
    paths = store.items["paths"]
    client = TestClient(app)

    def ask(n: int) -> dict:
        body = Path(paths[n % len(paths)]).read_bytes()
        reply = client.post("/search", files={"image": ("q.jpg", body, "image/jpeg")}, params={"k": 3 + n % 2})
        assert reply.status_code == 200, reply.text
        return reply.json()

    replies = run_together(ask, range(8), 8)
    assert max(app.state.batcher.batch_sizes) > 1  # requests really were batched
    independent = Embedder(checkpoint)
    shown = shown_paths(store)  # results show paths relative to their catalogue root
    for n, reply in enumerate(replies):
        k = 3 + n % 2
        e = independent.embed_file(paths[n % len(paths)])[None].numpy()  # batch of one, decoded from the file
        hits = search(store, e, k)[0]
        assert [(r["rank"], r["path"], r["id"], r["label"]) for r in reply["results"]] == \
            [(h.rank, shown[h.item], h.id, h.label) for h in hits]
        np.testing.assert_allclose([r["score"] for r in reply["results"]], [h.score for h in hits], atol=1e-5)
        predicted, votes = classify(labelled_neighbours(store, e, k)[0], store.meta["metric"])
        assert (reply["predicted"], reply["votes"]) == (predicted, votes)
