"""Deep_Metric's ``FastRandomIdentitySampler`` as a batch sampler (ABIR).

Per epoch: a random permutation of all training classes; for each class m indices (without replacement if the
class has ≥ m images, else with replacement); concatenated in class blocks and cut into consecutive global
batches of G = batch_size × world_size, dropping the incomplete last one (Deep_Metric ``drop_last=True``).
``⌊C·m / G⌋`` batches per epoch. Default m = ``num_instances`` = 5 (ABIR: batch 30 = 6 classes × 5).
"""
from __future__ import annotations

import numpy as np

from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import SAMPLES_PER_CLASS, BaseBatchSampler


@SAMPLERS.register("identity", aliases=("random_identity",))
class RandomIdentitySampler(BaseBatchSampler):
    """See the module docstring; ``m`` is Deep_Metric's ``num_instances``."""

    options = (SAMPLES_PER_CLASS,)

    default_m = 5

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        self._check_nonempty()

    def num_global_batches(self) -> int:
        return len(self.classes) * self.m // self.global_batch_size

    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        parts = []
        for c in rng.permutation(len(self.classes)):
            members = self.class_members(c)
            parts.append(rng.choice(members, size=self.m, replace=len(members) < self.m))
        flat = np.concatenate(parts)
        g = self.global_batch_size
        return [flat[i * g:(i + 1) * g] for i in range(self.num_global_batches())]
