"""Certified low-precision kNN (knn_bf16) against brute-force exact search on adversarial data: ties, near-ties,
duplicated vectors, k and K larger than the gallery; the error bound itself; the back-end registry."""
import importlib

import helpers_eval
import numpy as np
import pytest
import torch
from helpers_eval import brute_metrics, integer_embeddings

from metric_retrieval.evaluation import knn_bf16
from metric_retrieval.evaluation.knn import knn
from metric_retrieval.evaluation.knn_registry import auto_order, available_backends, resolve_backend
from metric_retrieval.evaluation.metrics import retrieval_metrics


@pytest.fixture(autouse=True)
def bf16_everywhere(monkeypatch):
    """The certified search is correct on any CPU (bf16 is emulated where not native): test it everywhere.
    The brute-force metrics rank by the exact scores' definition (float64 sums rounded to float32)."""
    monkeypatch.setattr(knn_bf16.Bf16KNN, "available", classmethod(lambda cls: True))
    monkeypatch.setattr(helpers_eval, "brute_rank", brute_rank_fp32)


def exact_reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The exact scores by definition: float64 inner products of the float32 inputs, rounded to float32."""
    return (q.astype(np.float64) @ g.astype(np.float64).T).astype(np.float32)


def brute_rank_fp32(q: np.ndarray, g: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    assert metric == "ip"
    s = exact_reference(q, g).astype(np.float64)
    order = np.stack([np.lexsort((np.arange(len(g)), -row)) for row in s])
    return order, np.take_along_axis(s, order, axis=1)


def brute_topk(q: np.ndarray, g: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    s = exact_reference(q, g)
    order = np.stack([np.lexsort((np.arange(len(g)), -row)) for row in s])
    if exclude_self:
        order = order[order != np.arange(len(q))[:, None]].reshape(len(q), -1)
    order = order[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def near_ties(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors in pairs that differ by one float32 ulp in one component, plus exact duplicates: scores tie
    or differ in the last bits, far below the bf16 error bound."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    nudged = base.copy()
    nudged[:, 0] = np.nextafter(nudged[:, 0], np.float32(np.inf))
    return np.concatenate([base, nudged, base, nudged])[rng.permutation(4 * (n // 4))]


DATASETS = {
    "integer ties": lambda: integer_embeddings(90, 4, seed=1),
    "near ties and duplicates": lambda: near_ties(120, 16, seed=2),
    "all identical": lambda: np.ones((20, 3), dtype=np.float32),
    "random, unnormalised": lambda: np.random.default_rng(3).normal(0, 50, (150, 32)).astype(np.float32),
}


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_certified_knn_equals_exact_search(name, exclude_self):
    x = DATASETS[name]()
    k = min(11, len(x) - 1)
    s, i = knn(x, None, k, exclude_self=exclude_self, backend="bf16", chunk_size=17)
    bs, bi = brute_topk(x, x, k, exclude_self)
    np.testing.assert_array_equal(i.numpy(), bi)
    np.testing.assert_array_equal(s.numpy(), bs)


def test_certified_knn_query_gallery_split_and_whole_gallery():
    q, g = near_ties(40, 8, seed=4), near_ties(64, 8, seed=5)
    for k in (1, 5, 64):  # 64: the whole gallery, every item a candidate
        s, i = knn(q, g, k, backend="bf16")
        bs, bi = brute_topk(q, g, k)
        np.testing.assert_array_equal(i.numpy(), bi)
        np.testing.assert_array_equal(s.numpy(), bs)
    with pytest.raises(ValueError, match="k=65 exceeds"):
        knn(q, g, 65, backend="bf16")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 1e-3, 300.0])
def test_error_bound_holds_for_every_pair(dtype, scale):
    """|a − s| ≤ ρ|a| + E on every pair, with components down to fp16's subnormal range."""
    rng = np.random.default_rng(6)
    q = torch.from_numpy((rng.standard_normal((64, 48)) * scale).astype(np.float32))
    g = torch.from_numpy((rng.standard_normal((500, 48)) * scale * rng.uniform(0, 1, (500, 1))).astype(np.float32))
    if dtype == torch.float16 and scale > 100:
        g, q = g / 64, q / 64  # keep ‖q‖‖g‖ within fp16's range (65,504)
    gallery = knn_bf16.LowPrecisionGallery.build(g, dtype)
    a, bound = knn_bf16.candidate_scores(q, gallery)
    s = torch.from_numpy(exact_reference(q.numpy(), g.numpy())).double()
    a = a.double()
    err = (a - s).abs()
    assert bool((err <= bound.rho * a.abs() + bound.e[:, None]).all())
    assert float(err.max()) > 0  # the low-precision scores really are approximate


