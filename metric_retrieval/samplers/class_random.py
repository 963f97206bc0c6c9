"""RDML/DAS ``class_random`` batch sampler (Roth et al., ICML 2020, ``datasampler/class_random_sampler.py``).

Each global batch of G = batch_size × world_size indices: G/m times, draw a class uniformly **with
replacement** (a class can appear twice), then m of its samples uniformly **with replacement** (a sample can
repeat). ``⌊N / G⌋`` batches per epoch. Every drawn class has ≥ m members in the batch, so every anchor has a
positive for m ≥ 2. Default m = 2 (RDML/DAS ``--samples_per_class``).
"""
from __future__ import annotations

import numpy as np

from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import SAMPLES_PER_CLASS, BaseBatchSampler


@SAMPLERS.register("class_random")
class ClassRandomSampler(BaseBatchSampler):
    """See the module docstring; ``batch_size`` (per rank) must be a multiple of ``m``."""

    options = (SAMPLES_PER_CLASS,)

    default_m = 2

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        if self.batch_size % self.m:
            raise ValueError(f"ClassRandomSampler: batch_size {self.batch_size} must be a multiple of m={self.m}")
        self._check_nonempty()

    def num_global_batches(self) -> int:
        return len(self.labels) // self.global_batch_size

    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        nb, per = self.num_global_batches(), self.global_batch_size // self.m
        cls = rng.integers(0, len(self.classes), size=(nb, per))
        within = np.floor(rng.random((nb, per, self.m)) * self.class_counts[cls][..., None]).astype(np.int64)
        within = np.minimum(within, self.class_counts[cls][..., None] - 1)
        idx = self.sorted_indices[self.class_offsets[cls][..., None] + within]
        return list(idx.reshape(nb, per * self.m))
