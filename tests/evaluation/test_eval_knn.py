"""Exact kNN: all CPU back-ends against a brute-force NumPy ranking, ties, leave-one-out, chunking."""
import importlib

import numpy as np
import pytest
import torch
from helpers_eval import brute_knn, integer_embeddings

from metric_retrieval.evaluation.knn import (
    KNN_BACKENDS,
    auto_chunk_size,
    available_backends,
    iter_knn,
    knn,
    resolve_backend,
)
from metric_retrieval.utils.errors import UnknownOptionError

CPU_BACKENDS = [b for b in ("torch", "faiss_cpu") if b in available_backends()]


def test_registry_and_auto_order():
    assert set(KNN_BACKENDS.names()) == {"fp16_cuda", "faiss_gpu", "torch_cuda", "bf16", "faiss_cpu", "torch"}
    assert "torch" in available_backends()
    assert resolve_backend("auto", 10) == available_backends()[0]
    with pytest.raises(UnknownOptionError, match="torch"):
        resolve_backend("annoy", 10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_matches_bruteforce_with_ties(backend, metric, exclude_self):
    x = integer_embeddings(80, 4, seed=1)  # 5^4 = 625 possible vectors for 80 rows: duplicates + many ties
    k = 12
    s, i = knn(x, None, k, metric=metric, exclude_self=exclude_self, backend=backend)
    bs, bi = brute_knn(x, x, k, metric, exclude_self)
    assert s.dtype == torch.float32 and i.dtype == torch.int64 and s.shape == (80, k)
    np.testing.assert_array_equal(i.numpy(), bi)
    np.testing.assert_allclose(s.numpy(), bs, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_knn_query_gallery_split(backend, metric):
    q = integer_embeddings(30, 5, seed=2)
    g = integer_embeddings(70, 5, seed=3)
    s, i = knn(torch.from_numpy(q), torch.from_numpy(g), 9, metric=metric, backend=backend)
    bs, bi = brute_knn(q, g, 9, metric)
    np.testing.assert_array_equal(i.numpy(), bi)
    np.testing.assert_allclose(s.numpy(), bs, rtol=1e-6, atol=1e-5)


def test_backends_agree_on_random_floats():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    g = rng.normal(size=(200, 16)).astype(np.float32)
    results = [knn(q, g, 20, backend=b) for b in CPU_BACKENDS]
    for s, i in results[1:]:
        np.testing.assert_array_equal(i.numpy(), results[0][1].numpy())
        np.testing.assert_allclose(s.numpy(), results[0][0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exclude_self_never_returns_own_index_with_duplicates(backend):
    x = np.ones((10, 3), dtype=np.float32)  # every item identical: self ties with everything
    for metric in ("ip", "l2"):
        _, i = knn(x, x, 9, metric=metric, exclude_self=True, backend=backend)
        for row in range(10):
            assert row not in i[row].tolist()
            assert i[row].tolist() == [j for j in range(10) if j != row]  # ties: lower index first
    # self pushed out of the k+1 list by lower-index duplicates: the last column is dropped instead
    _, i = knn(x, None, 2, exclude_self=True, backend=backend)
    assert i[9].tolist() == [0, 1]
    assert i[0].tolist() == [1, 2]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_chunk_sizes_give_identical_results(backend, metric):
    x = integer_embeddings(45, 4, seed=5)
    ref = knn(x, None, 7, metric=metric, exclude_self=True, backend=backend, chunk_size=45)
    for cs in (1, 7, None):
        s, i = knn(x, None, 7, metric=metric, exclude_self=True, backend=backend, chunk_size=cs)
        assert torch.equal(i, ref[1]) and torch.equal(s, ref[0])


def test_input_validation():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k=5 exceeds"):
        knn(x, None, 5, exclude_self=True)
    with pytest.raises(ValueError, match="positive integer"):
        knn(x, None, 0)
    with pytest.raises(UnknownOptionError, match="ip, l2"):
        knn(x, None, 1, metric="cosine")
    with pytest.raises(ValueError, match="dim"):
        knn(x, torch.randn(5, 4), 1)
    with pytest.raises(ValueError, match="exclude_self"):
        knn(x, torch.randn(6, 3), 1, exclude_self=True)
    with pytest.raises(ValueError, match="2-D"):
        knn(torch.randn(3), None, 1)


def test_float64_and_numpy_inputs():
    x = np.random.default_rng(0).normal(size=(20, 8))
    s, i = knn(x, x, 1, metric="l2")
    assert i.flatten().tolist() == list(range(20))
    assert torch.all(s == 0)


def test_auto_chunk_size_bounds_sop_scores():
    rows = auto_chunk_size(60502, 1001)
    assert 1 <= rows <= 256 * 2**20 // (4 * 60502)
    assert auto_chunk_size(10**9, 10) == 1


def test_faiss_gpu_failure_and_large_k_fall_back(monkeypatch):
    knn_module = importlib.import_module("metric_retrieval.evaluation.knn")

    monkeypatch.setattr(knn_module.FaissGpuKNN, "available", classmethod(lambda cls: True))

    def broken(cls, gallery, metric):
        raise RuntimeError("no GPU resources")

    monkeypatch.setattr(knn_module.FaissGpuKNN, "prepare", classmethod(broken))
    monkeypatch.setattr(knn_module.TorchCudaKNN, "available", classmethod(lambda cls: False))
    x = integer_embeddings(30, 4, seed=7)
    ref = knn(x, None, 5, exclude_self=True, backend="torch")
    with pytest.warns(UserWarning, match="faiss_gpu failed"):
        got = knn(x, None, 5, exclude_self=True, backend="faiss_gpu")
    assert torch.equal(got[1], ref[1])
    with pytest.warns(UserWarning, match="at most 2048 neighbours"):
        assert resolve_backend("faiss_gpu", 3000) == "faiss_cpu"
    assert resolve_backend("auto", 3000) == "faiss_cpu"


@pytest.mark.skipif("faiss_cpu" not in CPU_BACKENDS, reason="needs faiss")
@pytest.mark.parametrize("k, exclude_self, expected", [
    (2047, False, "faiss_gpu"),  # faiss searches 2048 = k + the tie probe: the GPU limit exactly
    (2048, False, "faiss_cpu"),  # 2049 would be searched
    (2046, True, "faiss_gpu"),   # leave-one-out searches k + 1, plus the probe
    (2047, True, "faiss_cpu"),
])
def test_faiss_gpu_limit_counts_the_searched_columns(monkeypatch, k, exclude_self, expected):
    """The width handed to faiss (k, + 1 for leave-one-out, + 1 tie probe) decides, not k alone."""
    knn_module = importlib.import_module("metric_retrieval.evaluation.knn")
    monkeypatch.setattr(knn_module.FaissGpuKNN, "available", classmethod(lambda cls: True))
    monkeypatch.setattr(knn_module.TorchCudaKNN, "available", classmethod(lambda cls: False))
    widths = []

    def search(cls, state, q, k_search):  # the CPU index stands in for the GPU one; record what faiss got
        widths.append(min(k_search + 1, state["g"].shape[0]))
        return knn_module.FaissCpuKNN.search.__func__(cls, state, q, k_search)

    monkeypatch.setattr(knn_module.FaissGpuKNN, "prepare", knn_module.FaissCpuKNN.prepare)
    monkeypatch.setattr(knn_module.FaissGpuKNN, "search", classmethod(search))
    g = integer_embeddings(2100, 3, seed=9)
    q, self_index = g[:40], torch.arange(40) if exclude_self else None  # 40 queries keep it fast

    def search(backend: str) -> torch.Tensor:
        return torch.cat([i for _, _, i in iter_knn(q, g, k, "ip", self_index, backend)])

    if expected == "faiss_cpu":
        with pytest.warns(UserWarning, match="at most 2048 neighbours"):
            got = search("faiss_gpu")
        assert widths == []
    else:
        got = search("faiss_gpu")
        assert widths and max(widths) == knn_module.FAISS_GPU_MAX_K
    assert torch.equal(got, search("torch"))


@pytest.mark.cuda
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_torch_cuda_matches_bruteforce_on_the_gpu(metric):
    x = integer_embeddings(300, 4, seed=11)
    got = knn(x, None, 9, metric=metric, exclude_self=True, backend="torch_cuda", chunk_size=64)
    np.testing.assert_array_equal(got[1].numpy(), brute_knn(x, x, 9, metric, True)[1])


@pytest.mark.cuda
@pytest.mark.skipif("faiss_gpu" not in available_backends(), reason="needs faiss built with GPU support")
@pytest.mark.parametrize("k, exclude_self", [(2047, False), (2046, True), (2048, False), (3000, True)])
def test_faiss_gpu_at_and_beyond_its_limit(k, exclude_self):
    """On a real GPU: the widest search faiss_gpu serves runs on it, a wider one falls back; all exact."""
    x = integer_embeddings(3100, 4, seed=10)
    if k + exclude_self + 1 > 2048:
        with pytest.warns(UserWarning, match="at most 2048 neighbours"):
            got = knn(x, None, k, exclude_self=exclude_self, backend="faiss_gpu")
    else:
        got = knn(x, None, k, exclude_self=exclude_self, backend="faiss_gpu")
    np.testing.assert_array_equal(got[1].numpy(), brute_knn(x, x, k, "ip", exclude_self)[1])


def test_torch_cuda_code_path_on_cpu(monkeypatch):
    knn_module = importlib.import_module("metric_retrieval.evaluation.knn")

    monkeypatch.setattr(knn_module.TorchCudaKNN, "available", classmethod(lambda cls: True))
    monkeypatch.setattr(knn_module.TorchCudaKNN, "device", torch.device("cpu"))
    x = integer_embeddings(40, 4, seed=8)
    for metric in ("ip", "l2"):
        got = knn(x, None, 6, metric=metric, exclude_self=True, backend="torch_cuda")
        np.testing.assert_array_equal(got[1].numpy(), brute_knn(x, x, 6, metric, True)[1])