def test_fp16_certified_topk_matches_exact():
    x = torch.from_numpy(near_ties(80, 12, seed=7))
    gallery = knn_bf16.LowPrecisionGallery.build(x, torch.float16)
    s, i = knn_bf16.certified_topk(x, gallery, 9)
    bs, bi = brute_topk(x.numpy(), x.numpy(), 9)
    np.testing.assert_array_equal(i.numpy(), bi)
    np.testing.assert_array_equal(s.numpy(), bs)


def test_non_finite_embeddings_are_refused():
    x = torch.ones(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        knn(x, None, 2, backend="bf16")
    big = torch.full((4, 8), 200.0)  # ‖x‖² = 320,000: beyond fp16's 65,504
    with pytest.raises(ValueError, match="overflow torch.float16"):
        knn_bf16.certified_topk(big, knn_bf16.LowPrecisionGallery.build(big, torch.float16), 2)


def labels_for(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


@pytest.fixture(params=[64, 3, 1], ids=["blocks64", "blocks3", "blocks1"])
def column_block(request, monkeypatch):
    """The counted metrics summarise COLUMN_BLOCK columns by their maximum; at 64 these small galleries have
    fewer blocks than the top list is long (the exact top-k stands in), at 3 the block bound and a partial
    last block are used, at 1 every block is one column."""
    monkeypatch.setattr(knn_bf16, "COLUMN_BLOCK", request.param)
    return request.param


@pytest.mark.parametrize("name", ["integer ties", "near ties and duplicates", "all identical"])
def test_counted_recall_and_map_equal_brute_force(name, column_block):
    x = DATASETS[name]()
    lab = labels_for(len(x), 7, seed=8)
    ks = (1, 2, 4, 8, 16, 1000)  # 1000: larger than the gallery, clamped to it
    got = retrieval_metrics(x, lab, ks=ks, backend="bf16", chunk_size=13)
    ref = brute_metrics(x, lab, ks=tuple(min(k, len(x) - 1) for k in ks))
    for k in ks:
        assert got[f"recall@{k}"] == ref[f"recall@{min(k, len(x) - 1)}"], k
    for key in ("precision@1", "r_precision", "map@r", "num_excluded_queries"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_counted_metrics_with_a_separate_gallery_and_large_r(column_block):
    q, g = integer_embeddings(50, 4, seed=9), integer_embeddings(200, 4, seed=10)
    ql, gl = labels_for(50, 3, seed=11), labels_for(200, 3, seed=12)  # R ≈ 67 per query, above r_cap = 16
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 5, 50), backend="bf16", r_cap=16)
    ref = brute_metrics(q, ql, g, gl, ks=(1, 5, 50))
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, abs=1e-12), key


def test_counted_metrics_equal_faiss_on_sop_like_data(column_block):
    """On spread-out float data the float32 BLAS path and the certified path agree to every digit."""
    rng = np.random.default_rng(13)
    centers = rng.standard_normal((60, 32)).astype(np.float32)
    lab = rng.integers(0, 60, 600)
    x = centers[lab] + rng.standard_normal((600, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ks = (1, 10, 100, 1000)
    assert retrieval_metrics(x, lab, ks=ks, backend="bf16") == retrieval_metrics(x, lab, ks=ks, backend="torch")


def test_registry_priorities_limits_and_fallbacks():
    order = auto_order()
    assert order.index("faiss_gpu") < order.index("torch_cuda") < order.index("bf16") < order.index("faiss_cpu")
    assert order.index("faiss_cpu") < order.index("torch") < order.index("fp16_cuda")  # opt-in: never "auto"
    assert resolve_backend("auto", 10) == "bf16"
    assert resolve_backend("auto", 10, "l2") == available_backends()[1]  # bf16 serves ip only
    assert resolve_backend("auto", knn_bf16.Bf16KNN.max_k + 1) != "bf16"
    with pytest.warns(UserWarning, match="k <= 256 only"):
        assert resolve_backend("bf16", 300) != "bf16"
    with pytest.warns(UserWarning, match="serves metric ip only"):
        assert resolve_backend("bf16", 3, "l2") != "bf16"


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    module = importlib.import_module("metric_retrieval.evaluation.knn_bf16")
    monkeypatch.setattr(module, "native_bf16", module.native_bf16.__wrapped__)
    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(module, "Path", lambda _: fake)
    fake.write_text("flags\t: fpu sse avx2 avx512f\n")
    assert not module.native_bf16()
    fake.write_text("flags\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert module.native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
