"""Time one training step with and without DAS, in the same run.

A step is: embedding head forward → [DAS] → miner + metric loss → backward. The head stands in for the
trainable part of the model: ``--model linear`` (default) is a bias-free Linear(2048 → D) over fixed random
backbone features, ``--model resnet50`` runs a torchvision ResNet-50 (weights=None, 224×224) — use it on a
GPU for the end-to-end overhead a real run sees. The DAS producer's own time is printed too.

Example::

    python benchmarks/bench_das.py                     # CPU, batch 112, D 512, C 100, < 1 min
    python benchmarks/bench_das.py --device cuda --model resnet50
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

from metric_retrieval import losses  # noqa: E402
from metric_retrieval.producers import DAS  # noqa: E402

SETUPS = {
    "multi_similarity": [{"name": "multi_similarity"}],
    "triplet_distance": [{"name": "triplet", "miner": "distance"}],
    "margin_distance": [{"name": "margin", "miner": "distance"}],
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=112)
    p.add_argument("--samples-per-class", type=int, default=2)
    p.add_argument("--embedding-dim", type=int, default=512)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--num-produce", type=int, default=3, help="DAS N (default 3)")
    p.add_argument("--losses", nargs="+", default=["multi_similarity", "triplet_distance"], choices=sorted(SETUPS))
    p.add_argument("--model", choices=["linear", "resnet50"], default="linear")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=15, help="timed steps per setting (median; default 15)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(kind: str, dim: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The trainable part and a fixed input batch factory shape."""
    if kind == "linear":
        return torch.nn.Linear(2048, dim, bias=False).to(device), torch.Size([2048])
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Linear(2048, dim)
    return net.to(device), torch.Size([3, 224, 224])


def time_interleaved(steps: dict, repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so machine-load drift hits all alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    bs, m = args.batch_size, args.samples_per_class
    model, in_shape = build_model(args.model, args.embedding_dim, device)
    inputs = torch.randn(bs, *in_shape, device=device)
    labels = torch.randint(0, args.num_classes, (bs // m,), device=device).repeat_interleave(m)
    print(f"device={device} model={args.model} batch={bs} D={args.embedding_dim} C={args.num_classes} "
          f"N={args.num_produce} steps={args.steps}")
    for name in args.losses:
        steps = {}
        for use_das in (False, True):
            das = DAS(args.num_classes, args.embedding_dim, num_produce=args.num_produce) if use_das else None
            crit = losses.build_criterion(SETUPS[name], num_classes=args.num_classes,
                                          embedding_dim=args.embedding_dim, producer=das).to(device)
            params = list(model.parameters()) + list(crit.parameters())

            def step(crit=crit, params=params):
                for p in params:
                    p.grad = None
                emb = F.normalize(model(inputs), dim=1)
                total, _ = crit(emb, None, labels)
                total.backward()

            steps["das" if use_das else "plain"] = step
        das = DAS(args.num_classes, args.embedding_dim, num_produce=args.num_produce).to(device)
        emb = F.normalize(torch.randn(bs, args.embedding_dim, device=device), dim=1)
        steps["producer"] = lambda das=das, emb=emb: das(emb, labels)
        t = time_interleaved(steps, args.steps, args.warmup, device)
        ratio = t["das"] / t["plain"]
        print(f"{name:>18}: without DAS {t['plain'] * 1e3:8.2f} ms/step | with DAS {t['das'] * 1e3:8.2f} "
              f"ms/step | ratio {ratio:.3f} (+{(ratio - 1) * 100:.1f}%) | DAS producer alone "
              f"{t['producer'] * 1e3:.2f} ms ({t['producer'] / t['plain'] * 100:.1f}% of a plain step)")

if __name__ == "__main__":
    main(get_args_parser().parse_args())
