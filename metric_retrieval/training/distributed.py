"""``torch.distributed`` plumbing: init from ``torchrun`` variables, rank helpers, gather with gradient.

Multi-GPU and multi-node runs use ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); NCCL on GPU, gloo on CPU. Nothing home-made launches processes.

A hung collective (a rank that died without its socket closing, or was frozen by SIGSTOP or a stuck
file system) ends after ``--dist_timeout`` seconds: the waiting ranks raise, the trainer turns that into
one error line naming the flag, and ``torchrun`` stops the remaining workers.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment, if there is one; every collective
    (and the rendezvous) gives up after ``timeout_s`` seconds."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return info


def collective_timed_out(err: BaseException) -> bool:
    """Whether ``err`` is a collective giving up after the process group's timeout (gloo and NCCL wording)."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("timed out" in text or "timeout" in text)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without DDP)."""
    if not info.enabled:
        return [obj]
    objects: list[Any] = [None] * info.world_size
    dist.all_gather_object(objects, obj)
    return objects


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's picklable ``obj`` on every rank (``obj`` itself without DDP)."""
    if not info.enabled:
        return obj
    objects = [obj]
    dist.broadcast_object_list(objects, src=0)
    return objects[0]


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward returns this rank's slice of the gradient times world size.

    Every rank computes the same loss on the global batch, so the gradient reaching this rank's
    embeddings is only its share; DDP then *averages* parameter gradients over ranks, hence the
    factor ``world_size`` that turns that average into the single-process sum.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world_size, ctx.batch = dist.get_rank(), dist.get_world_size(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        start = ctx.rank * ctx.batch
        return grad[start:start + ctx.batch] * ctx.world_size


def gather_with_grad(tensor: torch.Tensor | None, info: DistInfo) -> torch.Tensor | None:
    """``(B, ...)`` per rank → ``(world_size * B, ...)`` in rank order, differentiable for the local part."""
    if tensor is None or not info.enabled:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate variable-length ``(n_r, ...)`` tensors from all ranks in rank order."""
    if not info.enabled:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)], dim=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class RankFilter(logging.Filter):
    """Lets records through on rank 0 only (instead of patching ``print``)."""

    def __init__(self, info: DistInfo) -> None:
        super().__init__()
        self.info = info

    def filter(self, record: logging.LogRecord) -> bool:
        return self.info.is_main
