"""Miner contract (PML ``miners/base_miner.py`` style).

``miner(embeddings (B, D), labels (B,)) -> (a, p, n)`` or ``(a1, p, a2, n)`` int64 index tensors on the
embeddings' device. Mining runs under ``torch.no_grad()``. Random miners draw from an optional
``torch.Generator`` (random numbers are drawn on the generator's device and moved), so a seeded generator
makes mining reproducible independent of the global RNG.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from metric_retrieval.losses._utils import check_inputs


class BaseMiner(nn.Module):
    """Base class; subclasses implement :meth:`mine` and set ``output`` to ``"triplets"`` or ``"pairs"``."""

    output: ClassVar[str] = "triplets"

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        check_inputs(embeddings, labels, type(self).__name__)
        with torch.no_grad():
            out = self.mine(embeddings.detach(), labels.long())
        return tuple(t.long() for t in out)

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


def empty_triplets(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()
