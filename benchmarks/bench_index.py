"""Benchmark: persistent-index types against exact search, embedding-stream overhead, and the served /search latency.

Three parts, each with its baseline measured in the same run (``--parts index,stream,serve``):

- ``index``: ``--n`` (1,000,000) clustered, L2-normalised ``--dim`` (512) vectors (``--clusters`` Gaussian
  clusters, unit-normalised after noise) and ``--queries`` held-out queries from the same clusters. For
  ``Flat`` (exact, the reference), ``IVF<nlist>,Flat`` at each ``--nprobe``, ``IVF<nlist>,PQ<code>`` for each
  ``--pq`` code (``64np``: 64 one-byte codes, ``np``: no polysemous training, which only reorders the codes and
  takes minutes; ``256x4fs``: 256 four-bit codes searched by fast-scan SIMD), ``IVF<nlist>,<--refine_base>,<r>``
  for each ``--refine`` stage ``r`` (``RFlat``: full vectors in RAM; ``Refine(SQ8)``: one byte a dimension;
  ``Refine(PQ128)``: 128 bytes a vector; ``RFlatDisk``: full vectors in a file of the index folder, read for the
  candidates only) at each ``--nprobe`` × ``--k_factor``, and optionally ``HNSW32``: build (train + add) seconds,
  index memory (the bytes of the serialised faiss index, what it holds in RAM) and bytes per vector, the bytes
  per vector on disk only (``RFlatDisk``'s vectors file), queries/s with ``--threads`` threads, recall@10 of the
  true (Flat) neighbours, and the QPS and memory ratios against Flat (issue 28 target at 1M x 512: recall@10
  >= 0.95 at >= 20x Flat's QPS with <= 1/8 of its memory). All types are built through
  :class:`metric_retrieval.retrieval.index_store.IndexStore`.
- ``stream``: images/s of ``index.py build``'s embedding (:func:`metric_retrieval.retrieval.catalogue.embed_catalogue`:
  loader, bad-file guard, atomic shard writes, progress bar) and of the whole build
  (:func:`metric_retrieval.retrieval.indexing.build_index` with ``Flat``: model load, shards, index, metadata) against a
  bare loop over the same loader and model that keeps the embeddings in memory, on ``--stream_images`` synthetic JPEGs
  with a random-weight resnet18; the median over interleaved rounds of each round's ratio (target >= 0.9).
- ``serve``: ``/search`` of :mod:`metric_retrieval.retrieval.serve_app` on a uvicorn server at 127.0.0.1 (a free port),
  hit by ``--clients`` (8) concurrent clients for ``--requests`` requests in all or ``--max_seconds``, whichever comes
  first; p50 / p99 latency and requests/s.

Quick run (a few minutes on 2 cores)::

    python benchmarks/bench_index.py --n 100000 --nlist 1024 --parts index
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="index,stream,serve")
    p.add_argument("--n", type=int, default=1_000_000, help="catalogue vectors")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=10_000, help="Gaussian clusters the vectors are drawn around")
    p.add_argument("--noise", type=float, default=0.5, help="per-vector noise norm relative to the unit centre")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=4096, help="IVF lists")
    p.add_argument("--nprobe", default="8,16,32,64", help="IVF nprobe values to measure")
    p.add_argument("--pq", default="64np,128np,256x4fs",
                   help="IVF-PQ codes, each giving IVF<nlist>,PQ<code>: <m>np (m bytes per vector, no polysemous "
                        "training), <m>x4fs (m 4-bit codes, fast-scan); empty: no IVF-PQ")
    p.add_argument("--no_ivf_flat", action="store_true", help="skip IVF<nlist>,Flat")
    p.add_argument("--refine_base", default="PQ64x4fs", help="the coarse codes under each refine stage")
    p.add_argument("--refine", default="RFlat,Refine(SQ8),Refine(PQ128),RFlatDisk",
                   help="refine stages, each giving IVF<nlist>,<refine_base>,<stage>; empty: none")
    p.add_argument("--k_factor", default="16", help="refine k_factor values to measure")
    p.add_argument("--train_size", type=int, default=200_000)
    p.add_argument("--hnsw", action="store_true", help="also HNSW32 (slow to build)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gpu", action="store_true", help="index part: train and search on the GPUs (faiss-gpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream_images", type=int, default=768)
    p.add_argument("--stream_shard", type=int, default=256, help="images per shard in the stream part")
    p.add_argument("--stream_batch", type=int, default=64, help="loader batch size in the stream part")
    p.add_argument("--stream_workers", type=int, default=1, help="loader processes in the stream part")
    p.add_argument("--stream_rounds", type=int, default=5, help="interleaved rounds of the stream part")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--max_seconds", type=float, default=60.0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def clustered(n: int, dim: int, clusters: int, noise: float, rng: np.random.Generator,
              centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around random unit ``centres``; generated in blocks to keep the peak low."""
    if centres is None:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = centres[rng.integers(0, len(centres), e - s)]
        x += rng.standard_normal((e - s, dim), dtype=np.float32) * (noise / np.sqrt(dim))
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centres


