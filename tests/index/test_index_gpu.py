"""The index on the GPU (:func:`metric_retrieval.retrieval.index_store.to_gpus`): on a CPU machine through faked GPUs,
and for real with faiss-gpu on a CUDA machine (``pytest -m cuda``)."""
from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from metric_retrieval.retrieval import index_store
from metric_retrieval.retrieval.index_store import IndexStore, gpu_count, on_gpu, to_gpus


class FakeGpuFaiss:
    """faiss-cpu seen as a faiss-gpu build with ``n`` GPUs, for the two calls :func:`to_gpus` / ``to_cpu`` make.

    A "GPU" copy is a CPU clone of the index; ``n`` > 1 with ``shard`` gives a real faiss ``IndexShards`` of ``n``
    clones, each holding a contiguous 1/n of the vectors, as faiss's GPU cloner does. ``fail`` makes the cloner
    raise like faiss for a type without a GPU version. Every clone call is recorded as ``(shard, ngpu)``.
    """

    StandardGpuResources = object  # its presence marks a GPU build (gpu_count)

    class GpuMultipleClonerOptions:
        shard = False

    def __init__(self, n: int, fail: bool = False) -> None:
        self.n, self.fail, self.calls, self.alive = n, fail, [], []  # alive: the shards' parts, owned by python

    def __getattr__(self, name):
        return getattr(faiss, name)

    def get_num_gpus(self) -> int:
        return self.n

    def GpuParameterSpace(self):  # noqa: N802 - faiss's name
        return faiss.ParameterSpace()

    def index_cpu_to_all_gpus(self, index, options, ngpu):
        self.calls.append((options.shard, ngpu))
        if self.fail:
            raise RuntimeError("Error in faiss::gpu::ToGpuCloner: This index type is not implemented on GPU.")
        if not options.shard:
            return faiss.clone_index(index)
        successive = isinstance(faiss.downcast_index(index), faiss.IndexFlat)  # as faiss's GpuCloner
        shards = faiss.IndexShards(index.d, True, successive)  # threaded
        for _ in range(ngpu):
            self.alive.append(faiss.clone_index(index))
            self.alive[-1].reset()
            shards.add_shard(self.alive[-1])
        if index.ntotal:
            ids, vectors = _vectors(index)
            shards.add_with_ids(vectors, ids)
        return shards

    def index_gpu_to_cpu(self, shards):
        parts = shard_parts(shards)
        ids, vectors = zip(*(_vectors(p) for p in parts))
        merged = faiss.clone_index(parts[0])
        merged.reset()
        order = np.argsort(np.concatenate(ids))
        if len(order):
            merged.add(np.concatenate(vectors)[order])
        return merged


def shard_parts(shards) -> list:
    """The sub-indexes of an ``IndexShards``."""
    return [faiss.downcast_index(shards.at(i)) for i in range(shards.count())]


def _vectors(index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) an index holds: a Flat's rows, or an IVF's inverted lists."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or not index.ntotal:
        return np.arange(index.ntotal), index.reconstruct_n(0, index.ntotal)
    lists = ivf.invlists
    ids = np.concatenate([faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n)).copy()
                          for n in range(ivf.nlist)])
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # any ids, not only 0..ntotal-1
    return ids, np.stack([index.reconstruct(int(i)) for i in ids])


