"""Start-up cost of every command's ``--help`` and of a mistake in the arguments, against ``import torch``.

Each case is a fresh ``python`` process; rounds alternate baseline and commands (ABBA) so that load drifts hit
both alike. Printed per case: median CPU-seconds (user + system of the child) and wall seconds, and the ratio of
the CPU-seconds to ``import torch``'s median in the same run (target: <= 1.2).

    python benchmarks/bench_startup.py [--rounds 4]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "eval", "query", "index", "serve", "export", "data"]
CASES = {"import torch": [sys.executable, "-c", "import torch"],
         **{f"{c} --help": [sys.executable, "-m", "metric_retrieval", c, "--help"] for c in COMMANDS},
         "train --bogus (error)": [sys.executable, "-m", "metric_retrieval", "train", "--bogus"],
         "train.py --help": [sys.executable, "train.py", "--help"],
         "test.py --help": [sys.executable, "test.py", "--help"]}


def measure(argv: list[str]) -> tuple[float, float]:
    """(CPU-seconds, wall seconds) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="ABBA rounds (each case runs once per round)")
    args = p.parse_args()
    cpu: dict[str, list[float]] = {name: [] for name in CASES}
    wall: dict[str, list[float]] = {name: [] for name in CASES}
    names = list(CASES)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c, w = measure(CASES[name])
            cpu[name].append(c)
            wall[name].append(w)
    base = statistics.median(cpu["import torch"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{args.rounds} ABBA rounds")
    print(f"{'case':<24} {'CPU s':>7} {'wall s':>7} {'CPU vs import torch':>20}")
    for name in names:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"{name:<24} {c:>7.2f} {w:>7.2f} {c / base:>19.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
