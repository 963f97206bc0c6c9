"""Benchmark: the search server's throughput and latency with one client and with concurrent clients.

A ``--catalogue``-image ``Flat`` index (synthetic JPEGs, a random-weight ResNet-18 at ``--image_size`` px) is served
by uvicorn on 127.0.0.1 at a free port, in this process. Phases run in ABBA order (1 client, ``--clients``
clients, ``--clients`` clients, 1 client) and, with ``--unbatched``, the same against a server with
``max_batch=1``. Each phase is bounded: ``--requests`` requests or ``--max_seconds``, whichever comes first; the
server stops when the run ends. Reported per phase: requests/s, p50 / p99 latency, the batch sizes the server
formed, and the process CPU-seconds per request (server and clients together); then the issue 28 targets:
``--clients`` clients reach ≥ 3× one client's requests/s with p99 ≤ 2 × one client's p50 + the batching window.
The load average is printed before and after: wall-clock latency on a shared machine moves with it.

Before the server runs, the model's own batching gain is measured in-process (``forward_ceiling``): images/s of
forward passes of ``--max_batch`` images against batch-1 passes, CPU-seconds, ABBA. Where the forward dominates a
request and one client already keeps every core busy, that ratio bounds what any batching server can gain.

Quick run::

    python benchmarks/bench_serve.py --catalogue 200 --requests 120 --max_seconds 30
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what serve.py sets (metric_retrieval/utils/thread_policy.py)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--catalogue", type=int, default=600, help="images in the served index")
    p.add_argument("--image_size", type=int, default=112)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="requests per phase at most")
    p.add_argument("--max_seconds", type=float, default=30.0, help="seconds per phase at most")
    p.add_argument("--max_batch", type=int, default=8)
    p.add_argument("--window_ms", type=float, default=2.0, help="batching window")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    p.add_argument("--unbatched", action="store_true", help="also measure a server with max_batch=1")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def make_index(tmp: Path, n: int, image_size: int) -> Path:
    """``n`` synthetic JPEGs, a random ResNet-18 checkpoint and their Flat index; returns the index directory."""
    import torch
    from PIL import Image

    import index as index_cli
    from metric_retrieval import models

    rng = np.random.default_rng(0)
    (tmp / "images").mkdir()
    for i in range(n):
        img = np.clip(rng.integers(0, 256, 3)[None, None] + rng.integers(-40, 41, (150, 200, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(tmp / "images" / f"{i:05d}.jpg", quality=90)
    torch.manual_seed(0)
    model = models.build_model("resnet18", "baseline", 128, 0)
    ckpt = tmp / "model.pth"
    torch.save({"model": model.state_dict(), "config": {"transform": "cgd", "image_size": image_size},
                "model_config": {"backbone": "resnet18", "head": "baseline", "feature_dim": 128,
                                 "num_classes": 0, "options": {}}}, ckpt)
    with contextlib.redirect_stdout(io.StringIO()):  # the build prints the index description
        code = index_cli.main(["build", "--checkpoint", str(ckpt), "--images", str(tmp / "images"), "--out",
                               str(tmp / "index"), "--workers", "0", "--no_progress", "--device", "cpu"])
    if code != 0:
        raise SystemExit("error: building the benchmark index failed")
    return tmp / "index"


class Server:
    """The app on uvicorn at 127.0.0.1 and a free port, in a thread; ``stop()`` ends it."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline:
                raise SystemExit("error: the benchmark server did not start within 60 s")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/search"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def load(url: str, bodies: list[bytes], clients: int, requests: int, max_seconds: float) -> dict:
    """``clients`` threads post uploads until ``requests`` are done or ``max_seconds`` have passed."""
    import httpx

    stop = time.perf_counter() + max_seconds
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> list[float]:
        latencies = []
        with httpx.Client(timeout=60) as http:
            while time.perf_counter() < stop:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t = time.perf_counter()
                r = http.post(url, files={"image": ("q.jpg", bodies[i % len(bodies)], "image/jpeg")})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
        return latencies

    cpu, t = time.process_time(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = sorted(x for part in pool.map(lambda _: client(), range(clients)) for x in part)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"clients": clients, "requests": len(lat), "req_s": len(lat) / wall,
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "cpu_ms_per_request": 1000 * cpu / max(1, len(lat))}