def _data(n: int = 600, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, x[rng.choice(n, 20, replace=False)] + 0.05 * rng.standard_normal((20, d)).astype(np.float32)


def _store(root, x, factory="IVF8,Flat", use_gpu=False) -> IndexStore:
    store = IndexStore.create(root, x.shape[1], factory, "ip", lambda: x[:400], seed=3, use_gpu=use_gpu,
                              model={"checkpoint": "m.pth", "fingerprint": "f"})
    store.add(x, [f"p{i}" for i in range(len(x))], [None] * len(x), [str(i) for i in range(len(x))])
    store.save()
    return store


def test_ivf_index_trains_and_searches_sharded_over_three_fake_gpus_as_on_the_cpu(tmp_path, monkeypatch):
    x, q = _data()
    cpu = _store(tmp_path / "cpu", x)
    cpu.set_search_params(nprobe=3)
    want = cpu.search(q, 10)
    fake = FakeGpuFaiss(3)
    monkeypatch.setattr(index_store, "_faiss", lambda: fake)
    built = _store(tmp_path / "gpu", x, use_gpu=True)  # trained on the GPUs, filled on the CPU
    assert fake.calls == [(True, 3)] and not on_gpu(built.index)
    np.testing.assert_array_equal(faiss.extract_index_ivf(built.index).quantizer.reconstruct_n(0, 8),
                                  faiss.extract_index_ivf(cpu.index).quantizer.reconstruct_n(0, 8))
    store = IndexStore.open(tmp_path / "gpu", use_gpu=True)
    assert fake.calls[-1] == (True, 3) and on_gpu(store.index)
    assert type(store.index).__name__ == "IndexShards" and [p.ntotal for p in shard_parts(store.index)] == [200] * 3
    store.set_search_params(nprobe=3)  # through GpuParameterSpace, onto every shard
    assert [faiss.extract_index_ivf(p).nprobe for p in shard_parts(store.index)] == [3] * 3
    got = store.search(q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    store.save()  # the shards merged back: the same index on disk
    monkeypatch.setattr(index_store, "_faiss", lambda: faiss)
    reopened = IndexStore.open(tmp_path / "gpu")
    assert not on_gpu(reopened.index) and len(reopened) == reopened.index.ntotal == 600
    reopened.set_search_params(nprobe=3)
    np.testing.assert_array_equal(reopened.search(q, 10)[1], want[1])


def test_one_gpu_holds_the_whole_index_and_no_gpu_keeps_it_on_the_cpu(tmp_path, monkeypatch):
    x, q = _data()
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    assert gpu_count() == 0 and to_gpus(flat) is flat  # the faiss-cpu wheel of this machine
    fake = FakeGpuFaiss(1)
    monkeypatch.setattr(index_store, "_faiss", lambda: fake)
    one = to_gpus(flat)
    assert fake.calls == [(False, 1)] and one is not flat and one.ntotal == len(x)
    np.testing.assert_array_equal(one.search(q, 5)[1], flat.search(q, 5)[1])


def test_a_type_without_a_gpu_version_stays_on_the_cpu_with_a_warning(tmp_path, monkeypatch, caplog):
    x, q = _data()
    _store(tmp_path / "hnsw", x, "HNSW8")
    monkeypatch.setattr(index_store, "_faiss", lambda: FakeGpuFaiss(2, fail=True))
    with caplog.at_level(logging.WARNING, logger="metric_retrieval.retrieval.index_store"):
        store = IndexStore.open(tmp_path / "hnsw", use_gpu=True)
    assert not on_gpu(store.index) and "has no faiss GPU version" in caplog.text and "not implemented" in caplog.text
    assert store.search(q, 3)[1].shape == (20, 3)


@pytest.mark.cuda
def test_faiss_gpu_builds_and_searches_the_index_like_the_cpu(tmp_path):
    """faiss-gpu for real: IVF trained on the GPUs, searched there (IndexShards over several), same neighbours."""
    assert gpu_count() > 0, "faiss sees no GPU: install faiss-gpu (benchmarks/gpu_check.sh does)"
    x, q = _data(n=20_000, d=64)
    cpu = _store(tmp_path / "cpu", x, "IVF64,Flat")
    gpu = _store(tmp_path / "gpu", x, "IVF64,Flat", use_gpu=True)
    store = IndexStore.open(tmp_path / "gpu", use_gpu=True)
    assert on_gpu(store.index) and (gpu_count() == 1 or type(store.index).__name__ == "IndexShards")
    for s in (cpu, gpu, store):
        s.set_search_params(nprobe=64)  # every list: exact, so both must find the true neighbours
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    for s in (cpu, gpu, store):
        ids = s.search(q, 10)[1]
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)]) >= 0.99
