"""Benchmark: exact retrieval metrics on SOP-sized data vs raw faiss search vs a full-matrix cdist baseline.

Synthetic SOP-like test set: ``--n`` (60,502) L2-normalised ``--dim`` (512) float32 embeddings in clusters of
2–12 images (≈11k classes, mean ≈5.3 like SOP). Each measurement runs in a fresh subprocess so that its peak
RSS (``resource.getrusage``) is its own:

- ``ours``  — ``evaluation.retrieval_metrics`` end to end (leave-one-out, k = ``--k`` for R@1,10,100,k plus
  precision@1 / R-precision / MAP@R), once per kNN back-end of ``--backends`` (default ``auto``); with
  several, their metrics must agree (exit status 1 otherwise), and a back-end that fell back says so;
- ``faiss`` — raw ``faiss.IndexFlatIP`` add + ``search(x, k)`` on all queries at once, nothing else;
- ``cdist`` — ``torch.cdist(x, x)`` full N×N matrix + ``topk(k+1)`` (60,502² fp32 = 14.6 GB; ``--skip_cdist``).

Reported: seconds, peak RSS of the process and peak RSS above the state right after the data was generated,
and the time ratio ours/faiss (target ≤ 1.2, peak < 2 GB). Exit status 1 when a measurement failed. Not run
by the tests. Quick run, and the GPU back-ends against faiss on the CPU::

    python benchmarks/bench_knn.py --n 10000 --skip_cdist
    python benchmarks/bench_knn.py --modes ours --backends faiss_gpu,torch_cuda,faiss_cpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60502, help="number of embeddings (default: SOP test, 60,502)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    p.add_argument("--k", type=int, default=1000, help="neighbours, i.e. the largest recall K (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_cdist", action="store_true", help="skip the full-matrix torch.cdist baseline")
    p.add_argument("--modes", default="ours,faiss,cdist", help="comma list of measurements to run")
    p.add_argument("--backends", default="auto", help="comma list of kNN back-ends the `ours` mode runs with")
    p.add_argument("--agree_tol", type=float, default=1e-4,
                   help="largest metric difference allowed between back-ends (float summation order differs)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--_mode", default=None, help=argparse.SUPPRESS)  # internal: run one measurement
    p.add_argument("--_backend", default="auto", help=argparse.SUPPRESS)
    return p


def make_data(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SOP-like clustered, L2-normalised embeddings and labels (class sizes 2–12, mean ≈ 5.3)."""
    rng = np.random.default_rng(seed)
    sizes_all = np.arange(2, 13)
    weights = np.exp(-0.18 * (sizes_all - 2))
    weights /= weights.sum()
    sizes = []
    total = 0
    while total < n:
        s = int(rng.choice(sizes_all, p=weights))
        s = min(s, n - total) if n - total >= 2 else s
        sizes.append(s)
        total += s
    labels = np.repeat(np.arange(len(sizes)), sizes)[:n]
    centers = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[labels] + rng.standard_normal((n, dim), dtype=np.float32) * np.float32(2.5 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), labels.astype(np.int64)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def run_one(mode: str, args: argparse.Namespace) -> dict:
    sys.path.insert(0, ROOT)
    import faiss  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from metric_retrieval.evaluation import retrieval_metrics  # noqa: PLC0415

    x, labels = make_data(args.n, args.dim, args.seed)
    base = _rss_mb()
    extra: dict = {}
    t0 = time.perf_counter()
    if mode == "ours":
        ks = sorted({1, 10, 100, args.k})
        with warnings.catch_warnings(record=True) as caught:  # e.g. faiss_gpu falling back for a large k
            warnings.simplefilter("always")
            extra["metrics"] = retrieval_metrics(x, labels, ks=ks, backend=args._backend)
        extra["warnings"] = [str(w.message) for w in caught]
    elif mode == "faiss":
        index = faiss.IndexFlatIP(args.dim)
        index.add(x)
        index.search(x, args.k)
    elif mode == "cdist":
        t = torch.from_numpy(x)
        d = torch.cdist(t, t)
        d.topk(args.k + 1, dim=1, largest=False)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - t0
    peak = _peak_mb()
    name = f"ours[{args._backend}]" if mode == "ours" else mode
    return {"mode": name, "seconds": seconds, "peak_rss_mb": peak, "data_rss_mb": base,
            "peak_above_data_mb": peak - base, **extra}


def main(args: argparse.Namespace) -> list[dict]:
    if args._mode:
        print(json.dumps(run_one(args._mode, args)))
        return []
    modes = [m for m in args.modes.split(",") if m and not (m == "cdist" and args.skip_cdist)]
    n_classes = len(np.unique(make_data(args.n, 8, args.seed)[1]))
    print(f"data: n={args.n} dim={args.dim} k={args.k} classes={n_classes} threads={os.cpu_count()}")
    runs = [(m, b) for m in modes for b in (args.backends.split(",") if m == "ours" else ["auto"])]
    results = []
    for mode, backend in runs:
        name = f"ours[{backend}]" if mode == "ours" else mode
        cmd = [sys.executable, os.path.abspath(__file__), "--_mode", mode, "--_backend", backend, "--n", str(args.n),
               "--dim", str(args.dim), "--k", str(args.k), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
            results.append({"mode": name, "failed": True, "returncode": proc.returncode})
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{name:6s} {res['seconds']:9.2f} s   peak RSS {res['peak_rss_mb']:8.0f} MB "
              f"({res['peak_above_data_mb']:+.0f} MB above data)")
        if "metrics" in res:
            m = res["metrics"]
            print("       " + "  ".join(f"{key}={val:.4f}" for key, val in m.items() if isinstance(val, float)))
            for message in res["warnings"]:
                print(f"       warning: {message}")
    by = {r["mode"]: r for r in results if not r.get("failed")}
    ours = [r for r in by.values() if "metrics" in r]
    for r in ours:
        if "faiss" in by:
            print(f"{r['mode']}/faiss time ratio: {r['seconds'] / by['faiss']['seconds']:.3f} (target <= 1.2); "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (target < 2048)")
        if r is not ours[0]:
            print(f"{r['mode']}/{ours[0]['mode']} time ratio: {r['seconds'] / ours[0]['seconds']:.3f}")
    if len(ours) > 1:
        diff = max(abs(r["metrics"][key] - ours[0]["metrics"][key]) for r in ours[1:]
                   for key, val in ours[0]["metrics"].items() if isinstance(val, float))
        agree = diff <= args.agree_tol
        print(f"metrics of {len(ours)} back-ends {'agree' if agree else 'DIFFER'}: largest difference {diff:.2e} "
              f"(allowed {args.agree_tol:g})")
        if not agree:
            results.append({"mode": "agreement", "failed": True, "largest_difference": diff})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                       "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(1 if any(r.get("failed") for r in main(get_args_parser().parse_args())) else 0)
