"""Check of the cross-rank gathers of :mod:`metric_retrieval.training.distributed` on a real process group (NCCL on
CUDA, gloo on CPU).

Run under ``torchrun``; every rank knows what every other rank holds, so each checks exactly:

- ``gather_with_grad``: rank r's (3, 4) block ``100 r + arange(12)`` gathered to (3 W, 4) in rank order, and the
  gradient of ``sum(gathered * w)`` (w = arange(12 W), the same on all ranks) reaching rank r is its slice of w
  times W (every rank computes the global loss; DDP averages, the factor W restores the sum);
- ``all_gather_no_grad`` with uneven lengths: rank r sends r + 1 rows of value r.

Exit status 1 with the mismatch on any rank. One process (no ``torchrun``) is the world size 1 case::

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_gather.py --device cpu
    torchrun --standalone --nproc_per_node 8 benchmarks/ddp_gather.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metric_retrieval.training.distributed import (
    DistInfo,
    all_gather_no_grad,
    cleanup_distributed,
    gather_with_grad,
    init_distributed,
)

ROWS, DIM = 3, 4


def block(rank: int, device: torch.device) -> torch.Tensor:
    return (100 * rank + torch.arange(ROWS * DIM, dtype=torch.float32, device=device)).view(ROWS, DIM)


def check(info: DistInfo, device: torch.device) -> list[str]:
    """The mismatches seen on this rank (empty when both gathers are right)."""
    w_size, rank, problems = info.world_size, info.rank, []
    x = block(rank, device).requires_grad_()
    gathered = gather_with_grad(x, info)
    if not torch.equal(gathered.detach(), torch.cat([block(r, device) for r in range(w_size)])):
        problems.append(f"gather_with_grad values: got {gathered.detach().cpu().tolist()}")
    weight = torch.arange(ROWS * DIM * w_size, dtype=torch.float32, device=device).view(-1, DIM)
    (gathered * weight).sum().backward()
    if not torch.equal(x.grad, weight[rank * ROWS:(rank + 1) * ROWS] * w_size):
        problems.append(f"gather_with_grad gradient: got {x.grad.cpu().tolist()}")
    uneven = all_gather_no_grad(torch.full((rank + 1, 2), rank, device=device), info)
    expected = torch.cat([torch.full((r + 1, 2), r, device=device) for r in range(w_size)])
    if not torch.equal(uneven, expected):
        problems.append(f"all_gather_no_grad (uneven): got {uneven.cpu().tolist()}")
    return problems


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu (gloo) or cuda (NCCL)")
    return p


def main() -> int:
    p = get_args_parser()
    device = torch.device(p.parse_args().device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    info = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        problems = check(info, device)
        failed = torch.tensor([len(problems)], device=device)
        if info.enabled:  # rank 0 reports for all
            torch.distributed.all_reduce(failed)
    finally:
        cleanup_distributed(info)
    backend = "nccl" if device.type == "cuda" else "gloo"
    for problem in problems:
        print(f"rank {info.rank}: {problem}", file=sys.stderr)
    if int(failed) == 0 and info.is_main:
        print(f"world size {info.world_size} ({backend if info.enabled else 'one process'}): gather_with_grad values "
              "and gradient, all_gather_no_grad with uneven lengths: exact")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
