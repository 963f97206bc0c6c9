"""kNN classification over an index: the vote of the k nearest *labelled* items, however many unlabelled items
crowd the top of the ranking."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np

from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import classify, labelled_neighbours
from tests.e2e.cli import run_test_cli
from tests.index.conftest import COLOURS, write_image
from tests.index.test_index_build import build


def _store(tmp_path, x: np.ndarray, labels: list[str | None], factory: str = "Flat") -> IndexStore:
    store = IndexStore.create(tmp_path / "i", x.shape[1], factory, "ip", lambda: x, seed=0)
    store.add(x, [f"p{i}" for i in range(len(x))], labels, [str(i) for i in range(len(x))])
    return store


def test_labelled_neighbours_skip_unlabelled_items_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    order = np.argsort(-(q @ x.T), axis=1, kind="stable")  # brute-force ranking of every item
    crowd = set(order[:, :15].ravel().tolist())  # each query's 15 nearest items are unlabelled
    labels = [None if i in crowd else "abc"[int(rng.integers(3))] for i in range(len(x))]
    store = _store(tmp_path, x, labels)
    for n, hits in enumerate(labelled_neighbours(store, q, 4)):
        want = [int(j) for j in order[n] if labels[j] is not None][:4]
        assert [h.item for h in hits] == want
        assert [h.rank for h in hits] == [int(np.where(order[n] == j)[0][0]) + 1 for j in want]
        assert all(h.label == labels[h.item] for h in hits)


def test_labelled_neighbours_stop_at_what_the_index_holds(tmp_path):
    x = np.eye(6, dtype=np.float32)
    # only 2 labelled items: a query asking for 5 gets those 2 (the search stops at the whole index)
    store = _store(tmp_path, x, [None, None, "a", None, "b", None])
    (hits,) = labelled_neighbours(store, x[:1], 5)
    assert sorted(h.item for h in hits) == [2, 4]
    assert labelled_neighbours(_store(tmp_path / "none", x, [None] * 6), x[:2], 3) == [[], []]


def test_labelled_neighbours_stop_when_an_ivf_probe_runs_out(tmp_path):
    # two far-apart clusters: the query's own cluster is unlabelled; with nprobe 1 only that list is searched
    rng = np.random.default_rng(1)
    near = np.array([1, 0, 0, 0], np.float32) + 0.01 * rng.standard_normal((20, 4)).astype(np.float32)
    far = np.array([-1, 0, 0, 0], np.float32) + 0.01 * rng.standard_normal((20, 4)).astype(np.float32)
    store = _store(tmp_path, np.concatenate([near, far]), [None] * 20 + ["far"] * 20, "IVF2,Flat")
    store.set_search_params(nprobe=1)
    assert labelled_neighbours(store, near[:1], 3) == [[]]
    store.set_search_params(nprobe=2)
    assert [h.label for h in labelled_neighbours(store, near[:1], 3)[0]] == ["far"] * 3


def test_classify_cli_votes_past_unlabelled_items(checkpoint, tmp_path):
    """test.py --classify on a catalogue where unlabelled red images crowd the top 3 of the red queries."""
    gallery, rows = tmp_path / "gallery", ["path,label"]
    for n in range(8):  # 8 unlabelled red, then 2 labelled images of each colour
        rows.append(f"{write_image(gallery / f'u{n}.jpg', COLOURS['red'], 100 + n).name},")
    for c, colour in COLOURS.items():
        rows += [f"{write_image(gallery / f'{c}{n}.jpg', colour, 200 + 10 * n + len(c)).name},{c}" for n in range(2)]
    (gallery / "list.csv").write_text("\n".join(rows) + "\n")
    queries = [write_image(tmp_path / "q" / f"red{n}.jpg", COLOURS["red"], 300 + n) for n in range(3)]
    out = tmp_path / "idx"
    assert build(checkpoint, gallery / "list.csv", out) == 0
    store = IndexStore.open(out)
    code, _, err = run_test_cli(["--index", str(out), "--query_dir", str(tmp_path / "q"), "--retrieval_num", "3",
                                 "--classify", "--results", str(tmp_path / "r.json")])
    assert code == 0, err
    results = {r["query"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    embedder = Embedder(checkpoint)
    x = np.stack([embedder.embed_file(p).numpy() for p in store.items["paths"]])
    labels, crowded = store.items["labels"], 0
    for path in queries:
        scores = x @ embedder.embed_file(str(path)).numpy()
        order = np.argsort(-scores, kind="stable")
        crowded += all(labels[j] is None for j in order[:3])
        nearest = [int(j) for j in order if labels[j] is not None][:3]
        votes = Counter(labels[j] for j in nearest)
        strength = Counter()
        for j in nearest:
            strength[labels[j]] += float(scores[j])
        want = max(votes, key=lambda lab: (votes[lab], strength[lab]))
        row = results[str(path)]
        assert (row["predicted"], row["votes"]) == (want, dict(votes))
        assert [h["path"] for h in row["results"]] == [store.items["paths"][j] for j in order[:3]]
    assert crowded, "no query had only unlabelled items in its top 3: the test would not exercise the deep search"
    assert classify([], "ip") == (None, {})
