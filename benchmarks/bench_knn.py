"""Benchmark: exact retrieval metrics on SOP-sized data vs raw faiss search vs a full-matrix cdist baseline.

Measurements run in ABBA order (``--rounds`` times the sequence of modes, then the same reversed), each in a
fresh subprocess; each reports CPU-seconds (``time.process_time``: all threads of the process, the measure that
stays meaningful on a shared, loaded machine), wall seconds and peak RSS. The ratios are of the medians.

Synthetic SOP-like test set: ``--n`` (60,502) L2-normalised ``--dim`` (512) float32 embeddings in clusters of
2–12 images (≈11k classes, mean ≈5.3 like SOP). Each measurement runs in a fresh subprocess so that its peak
RSS (``resource.getrusage``) is its own:

- ``ours``  — ``evaluation.retrieval_metrics`` end to end (leave-one-out, k = ``--k`` for R@1,10,100,k plus
  precision@1 / R-precision / MAP@R), once per kNN back-end of ``--backends`` (default ``auto``); with
  several, their metrics must agree (exit status 1 otherwise), and a back-end that fell back says so;
- ``faiss`` — raw ``faiss.IndexFlatIP`` add + ``search(x, k)`` on all queries at once, nothing else;
- ``cdist`` — ``torch.cdist(x, x)`` full N×N matrix + ``topk(k+1)`` (60,502² fp32 = 14.6 GB; ``--skip_cdist``).

Reported: CPU-seconds, wall seconds, peak RSS of the process and peak RSS above the state right after the data
was generated, the ratios ours/faiss (issue 28 target with a certified low-precision back-end: ≤ 0.5 CPU-time,
peak < 2 GB), whether every back-end's metrics print the same to 4 decimals, the load average and the versions.
Exit status 1 when a measurement failed or the metrics differ. Not run by the tests. Quick run, and the GPU
back-ends against faiss on the CPU::

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
# the command lines' thread policy (metric_retrieval/utils/thread_policy.py), for every measurement alike: spinning
# OpenMP threads would bill their wait as CPU-seconds on this shared machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60502, help="number of embeddings (default: SOP test, 60,502)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    p.add_argument("--k", type=int, default=1000, help="neighbours, i.e. the largest recall K (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_cdist", action="store_true", help="skip the full-matrix torch.cdist baseline")
    p.add_argument("--modes", default="ours,faiss,cdist", help="comma list of measurements to run")
    p.add_argument("--rounds", type=int, default=1, help="ABBA rounds: each mode runs 2 x rounds times")
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
    c0 = time.process_time()
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
    cpu = time.process_time() - c0
    peak = _peak_mb()
    name = f"ours[{args._backend}]" if mode == "ours" else mode
    return {"mode": name, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "data_rss_mb": base,
            "peak_above_data_mb": peak - base, **extra}


def environment() -> str:
    """Machine, load and versions, for the report."""
    import faiss  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, ROOT)
    from metric_retrieval.evaluation.knn import available_backends  # noqa: PLC0415

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    flags = open("/proc/cpuinfo").read()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f" {f}" in flags]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {model}, {os.cpu_count()} logical CPUs, bf16 flags: {', '.join(bf16) or 'none'}; "
            f"load average {load}\nversions: python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"faiss {faiss.__version__}, numpy {np.__version__}; kNN back-ends here: {', '.join(available_backends())}")


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def main(args: argparse.Namespace) -> list[dict]:
    if args._mode:
        print(json.dumps(run_one(args._mode, args)))
        return []
    modes = [m for m in args.modes.split(",") if m and not (m == "cdist" and args.skip_cdist)]
    n_classes = len(np.unique(make_data(args.n, 8, args.seed)[1]))
    print(environment())
    print(f"data: n={args.n} dim={args.dim} k={args.k} classes={n_classes}; {args.rounds} ABBA round(s)")
    runs = [(m, b) for m in modes for b in (args.backends.split(",") if m == "ours" else ["auto"])]
    order = [run for _ in range(args.rounds) for run in runs + runs[::-1]]
    results = []
    for mode, backend in order:
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
        print(f"{name:18s} {res['cpu_seconds']:9.2f} CPU-s {res['seconds']:8.2f} s wall   "
              f"peak RSS {res['peak_rss_mb']:8.0f} MB ({res['peak_above_data_mb']:+.0f} MB above data)")
        for message in res.get("warnings", []):
            print(f"       warning: {message}")
    ok = [r for r in results if not r.get("failed")]
    names = list(dict.fromkeys(r["mode"] for r in ok))
    med = {n: {key: _median([r[key] for r in ok if r["mode"] == n]) for key in ("cpu_seconds", "seconds",
                                                                                 "peak_rss_mb")} for n in names}
    print(f"medians of {2 * args.rounds} run(s) each; load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for n in names:
        print(f"  {n:18s} {med[n]['cpu_seconds']:9.2f} CPU-s {med[n]['seconds']:8.2f} s wall  "
              f"peak RSS {med[n]['peak_rss_mb']:.0f} MB")
    ours = [n for n in names if n.startswith("ours")]
    for n in ours:
        if "faiss" in med:
            print(f"{n}/faiss: CPU-time ratio {med[n]['cpu_seconds'] / med['faiss']['cpu_seconds']:.3f}, "
                  f"wall ratio {med[n]['seconds'] / med['faiss']['seconds']:.3f} (issue 28 target <= 0.5 with a "
                  f"certified bf16 back-end); peak RSS {med[n]['peak_rss_mb']:.0f} MB (target < 2048)")
    metrics = {r["mode"]: r["metrics"] for r in ok if "metrics" in r}
    if len(metrics) > 1:
        def printed(m: dict) -> dict:
            return {key: f"{val:.4f}" for key, val in m.items() if isinstance(val, float)}

        first, *rest = metrics
        for n in metrics:
            print(f"  {n}: " + "  ".join(f"{key}={val}" for key, val in printed(metrics[n]).items()))
        same = all(printed(metrics[n]) == printed(metrics[first]) for n in rest)
        diff = max(abs(metrics[n][key] - metrics[first][key]) for n in rest
                   for key, val in metrics[first].items() if isinstance(val, float))
        print(f"metrics of {len(metrics)} back-ends {'print identically' if same else 'DIFFER'} "
              f"(largest difference {diff:.2e}, allowed {args.agree_tol:g})")
        if not same or diff > args.agree_tol:
            results.append({"mode": "agreement", "failed": True, "largest_difference": diff})
    elif metrics:
        n = next(iter(metrics))
        print(f"  {n}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics[n].items() if isinstance(v, float)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                       "environment": environment(), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(1 if any(r.get("failed") for r in main(get_args_parser().parse_args())) else 0)
