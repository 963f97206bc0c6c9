"""CGD's m-per-class batch sampler (leftthomas/CGD ``utils.py`` ``MPerClassSampler``, commit 3bfc8ea).

Each global batch of G = batch_size × world_size indices: draw classes uniformly at random from all training
classes, skipping classes already in the batch (equivalently: walk a random permutation of the classes); add a
random permutation of up to m of the class's images (fewer if it has fewer than m); stop once ≥ G indices;
truncate to G; shuffle the batch. ``⌊N / G⌋`` batches per epoch; classes are drawn independently per batch.
Default m = 4 (CGD: batch 128, 32 classes × 4).

Differs from PML's ``MPerClassSampler``, which has a fixed list length and samples with
replacement only for classes with < m images.
"""
from __future__ import annotations

import numpy as np

from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import SAMPLES_PER_CLASS, BaseBatchSampler


@SAMPLERS.register("m_per_class")
class MPerClassSampler(BaseBatchSampler):
    """See the module docstring."""

    options = (SAMPLES_PER_CLASS,)

    default_m = 4

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        reachable = int(np.minimum(self.class_counts, self.m).sum())
        if reachable < self.global_batch_size:
            raise ValueError(
                f"MPerClassSampler: at most {reachable} indices per batch with m={self.m} over "
                f"{len(self.classes)} classes, fewer than the global batch {self.global_batch_size}"
            )
        self._check_nonempty()

    def num_global_batches(self) -> int:
        return len(self.labels) // self.global_batch_size

    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        g = self.global_batch_size
        take = np.minimum(self.class_counts, self.m)
        batches = []
        for _ in range(self.num_global_batches()):
            perm = rng.permutation(len(self.classes))
            k = int(np.searchsorted(np.cumsum(take[perm]), g)) + 1
            parts = [rng.permutation(self.class_members(c))[: take[c]] for c in perm[:k]]
            batch = np.concatenate(parts)[:g]
            batches.append(rng.permutation(batch))
        return batches
