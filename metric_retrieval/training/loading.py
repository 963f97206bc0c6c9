"""Data loaders with reproducible augmentation, and class-disjoint validation splits.

Augmentation randomness is tied to the sample's place in the run, not to the worker that loads it:
every index the batch sampler yields is paired with a seed derived from (run seed, epoch, step,
position in the global batch), and the dataset seeds a forked RNG with it before transforming. So a
run resumed mid-epoch, a run with a different number of workers, and a DDP run whose ranks split the
global batch all see exactly the same augmented images as the uninterrupted single-process run.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from metric_retrieval.data.batch import collate, sample_rng


def sample_seed(seed: int, epoch: int, step: int, position: int) -> int:
    """A 63-bit seed that is a pure function of where a sample sits in the run (NumPy's SeedSequence hash)."""
    return int(np.random.SeedSequence([seed, epoch, step, position]).generate_state(1, np.uint64)[0]) >> 1


class SeededBatches:
    """Wraps a batch sampler: yields ``[(index, seed), ...]`` per batch."""

    def __init__(self, batch_sampler: Any, seed: int, rank: int, batch_size: int) -> None:
        self.batch_sampler, self.seed, self.offset = batch_sampler, seed, rank * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        start = self.batch_sampler.state_dict().get("start", 0)
        for step, batch in enumerate(self.batch_sampler, start=start):
            yield [(int(i), sample_seed(self.seed, self.epoch, step, self.offset + j)) for j, i in enumerate(batch)]


class SeededDataset(Dataset):
    """``dataset[(index, seed)]`` → ``(*dataset[index], seed)``, the sample computed under ``sample_rng(seed)``.

    The seed travels with the sample so that work deferred to the main process (``--decode gpu``
    transforms the images there) draws the same random parameters as a worker would.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with sample_rng(seed):
            return (*self.dataset[index], seed)


class ClassSubset(Dataset):
    """The samples of ``dataset`` whose label is in ``classes``, labels remapped to ``[0, len(classes))``."""

    def __init__(self, dataset: Any, classes: list[int], transform: Any = None) -> None:
        self.dataset, self.transform = dataset, transform
        remap = torch.full((int(dataset.labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.as_tensor(classes)] = torch.arange(len(classes))
        keep = remap[dataset.labels] >= 0
        self.indices = torch.nonzero(keep).flatten()
        self.labels = remap[dataset.labels[self.indices]]
        self.paths = [dataset.paths[i] for i in self.indices.tolist()]
        self.num_classes = len(classes)
        self.crop = getattr(dataset, "crop", False)
        boxes = getattr(dataset, "boxes", None)
        self.boxes = None if boxes is None else [boxes[i] for i in self.indices.tolist()]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        original = self.dataset.transform
        if self.transform is not None:
            self.dataset.transform = self.transform
        try:
            image, _, j = self.dataset[int(self.indices[i])]
        finally:
            self.dataset.transform = original
        return image, int(self.labels[i]), i if j >= 0 else -(i + 1)  # negative: replaced (skip_bad)


def split_classes(train: Any, fraction: float, eval_transform: Any) -> tuple[ClassSubset, ClassSubset]:
    """Hold out the last ``fraction`` of the training classes (at least one) as a validation split.

    Model selection on these classes is the honest protocol; the papers selected on the test set.
    """
    num = train.num_classes
    num_val = min(max(1, round(num * fraction)), num - 1)
    classes = list(range(num))
    return ClassSubset(train, classes[: num - num_val]), ClassSubset(train, classes[num - num_val:], eval_transform)


def train_loader(dataset: Dataset, batches: SeededBatches, workers: int, pin_memory: bool) -> DataLoader:
    # A private generator: creating the iterator must not advance the global RNG that miners draw from,
    # or a resumed run would diverge from the uninterrupted one.
    return DataLoader(SeededDataset(dataset), batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(batches.seed), collate_fn=collate)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    # Its own generator too: evaluating (on rank 0 only) must not advance the training RNG.
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0), collate_fn=collate)
