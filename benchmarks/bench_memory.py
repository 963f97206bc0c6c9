"""Time one training step with and without a cross-batch memory (Wang et al., CVPR 2020), in the same run.

A step is: ResNet-50 + baseline head (``models.build_model``, random init) forward → criterion → backward.
The memory is pre-filled with ``--memory-size`` random unit rows (and restored, untimed, after each step),
so every timed step compares the batch with the full memory. On a shared, noisy machine the measurement is
made robust by: a fixed thread count (``--threads``); untimed warm-up steps of both settings; rounds that
run the two settings in alternating order (ABBA: without, with, with, without), so load drift within a round
hits both alike; and medians. Printed: the median step time of each setting, their ratio, and the median of
the per-round ratios (with / without) with its range. Where load noise is larger than the memory's cost, the
last line is the robust figure: the loss alone (forward + backward on fixed embeddings, which is all the
memory changes) timed ``--loss-reps`` times per setting in ABBA order, and the median extra time as a share
of the median step without memory.

Example::

    python benchmarks/bench_memory.py                        # CPU, ResNet-50 at 224 px, batch 64, M 8192 x 512
    python benchmarks/bench_memory.py --image-size 112 --rounds 2 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metric_retrieval import (
    losses,  # noqa: E402
    models,  # noqa: E402
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples-per-class", type=int, default=4)
    p.add_argument("--embedding-dim", type=int, default=512)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--memory-size", type=int, default=8192)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--loss", default="multi_similarity", help="a loss that takes a memory (default MS)")
    p.add_argument("--miner", default=None, help="optional miner for the loss")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3, help="timed ABBA rounds (2 steps per setting each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per setting before the rounds")
    p.add_argument("--loss-reps", type=int, default=20, help="ABBA rounds of the loss-alone timing")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, fixed for the whole run")
    p.add_argument("--seed", type=int, default=0)
    return p


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = models.build_model("resnet50", "baseline", args.embedding_dim).to(device).train()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    m = args.samples_per_class
    labels = torch.randint(0, args.num_classes, (args.batch_size // m,), device=device).repeat_interleave(m)
    term = {"name": args.loss, **({"miner": args.miner} if args.miner else {})}
    plain = losses.build_criterion([term], num_classes=args.num_classes, embedding_dim=args.embedding_dim)
    memory = losses.build_criterion([{**term, "memory_size": args.memory_size}], num_classes=args.num_classes,
                                    embedding_dim=args.embedding_dim)
    bank = next(iter(memory.memories.values()))
    bank.enqueue(F.normalize(torch.randn(args.memory_size, args.embedding_dim), dim=1),
                 torch.randint(0, args.num_classes, (args.memory_size,)))
    plain, memory = plain.to(device), memory.to(device)
    snapshot = {k: v.clone() for k, v in bank.state_dict().items()}

    def timed(crit: torch.nn.Module, embed) -> float:
        """Seconds of ``embed()`` → loss → backward; the memory is put back to the same full state, untimed."""
        sync(device)
        start = time.perf_counter()
        total, _ = crit(embed(), None, labels)
        total.backward()
        sync(device)
        elapsed = time.perf_counter() - start
        bank.load_state_dict(snapshot)
        return elapsed

    def step(crit: torch.nn.Module) -> float:
        """One training step: forward, loss, backward."""
        model.zero_grad(set_to_none=True)
        return timed(crit, lambda: model(images)[0])

    for _ in range(args.warmup):
        step(plain)
        step(memory)
    times: dict[str, list[float]] = {"plain": [], "memory": []}
    round_ratios = []
    for _ in range(args.rounds):
        a1, b1, b2, a2 = step(plain), step(memory), step(memory), step(plain)
        times["plain"] += [a1, a2]
        times["memory"] += [b1, b2]
        round_ratios.append((b1 + b2) / (a1 + a2))
    t = {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(round_ratios)
    with torch.no_grad():
        fixed, _ = model(images)

    def loss_step(crit: torch.nn.Module) -> float:
        """The loss alone, on fixed embeddings."""
        return timed(crit, lambda: fixed.clone().requires_grad_(True))

    loss_times: dict[str, list[float]] = {"plain": [], "memory": []}
    for _ in range(args.loss_reps):
        a1, b1, b2, a2 = loss_step(plain), loss_step(memory), loss_step(memory), loss_step(plain)
        loss_times["plain"] += [a1, a2]
        loss_times["memory"] += [b1, b2]
    lt = {k: statistics.median(v) for k, v in loss_times.items()}
    extra = lt["memory"] - lt["plain"]
    print(f"device={device} ResNet-50 {args.image_size}px batch={args.batch_size} loss={args.loss} "
          f"miner={args.miner} memory={args.memory_size}x{args.embedding_dim} torch threads="
          f"{torch.get_num_threads()} rounds={args.rounds} (ABBA) warm-up={args.warmup}")
    print(f"without memory {t['plain']:.3f} s/step | with memory {t['memory']:.3f} s/step (medians) | "
          f"ratio of medians {t['memory'] / t['plain']:.3f}")
    print(f"ratio with/without (median of {args.rounds} rounds) {ratio:.3f} (+{(ratio - 1) * 100:.1f}%), "
          f"range {min(round_ratios):.3f}-{max(round_ratios):.3f}")
    print(f"loss alone ({args.loss_reps} ABBA rounds): without {lt['plain'] * 1e3:.1f} ms | with memory "
          f"{lt['memory'] * 1e3:.1f} ms | the memory adds {extra * 1e3:.1f} ms = {extra / t['plain'] * 100:.2f}% "
          f"of a step without memory (ratio {1 + extra / t['plain']:.3f})")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
