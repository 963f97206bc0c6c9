"""Batch samplers (one registry, ``build_batch_sampler``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import BaseBatchSampler
from metric_retrieval.samplers.class_random import ClassRandomSampler
from metric_retrieval.samplers.identity import RandomIdentitySampler
from metric_retrieval.samplers.m_per_class import MPerClassSampler
from metric_retrieval.samplers.shuffle import ShuffleBatchSampler


def build_batch_sampler(
    name: str,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    batch_size: int,
    m: int | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    **kw: Any,
) -> BaseBatchSampler:
    """Build a registered batch sampler. ``batch_size`` is per rank; ``m`` = samples per class, where None
    picks the method's own default (class_random 2, m_per_class 4, identity 5; shuffle ignores it)."""
    return SAMPLERS.build(name, labels=labels, batch_size=batch_size, m=m, seed=seed, rank=rank,
                          world_size=world_size, **kw)


def list_samplers() -> list[str]:
    return SAMPLERS.names()


__all__ = [
    "SAMPLERS",
    "BaseBatchSampler",
    "ClassRandomSampler",
    "MPerClassSampler",
    "RandomIdentitySampler",
    "ShuffleBatchSampler",
    "build_batch_sampler",
    "list_samplers",
]
