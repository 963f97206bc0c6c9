"""The refine stage's k_factor: stored with the index, applied on every open, overridable per run, refused where
there is no refine stage; and what it buys (recall of a refine index against exact search)."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from metric_retrieval.retrieval.index_store import DEFAULT_K_FACTOR, IndexStore, has_refine
from metric_retrieval.utils.errors import UserError


def vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(root, factory: str, x: np.ndarray, **kw) -> IndexStore:
    store = IndexStore.create(root, x.shape[1], factory, "ip", lambda: x, **kw)
    store.add(x, [f"{i}.jpg" for i in range(len(x))], [None] * len(x), [str(i) for i in range(len(x))])
    store.save()
    return store


def k_factor_of(store: IndexStore) -> float:
    return faiss.downcast_index(store.index).k_factor


@pytest.mark.parametrize("factory", ["IVF8,PQ4x4fs,RFlat", "IVF8,PQ4,Refine(SQ8)", "IVF8,PQ4,Refine(PQ16)"])
def test_k_factor_round_trip(tmp_path, factory):
    x = vectors(2000)
    store = build(tmp_path / "a", factory, x, k_factor=7)
    assert has_refine(store.index) and store.meta["k_factor"] == 7 and k_factor_of(store) == 7
    opened = IndexStore.open(tmp_path / "a")
    assert opened.meta["k_factor"] == 7 and k_factor_of(opened) == 7  # applied on open, not faiss's 1
    opened.set_search_params(nprobe=2, k_factor=3)  # a run's override
    assert k_factor_of(opened) == 3 and faiss.extract_index_ivf(opened.index).nprobe == 2
    assert IndexStore.open(tmp_path / "a").meta["k_factor"] == 7  # the stored value is unchanged
    assert k_factor_of(build(tmp_path / "b", factory, x)) == DEFAULT_K_FACTOR


def test_k_factor_is_refused_without_a_refine_stage(tmp_path):
    x = vectors(500)
    with pytest.raises(UserError, match="--k_factor applies to indexes with a refine stage"):
        IndexStore.create(tmp_path / "a", 32, "IVF4,Flat", "ip", lambda: x, k_factor=4)
    store = build(tmp_path / "b", "Flat", x)
    assert "k_factor" not in store.meta
    with pytest.raises(UserError, match="--k_factor applies to indexes with a refine stage"):
        store.set_search_params(k_factor=4)
    refine = build(tmp_path / "c", "IVF4,PQ4,RFlat", x)
    with pytest.raises(UserError, match="--k_factor must be >= 1"):
        refine.set_search_params(k_factor=0)


def test_k_factor_is_what_makes_the_refine_stage_work(tmp_path):
    """With faiss's k_factor 1 the refine stage only re-orders the coarse top 10; the stored default re-ranks
    16 x 10 candidates with the full vectors and finds (nearly) the exact neighbours."""
    x, q = vectors(4000, seed=1), vectors(50, seed=2)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    store = build(tmp_path / "a", "IVF8,PQ16x4fs,RFlat", x)
    store.set_search_params(nprobe=8)  # every list: only the codes and the refine stage lose recall

    def recall() -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(store.search(q, 10)[1], truth)]))

    stored = recall()
    store.set_search_params(k_factor=1)
    assert stored >= 0.95 and recall() < 0.7
