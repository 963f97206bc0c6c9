"""Cost of the bit-exact mode: training-step time with ``--deterministic`` and with one intra-op thread, as
ratios to the default (non-deterministic algorithms, all intra-op threads), all measured in the same run.

``--deterministic`` turns on ``torch.use_deterministic_algorithms`` (and ``cudnn.benchmark`` off); the bit-exact
resume tests also run with one intra-op thread (``OMP_NUM_THREADS=1``), so that no reduction depends on how the
work is split across threads (README "Reliability"). The step is ``bench_train``'s: the CGD ResNet-50 (SG,
1536-d), label-smoothed CE + batch-hard triplet, Adam, fp32. Rounds alternate the settings (so a machine that
speeds up or slows down affects all of them alike) and the best round of each is reported.

Example::

    python benchmarks/bench_deterministic.py --image_size 64 --batch_size 16 --steps 3 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_train import bare_loop, batches, build  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each setting is reported")
    return p


def settings(threads: int) -> dict[str, tuple[bool, int]]:
    """name: (deterministic algorithms, intra-op threads); the first is the baseline."""
    out = {f"default ({threads} threads)": (False, threads), f"--deterministic ({threads} threads)": (True, threads)}
    if threads > 1:
        out |= {"1 thread": (False, 1), "--deterministic, 1 thread (the tests' bit-exact mode)": (True, 1)}
    return out


def main() -> None:
    args = get_args_parser().parse_args()
    device, threads = torch.device(args.device), torch.get_num_threads()
    print(f"device {device}, CGD ResNet-50, batch {args.batch_size} at {args.image_size} px, {args.steps} steps x "
          f"{args.rounds} rounds, torch {torch.__version__}, {threads} intra-op threads, {os.cpu_count()} CPUs")
    model, criterion, optimizer = build(device, channels_last=False)
    data = batches(args, args.steps)
    bare_loop(model, criterion, optimizer, batches(args, 1), device, "off", False)  # warm-up
    best = dict.fromkeys(settings(threads), float("inf"))
    try:
        for _ in range(args.rounds):
            for name, (deterministic, n) in settings(threads).items():
                torch.set_num_threads(n)
                torch.use_deterministic_algorithms(deterministic)
                torch.backends.cudnn.benchmark = not deterministic
                best[name] = min(best[name], bare_loop(model, criterion, optimizer, data, device, "off", False))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    baseline = next(iter(best.values()))
    for name, seconds in best.items():
        print(f"{name:>56}: {seconds / args.steps:7.3f} s/step  ({seconds / baseline:.2f}x the default's step time)")


if __name__ == "__main__":
    main()
