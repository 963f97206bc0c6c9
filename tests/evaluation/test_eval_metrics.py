"""retrieval_metrics against brute force: ties, lone queries, query/gallery splits, back-ends, NMI."""
import math

import numpy as np
import pytest
import torch
from helpers_eval import brute_metrics, integer_embeddings

from metric_retrieval.evaluation.knn import available_backends
from metric_retrieval.evaluation.metrics import (
    default_recall_ks,
    normalized_mutual_info,
    rel_metrics,
    retrieval_metrics,
)
from metric_retrieval.utils.errors import UnknownOptionError

CPU_BACKENDS = [b for b in ("torch", "faiss_cpu") if b in available_backends()]
KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r")


def _labelled(n=90, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    x = integer_embeddings(n, dim, seed=seed)
    x[10:20] = x[0]  # a block of exact duplicates across labels
    labels = rng.integers(0, 12, size=n)
    labels[-3:] = [100, 101, 102]  # three single-sample classes: lone queries in leave-one-out
    return x, labels


def _assert_same(got, ref, keys=KEYS):
    for key in keys:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert got["num_queries"] == ref["num_queries"]
    assert got["num_excluded_queries"] == ref["num_excluded_queries"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_leave_one_out_matches_bruteforce(backend, metric):
    x, labels = _labelled()
    got = retrieval_metrics(x, labels, metric=metric, backend=backend)
    ref = brute_metrics(x, labels, metric=metric)
    assert ref["num_excluded_queries"] == 3
    _assert_same(got, ref)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_query_gallery_split_matches_bruteforce(backend):
    q, ql = _labelled(40, seed=1)
    g, gl = _labelled(120, seed=2)
    ql[:2] = [555, 556]  # labels absent from the gallery: excluded
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 3, 10), backend=backend)
    ref = brute_metrics(q, ql, g, gl, ks=(1, 3, 10))
    _assert_same(got, ref, ("recall@1", "recall@3", "recall@10", "precision@1", "r_precision", "map@r"))
    assert got["num_excluded_queries"] >= 2


def test_backends_and_chunking_agree():
    x, labels = _labelled(70, seed=4)
    results = [retrieval_metrics(x, labels, backend=b, chunk_size=cs) for b in CPU_BACKENDS for cs in (1, 7, None)]
    for r in results[1:]:
        assert r == results[0]


def test_r_cap_path_is_exact():
    x, labels = _labelled(90, seed=5)
    labels[:40] = 7  # one big class: R = 39 > r_cap
    ref = brute_metrics(x, labels)
    got = retrieval_metrics(x, labels, r_cap=4, backend="torch")
    _assert_same(got, ref)


def test_perfect_embedding_and_clamped_k():
    centers = np.eye(4, dtype=np.float32)
    x = np.repeat(centers, 3, axis=0) + 0.01 * np.arange(12, dtype=np.float32)[:, None]
    labels = np.repeat(np.arange(4), 3)
    m = retrieval_metrics(x, labels, ks=(1, 2, 1000), backend="torch")
    assert m["recall@1"] == m["recall@2"] == m["recall@1000"] == 1.0
    assert m["map@r"] == 1.0 and m["r_precision"] == 1.0 and m["precision@1"] == 1.0


def test_all_lone_queries_give_nan():
    m = retrieval_metrics(torch.randn(4, 3), [0, 1, 2, 3], ks=(1,))
    assert math.isnan(m["recall@1"]) and math.isnan(m["map@r"])
    assert m["num_excluded_queries"] == 4


def test_rel_metrics_hand_case():
    rel = torch.tensor([[False, True, False, True]])
    rp, ap = rel_metrics(rel, torch.tensor([4]))
    assert rp.item() == pytest.approx(0.5)
    assert ap.item() == pytest.approx((1 / 2 + 2 / 4) / 4)


def test_nmi_hand_values_and_kmeans():
    assert normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 0], [1, 1, 1]) == 1.0
    # MI = 2/3 ln 2, H(U) = ln 2, H(V) = ln 3 (computed by hand)
    expected = (2 / 3 * math.log(2)) / ((math.log(2) + math.log(3)) / 2)
    assert normalized_mutual_info([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(expected, abs=1e-12)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 20
    labels = np.repeat(np.arange(5), 20)
    x = (centers[labels] + rng.normal(size=(100, 8))).astype(np.float32)
    m = retrieval_metrics(x, labels, ks=(1,), include_nmi=True)
    assert m["nmi"] == pytest.approx(1.0)


def test_default_recall_ks():
    assert default_recall_ks("cub") == (1, 2, 4, 8)
    assert default_recall_ks("CARS196") == (1, 2, 4, 8)
    assert default_recall_ks("sop") == (1, 10, 100, 1000)
    assert default_recall_ks("in-shop") == (1, 10, 20, 30, 40, 50)
    with pytest.raises(UnknownOptionError, match="inshop"):
        default_recall_ks("imagenet")


def test_labels_length_mismatch():
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_metrics(torch.randn(4, 3), [0, 1])
    with pytest.raises(ValueError, match="gallery_labels"):
        retrieval_metrics(torch.randn(4, 3), [0, 0, 1, 1], torch.randn(4, 3))
