"""Benchmark: the bounded load test of ``serve.py`` (issue 26): many clients, and one that uploads huge images.

A server process (``serve.py``, bound to 127.0.0.1 only, a free port) serves a Flat index of 256 synthetic JPEGs
embedded by a random-weight resnet18 at 64 px. Two phases, each ``--requests`` (500) ``POST /search`` requests
shared by ``--clients`` - 1 (19) normal clients:

- ``normal``: those clients alone (the baseline);
- ``hostile``: the same, while one more client uploads a ``--pixels`` x ``--pixels`` (12000 x 12000) PNG again
  and again for the whole phase (each must be refused with a 413 from its header, never decoded).

For each phase it prints the normal requests that succeeded and failed, requests/s, p50 / p95 latency, the
hostile uploads and their statuses, and the server's RSS: idle before the phase and the peak during it
(sampled every 20 ms from ``/proc/PID/status``), then the ratios hostile / normal. It exits 1 when a normal
request fails, a hostile upload is not refused, or the peak RSS reaches ``--rss_limit_mb`` (2048). It stops by
itself: after the requests, or after ``--max_seconds`` per phase.

Run (about a minute on 2 busy cores)::

    python benchmarks/bench_serve_load.py
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HOST = "127.0.0.1"  # the only address this benchmark sends to


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--clients", type=int, default=20, help="concurrent clients, the hostile uploader included")
    p.add_argument("--requests", type=int, default=500, help="normal /search requests per phase")
    p.add_argument("--pixels", type=int, default=12000, help="side of the hostile uploads' PNG")
    p.add_argument("--rss_limit_mb", type=float, default=2048)
    p.add_argument("--max_seconds", type=float, default=300, help="a phase stops after this long in any case")
    p.add_argument("--threads", type=int, default=1, help="the server's torch / OpenMP threads")
    p.add_argument("--phases", default="normal,hostile")
    return p


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def huge_png(side: int) -> bytes:
    """A ``side`` x ``side`` black greyscale PNG: a few hundred KB on the wire, side² bytes once decoded."""
    buf = io.BytesIO()
    from PIL import Image

    Image.new("L", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def start_server(index_dir: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """``serve.py`` on 127.0.0.1 at a free port, once it answers /health."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "serve.py", "--index", str(index_dir), "--host", HOST, "--port",
                             str(port), "--reload_interval", "0"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    base = f"http://{HOST}:{port}"
    deadline = time.time() + 120
    while True:
        try:
            httpx.get(f"{base}/health").raise_for_status()
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("serve.py did not start") from None
            time.sleep(0.2)


def run_phase(pid: int, base: str, bodies: list[bytes], clients: int, requests: int, hostile: bytes | None,
              max_seconds: float) -> dict:
    """``requests`` searches shared by ``clients`` normal clients (plus the hostile uploader when ``hostile``)."""
    import httpx

    assert base.startswith(f"http://{HOST}:")
    statuses, hostile_statuses, latencies = Counter(), Counter(), []
    lock, done = threading.Lock(), threading.Event()
    counter = iter(range(requests))
    end = time.perf_counter() + max_seconds
    idle = rss_mb(pid)
    peak = [idle]

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb(pid))

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            while time.perf_counter() < end:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    status = http.post("/search", files={"image": ("q.jpg", bodies[i % len(bodies)], "image/jpeg")},
                                       params={"k": 5}).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                with lock:
                    statuses[status] += 1
                    latencies.append(time.perf_counter() - t)

    def uploader() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            while not done.is_set() and time.perf_counter() < end:
                try:
                    status = http.post("/search", files={"image": ("huge.png", hostile, "image/png")}).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                hostile_statuses[status] += 1

    sampler = threading.Thread(target=sample)
    sampler.start()
    extra = [threading.Thread(target=uploader)] if hostile is not None else []
    for t in extra:
        t.start()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    wall = time.perf_counter() - t0
    done.set()
    for t in [*extra, sampler]:
        t.join()
    lat = np.array(latencies or [float("nan")])
    return {"phase": "hostile" if hostile is not None else "normal", "clients": clients + len(extra),
            "ok": statuses[200], "failed": sum(statuses.values()) - statuses[200],
            "failures": {str(k): v for k, v in statuses.items() if k != 200},
            "req_s": round(statuses[200] / wall, 1), "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(lat, 95)), 1),
            "hostile_uploads": dict(hostile_statuses), "rss_idle_mb": round(idle), "rss_peak_mb": round(peak[0])}


def load_test(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Build the index, start the server, run the phases; the server is stopped whatever happens."""
    import index as index_cli
    from benchmarks.bench_index import _stream_fixture

    images, ckpt = _stream_fixture(tmp, 256)
    assert index_cli.main(["build", "--checkpoint", str(ckpt), "--images", str(images), "--out", str(tmp / "index"),
                           "--workers", "0", "--no_progress", "--device", "cpu"]) == 0
    bodies = [p.read_bytes() for p in sorted(images.glob("*.jpg"))[:32]]
    hostile = huge_png(args.pixels)
    proc, base = start_server(tmp / "index", args.threads)
    try:
        rows = []
        for phase in args.phases.split(","):
            rows.append(run_phase(proc.pid, base, bodies, args.clients - 1, args.requests,
                                  hostile if phase == "hostile" else None, args.max_seconds))
            print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = load_test(args, Path(tmp))
    by_phase = {row["phase"]: row for row in rows}
    if {"normal", "hostile"} <= set(by_phase):
        normal, hostile = by_phase["normal"], by_phase["hostile"]
        print(json.dumps({"rss_peak_ratio_hostile_vs_normal": round(hostile["rss_peak_mb"] / normal["rss_peak_mb"], 3),
                          "req_s_ratio_hostile_vs_normal": round(hostile["req_s"] / normal["req_s"], 3)}))
    bad = [row["phase"] for row in rows if row["failed"] or row["ok"] < args.requests
           or row["rss_peak_mb"] >= args.rss_limit_mb
           or (row["phase"] == "hostile" and set(row["hostile_uploads"]) != {413})]
    print("PASS" if not bad else f"FAIL in {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
