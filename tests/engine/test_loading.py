"""Reproducible augmentation seeds, seeded datasets and class-disjoint validation splits."""
import torch

from metric_retrieval.training.loading import ClassSubset, SeededBatches, SeededDataset, sample_seed, split_classes


class ListSampler:
    """A stand-in batch sampler: fixed batches, honours ``start``."""

    def __init__(self, batches):
        self.batches, self.start, self.epoch = batches, 0, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def state_dict(self):
        return {"epoch": self.epoch, "start": self.start}

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches[self.start:])


class RandomDataset:
    def __init__(self, n):
        self.labels = torch.arange(n) % 3
        self.paths = [f"img{i}.jpg" for i in range(n)]
        self.num_classes = 3
        self.transform = None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.rand(2), int(self.labels[i]), i


def test_sample_seed_is_a_pure_function_of_position():
    assert sample_seed(0, 1, 2, 3) == sample_seed(0, 1, 2, 3)
    seeds = {sample_seed(s, e, st, p) for s in range(2) for e in range(3) for st in range(4) for p in range(8)}
    assert len(seeds) == 2 * 3 * 4 * 8
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_resumed_batches_carry_the_same_seeds():
    full = list(SeededBatches(ListSampler([[0, 1], [2, 3], [4, 5]]), seed=7, rank=0, batch_size=2))
    sampler = ListSampler([[0, 1], [2, 3], [4, 5]])
    sampler.start = 1
    assert list(SeededBatches(sampler, seed=7, rank=0, batch_size=2)) == full[1:]


def test_rank_slices_get_the_seeds_of_their_global_positions():
    single = list(SeededBatches(ListSampler([[0, 1, 2, 3]]), seed=3, rank=0, batch_size=4))[0]
    rank1 = list(SeededBatches(ListSampler([[2, 3]]), seed=3, rank=1, batch_size=2))[0]
    assert rank1 == single[2:]


def test_seeded_dataset_is_reproducible_and_leaves_global_rng_alone():
    ds = SeededDataset(RandomDataset(4))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = ds[(1, 99)][0], ds[(1, 99)][0]
    assert torch.equal(a, b)
    assert not torch.equal(ds[(1, 98)][0], a)
    assert torch.equal(torch.get_rng_state(), before)


def test_class_subset_and_validation_split():
    ds = RandomDataset(9)  # labels 0,1,2,0,1,2,...
    sub = ClassSubset(ds, [2])
    assert len(sub) == 3 and sub.labels.tolist() == [0, 0, 0] and sub.num_classes == 1
    assert sub.paths == ["img2.jpg", "img5.jpg", "img8.jpg"]
    train, val = split_classes(ds, 0.34, eval_transform=None)
    assert train.num_classes == 2 and val.num_classes == 1
    assert set(train.paths).isdisjoint(val.paths) and len(train) + len(val) == 9
