"""Plain shuffling batch sampler (CLF: random shuffle, batch 128, no ``drop_last``).

Per epoch a random permutation of all N indices is cut into consecutive global batches of
G = batch_size × world_size; ranks take contiguous slices, so the ranks partition the epoch (no sample is
seen twice). With ``drop_last=False`` the short last global batch is kept and split as evenly as possible
across ranks (contiguous pieces); with several ranks it is dropped if it has fewer samples than ranks, so
every rank takes the same number of steps. ``m`` is accepted for a uniform signature and ignored.
"""
from __future__ import annotations

import numpy as np

from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import BaseBatchSampler


@SAMPLERS.register("shuffle", aliases=("random",))
class ShuffleBatchSampler(BaseBatchSampler):
    """Args (beyond the base ones): drop_last — drop the short last batch, default False (CLF)."""

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        self.drop_last = bool(drop_last)
        self._check_nonempty()

    def _keeps_tail(self) -> bool:
        tail = len(self.labels) % self.global_batch_size
        return not self.drop_last and tail > 0 and tail >= self.world_size

    def num_global_batches(self) -> int:
        return len(self.labels) // self.global_batch_size + int(self._keeps_tail())

    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        perm = rng.permutation(len(self.labels))
        g = self.global_batch_size
        return [perm[i * g:(i + 1) * g] for i in range(self.num_global_batches())]