def forward_ceiling(embedder, bodies: list[bytes], max_batch: int, rounds: int = 2, images: int = 32) -> float:
    """CPU images/s of ``max_batch``-image forward passes ÷ that of batch-1 passes (ABBA, ``rounds`` × 2 each)."""
    import torch

    from metric_retrieval.retrieval.batching import decode_upload

    decoded = [decode_upload(embedder, b) for b in bodies[:images]]

    def rate(batch: int) -> float:
        cpu = time.process_time()
        for start in range(0, len(decoded), batch):
            embedder(torch.stack(decoded[start:start + batch]))
        return len(decoded) / (time.process_time() - cpu)

    rate(max_batch)  # warm-up
    one, many = [], []
    for _ in range(rounds):
        one.append(rate(1))
        many += [rate(max_batch), rate(max_batch)]
        one.append(rate(1))
    ratio = float(np.median(many) / np.median(one))
    print(f"forward alone: batch {max_batch} {np.median(many):.1f} images/CPU-s, batch 1 {np.median(one):.1f}: "
          f"{ratio:.2f}x (the most batching can gain where the forward is the whole request and the cores are busy)")
    return ratio


def measure(app, bodies: list[bytes], args: argparse.Namespace, label: str) -> list[dict]:
    server = Server(app)
    rows = []
    try:
        load(server.url, bodies, 1, 5, args.max_seconds)  # warm-up: first forward, allocator, connections
        for clients in (1, args.clients, args.clients, 1):  # ABBA
            start = len(app.state.batcher.batch_sizes)
            row = {"server": label, **load(server.url, bodies, clients, args.requests, args.max_seconds)}
            sizes = app.state.batcher.batch_sizes[start:]
            row["mean_batch"] = float(np.mean(sizes)) if sizes else 0.0
            rows.append(row)
            print(f"{label:9s} {clients:2d} client(s): {row['req_s']:6.1f} req/s  p50 {row['p50_ms']:6.1f} ms  "
                  f"p99 {row['p99_ms']:6.1f} ms  mean batch {row['mean_batch']:.2f}  "
                  f"{row['cpu_ms_per_request']:.1f} CPU-ms/request  ({row['requests']} requests)", flush=True)
    finally:
        server.stop()
    return rows


def summary(rows: list[dict], args: argparse.Namespace, label: str) -> dict:
    one = [r for r in rows if r["server"] == label and r["clients"] == 1]
    many = [r for r in rows if r["server"] == label and r["clients"] == args.clients]
    one_rps, one_p50 = np.median([r["req_s"] for r in one]), np.median([r["p50_ms"] for r in one])
    many_rps, many_p99 = np.median([r["req_s"] for r in many]), np.median([r["p99_ms"] for r in many])
    out = {"server": label, "throughput_ratio": float(many_rps / one_rps), "p99_ms": float(many_p99),
           "p99_limit_ms": float(2 * one_p50 + args.window_ms)}
    print(f"{label}: {args.clients} clients / 1 client requests/s = {out['throughput_ratio']:.2f} (target >= 3); "
          f"p99 {many_p99:.1f} ms vs 2 x p50(1 client) + window = {out['p99_limit_ms']:.1f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from metric_retrieval.retrieval.indexing import open_index
    from metric_retrieval.retrieval.serve_app import create_app

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_index(Path(tmp), args.catalogue, args.image_size)
        store, embedder = open_index(root)
        bodies = [p.read_bytes() for p in sorted((Path(tmp) / "images").glob("*.jpg"))[:64]]
        ceiling = forward_ceiling(embedder, bodies, args.max_batch)
        servers = [("batched", args.max_batch)] + ([("unbatched", 1)] if args.unbatched else [])
        rows, summaries = [], []
        for label, max_batch in servers:
            app = create_app(store, embedder, k=10, max_batch=max_batch, batch_window_ms=args.window_ms)
            rows += measure(app, bodies, args, label)
            summaries.append(summary(rows, args, label))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "forward_ceiling": ceiling, "rows": rows,
                                                    "summary": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
