"""Shared machinery of the batch samplers: seeding, epochs, mid-epoch resume and rank slicing.

Contract (every registered sampler):

* A *global* batch of ``batch_size * world_size`` indices is formed with the method's semantics; rank r
  yields its contiguous slice ``[r*B:(r+1)*B]``. Concatenating all ranks' batches in rank order therefore
  reproduces exactly the batch one process with batch ``B * world_size`` sees (same seed and epoch).
* The batches of an epoch are a pure function of ``(seed, epoch)``: a ``numpy.random.Generator`` seeded with
  ``SeedSequence([seed, epoch])`` (a hash of both) draws them; no global RNG is touched.
* ``len(sampler)`` is the number of batches per epoch per rank (the full epoch, also when resuming).
* Resume: ``state_dict() -> {"epoch", "start"}`` where ``start`` is the number of batches of this epoch
  already consumed. The trainer owns that count (DataLoader workers prefetch, so the sampler cannot know
  it): its checkpoint keeps its own progress (epoch, step), not the sampler's state, and every epoch it
  calls ``load_state_dict({"epoch": epoch, "start": step})``; the next iteration then skips exactly
  ``start`` batches. ``set_epoch(e)`` with a new epoch
  resets ``start`` to 0; calling it again with the resumed epoch keeps the offset, so the usual
  ``for epoch in range(resume_epoch, n): sampler.set_epoch(epoch)`` loop works.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Sampler

from metric_retrieval.utils.options import Option

# the option of every sampler that draws whole classes (P classes x m images per batch)
SAMPLES_PER_CLASS = Option("samples_per_class", int, 4, "images per class in a batch (m)", low=1, kwarg="m")


def as_label_array(labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """Labels as a 1-D int64 numpy array (accepts a tensor, an array or a list)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class BaseBatchSampler(Sampler[list[int]]):
    """Base of the registered batch samplers; subclasses implement :meth:`global_batches` and
    :meth:`num_global_batches`.

    Args:
        labels: ``(N,)`` class label of every training sample.
        batch_size: the **per-rank** batch size B.
        m: samples per class (meaning depends on the sampler; None → its default ``default_m``).
        seed: base seed; batches depend only on (seed, epoch).
        rank: this process's rank.
        world_size: the number of ranks.
    """

    default_m: ClassVar[int | None] = None
    options: ClassVar[tuple[Option, ...]] = ()  # the sampler's own train.py flags (metric_retrieval.utils.options)

    @classmethod
    def check_config(cls, cfg: dict[str, Any]) -> list[str]:
        """A sampler drawing whole classes needs a batch of whole classes."""
        m = cfg.get("samples_per_class")
        if SAMPLES_PER_CLASS in cls.options and m and m > 0 and cfg["batch_size"] % m:
            return [f"--batch_size {cfg['batch_size']} must be a multiple of --samples_per_class {m} for the "
                    f"{cfg['sampler']} sampler"]
        return []

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        m: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.labels = as_label_array(labels)
        if len(self.labels) == 0:
            raise ValueError(f"{name}: no training samples (labels is empty)")
        if int(batch_size) < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"{name}: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if int(seed) < 0:
            raise ValueError(f"{name}: seed must be >= 0, got {seed}")
        self.batch_size = int(batch_size)
        self.m = self.default_m if m is None else int(m)
        if self.m is not None and self.m < 1:
            raise ValueError(f"{name}: m must be >= 1, got {m}")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.start = 0
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.class_counts = np.bincount(inverse, minlength=len(self.classes))
        self.class_offsets = np.concatenate([[0], np.cumsum(self.class_counts)[:-1]])
        self.sorted_indices = order  # indices of class k: sorted_indices[offsets[k]:offsets[k]+counts[k]]

    # -- what subclasses provide ---------------------------------------------------------------------------
    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """All global batches (each of ``global_batch_size`` indices, the last possibly shorter) of the epoch."""
        raise NotImplementedError

    def num_global_batches(self) -> int:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def class_members(self, k: int) -> np.ndarray:
        """Dataset indices of the k-th class (``self.classes[k]``)."""
        o = self.class_offsets[k]
        return self.sorted_indices[o:o + self.class_counts[k]]

    def rng(self, epoch: int | None = None) -> np.random.Generator:
        """The generator of ``epoch`` (default: the current one), seeded with a hash of (seed, epoch)."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))

    def rank_slice(self, batch: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch: ``[r*B:(r+1)*B]``, or an even contiguous split of a short one."""
        if len(batch) == self.global_batch_size:
            b = self.batch_size
            return batch[self.rank * b:(self.rank + 1) * b]
        return np.array_split(batch, self.world_size)[self.rank]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.rng())
        for batch in batches[self.start:]:
            yield self.rank_slice(np.asarray(batch)).tolist()

    def __len__(self) -> int:
        return self.num_global_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (a new epoch restarts at batch 0)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        start = int(state.get("start", 0))
        if not 0 <= start <= len(self):
            raise ValueError(f"{type(self).__name__}: start={start} outside [0, {len(self)}] batches per epoch")
        self.epoch, self.start = int(state["epoch"]), start

    def _check_nonempty(self) -> None:
        if self.num_global_batches() < 1:
            raise ValueError(
                f"{type(self).__name__}: {len(self.labels)} samples give no batch of "
                f"{self.batch_size} x {self.world_size} rank(s); lower batch_size"
            )