def _split_top(spec: str) -> list[str]:
    """Split a comma list at the commas outside parentheses (``RFlat,Refine(PQ16x4,8)`` has two items)."""
    items, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [item for item in [*items, cur] if item]


def _timed_search(store, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    ids = store.search(q, k)[1]
    return ids, len(q) / (time.perf_counter() - t)


def bench_index(args: argparse.Namespace) -> list[dict]:
    import faiss

    from metric_retrieval.retrieval.index_store import IndexStore, gpu_count, to_gpus

    faiss.omp_set_num_threads(args.threads)
    if args.gpu and not gpu_count():
        raise SystemExit("error: --gpu: faiss sees no GPU (the faiss-gpu package and a CUDA GPU are needed)")
    rng = np.random.default_rng(args.seed)
    x, centres = clustered(args.n, args.dim, args.clusters, args.noise, rng)
    q, _ = clustered(args.queries, args.dim, args.clusters, args.noise, rng, centres)
    sample = x[np.sort(rng.choice(args.n, min(args.train_size, args.n), replace=False))]
    types = (["Flat"] + ([] if args.no_ivf_flat else [f"IVF{args.nlist},Flat"])
             + [f"IVF{args.nlist},PQ{code}" for code in args.pq.split(",") if code]
             + [f"IVF{args.nlist},{args.refine_base},{r}" for r in _split_top(args.refine)]
             + (["HNSW32"] if args.hnsw else []))
    rows, truth, flat = [], None, None
    with tempfile.TemporaryDirectory() as tmp:
        for factory in types:
            t = time.perf_counter()
            store = IndexStore.create(tmp, args.dim, factory, "ip", lambda: sample, args.seed, use_gpu=args.gpu)
            for s in range(0, args.n, 100_000):
                n = len(x[s:s + 100_000])
                store.add(x[s:s + 100_000], [""] * n, [None] * n, [""] * n)  # no items: only the vectors count
            build = time.perf_counter() - t
            memory = faiss.serialize_index(store.index).nbytes
            disk = store.vectors.count * args.dim * 4 if store.vectors is not None else 0
            if args.gpu:
                store.index = to_gpus(store.index)
            if store.refines:
                settings = [{"nprobe": int(v), "k_factor": int(f)} for v in args.nprobe.split(",")
                            for f in args.k_factor.split(",")]
            elif factory.startswith("IVF"):
                settings = [{"nprobe": int(v)} for v in args.nprobe.split(",")]
            elif factory.startswith("HNSW"):
                settings = [{"ef_search": v} for v in (32, 64, 128)]
            else:
                settings = [{}]
            for setting in settings:
                store.set_search_params(**setting)
                ids, qps = _timed_search(store, q, 10)
                if truth is None:
                    truth, flat = ids, {"qps": qps, "memory": memory}
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
                row = {"index": factory, **setting, **({"on": type(store.index).__name__} if args.gpu else {}),
                       "build_s": round(build, 1), "memory_mb": round(memory / 2**20, 1),
                       "bytes_per_vector": round(memory / args.n, 1),
                       **({"disk_bytes_per_vector": round(disk / args.n, 1)} if disk else {}),
                       "memory_vs_flat": round(memory / flat["memory"], 4), "qps": round(qps, 1),
                       "qps_vs_flat": round(qps / flat["qps"], 1), "recall@10": round(recall, 4)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del store
    return rows


def _stream_fixture(tmp: Path, n: int) -> tuple[Path, Path]:
    import torch
    from PIL import Image

    from metric_retrieval import models

    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.clip(rng.integers(0, 256, 3)[None, None] + rng.integers(-30, 31, (96, 128, 3)), 0, 255)
        (tmp / "images").mkdir(exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(tmp / "images" / f"{i:05d}.jpg", quality=90)
    torch.manual_seed(0)
    model = models.build_model("resnet18", "baseline", 128, 0)
    ckpt = tmp / "model.pth"
    torch.save({"model": model.state_dict(), "config": {"transform": "cgd", "image_size": 64},
                "model_config": {"backbone": "resnet18", "head": "baseline", "feature_dim": 128,
                                 "num_classes": 0, "options": {}}}, ckpt)
    return tmp / "images", ckpt


def bench_stream(args: argparse.Namespace) -> dict:
    """Images/s of a bare forward loop, of :func:`embed_catalogue` and of the whole ``index.py build`` (Flat).

    All three read the same images with the same loader settings (``--stream_batch``, ``--stream_workers``) and
    ``--threads`` torch threads. The machine's load moves absolute rates by several times, so each round runs
    the three back to back, in ABC / CBA order on alternate rounds (a drift in load hits both sides of a ratio
    alike), and the figure is the median over ``--stream_rounds`` rounds of each round's ratio.
    """
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    from metric_retrieval.data.batch import collate
    from metric_retrieval.retrieval.catalogue import embed_catalogue, read_catalogue
    from metric_retrieval.retrieval.embedder import Embedder
    from metric_retrieval.retrieval.indexing import build_index
    from metric_retrieval.training.distributed import DistInfo

    torch.set_num_threads(args.threads)
    batch, workers = args.stream_batch, args.stream_workers
    with tempfile.TemporaryDirectory() as tmp:
        images, ckpt = _stream_fixture(Path(tmp), args.stream_images)
        embedder, cat = Embedder(ckpt), read_catalogue(images)

        def bare(run: str) -> None:  # the embeddings kept in memory: no shards, no bad-file guard, no bar
            loader = DataLoader(embedder.dataset(cat.paths), batch_size=batch, num_workers=workers,
                                collate_fn=collate)
            [embedder(b[0]) for b in loader]

        def stream(run: str) -> None:
            embed_catalogue(embedder, cat, Path(tmp) / f"shards{run}", shard_size=args.stream_shard,
                            batch_size=batch, workers=workers)

        def build(run: str) -> None:  # index.py build: model load, catalogue, shards, Flat index, meta, items
            opts = {"factory": "Flat", "metric": "ip", "shard_size": args.stream_shard, "batch_size": batch,
                    "workers": workers, "train_size": 1, "seed": 0}
            build_index(str(ckpt), str(images), Path(tmp) / f"index{run}", opts, DistInfo())

        def rate(fn, run: str) -> float:
            t = time.perf_counter()
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # the tqdm bar, as in the CLI
                fn(run)
            return len(cat) / (time.perf_counter() - t)

        parts = {"bare": bare, "stream": stream, "build": build}
        for fn in parts.values():  # warm-up: page cache, allocator, thread pools
            rate(fn, "warm")
        rates = {name: [] for name in parts}
        for run in range(args.stream_rounds):
            for name in (list(parts) if run % 2 == 0 else list(parts)[::-1]):
                rates[name].append(rate(parts[name], str(run)))
    row = {"images": len(cat), "batch": batch, "workers": workers, "threads": args.threads,
           "rounds": args.stream_rounds, **{f"{k}_img_s": round(float(np.median(v)), 1) for k, v in rates.items()}}
    for name in ("stream", "build"):
        ratios = np.array(rates[name]) / np.array(rates["bare"])
        row[f"{name}_ratio"] = round(float(np.median(ratios)), 3)
        row[f"{name}_ratio_min"] = round(float(ratios.min()), 3)
    print(json.dumps(row), flush=True)
    return row


def bench_serve(args: argparse.Namespace) -> dict:
    """``/search`` at ``--clients`` concurrent clients (the load loop of ``bench_serve.py``)."""
    import torch

    import index as index_cli
    from benchmarks.bench_serve import Server, load
    from metric_retrieval.retrieval.indexing import open_index
    from metric_retrieval.retrieval.serve_app import create_app

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        images, ckpt = _stream_fixture(Path(tmp), 256)
        assert index_cli.main(["build", "--checkpoint", str(ckpt), "--images", str(images), "--out",
                               f"{tmp}/index", "--workers", "0", "--no_progress", "--device", "cpu"]) == 0
        store, embedder = open_index(f"{tmp}/index")
        bodies = [p.read_bytes() for p in sorted(images.glob("*.jpg"))[:32]]
        server = Server(create_app(store, embedder, k=10))
        try:
            stats = load(server.url, bodies, args.clients, args.requests, args.max_seconds)
        finally:
            server.stop()
    row = {"clients": args.clients, "requests": stats["requests"], "p50_ms": round(stats["p50_ms"], 1),
           "p99_ms": round(stats["p99_ms"], 1), "req_s": round(stats["req_s"], 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    parts = args.parts.split(",")
    result = {"args": vars(args)}
    for name, fn in (("index", bench_index), ("stream", bench_stream), ("serve", bench_serve)):
        if name in parts:
            result[name] = fn(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
