"""Batch samplers: per-batch composition, determinism per (seed, epoch), rank slicing, mid-epoch resume."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from metric_retrieval import samplers

# 23 classes with 1..9 images each (some classes smaller than m)
LABELS = np.repeat(np.arange(23), [1 + (c * 7) % 9 for c in range(23)])
N = len(LABELS)
KW = {"class_random": {}, "m_per_class": {}, "identity": {}, "shuffle": {}}
NAMES = samplers.SAMPLERS.names()  # every registered sampler


def build(name, batch_size=8, **kw):
    return samplers.build_batch_sampler(name, torch.as_tensor(LABELS), batch_size, **kw)


def epoch(sampler, e):
    sampler.set_epoch(e)
    return list(sampler)


def test_class_random_composition():
    s = build("class_random", batch_size=8, m=2)
    assert s.m == 2 and len(s) == N // 8
    for b in epoch(s, 0):
        assert len(b) == 8
        lab = LABELS[b]
        for k in range(0, 8, 2):  # consecutive m-groups share a class (drawn with replacement)
            assert lab[k] == lab[k + 1]
        assert all(v % 2 == 0 for v in Counter(lab.tolist()).values())


def test_m_per_class_composition():
    s = build("m_per_class", batch_size=12, m=4)
    assert len(s) == N // 12
    for b in epoch(s, 1):
        assert len(b) == 12 and len(set(b)) == 12  # no index repeats within a batch
        counts = Counter(LABELS[b].tolist())
        assert max(counts.values()) <= 4
        # a class contributes min(m, n_c) images, except the last one added, which may be truncated
        assert all(k <= min(4, int((LABELS == c).sum())) for c, k in counts.items())
        truncated = [c for c, k in counts.items() if k < min(4, int((LABELS == c).sum()))]
        assert len(truncated) <= 1


def test_identity_composition():
    s = build("identity", batch_size=10)  # default num_instances 5 → 2 classes per batch
    assert s.m == 5 and len(s) == 23 * 5 // 10
    seen = []
    for b in epoch(s, 0):
        lab = LABELS[b]
        assert len(b) == 10 and len(set(lab[:5])) == 1 and len(set(lab[5:])) == 1
        for block in (b[:5], b[5:]):
            c = LABELS[block[0]]
            if (LABELS == c).sum() >= 5:
                assert len(set(block)) == 5  # without replacement when the class is large enough
        seen += [lab[0], lab[5]]
    assert len(set(seen)) == len(seen)  # every class at most once per epoch


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffle_partitions_the_epoch(drop_last):
    s = build("shuffle", batch_size=8, drop_last=drop_last)
    batches = epoch(s, 0)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert len(flat) == (N // 8) * 8
    else:
        assert sorted(flat) == list(range(N))
    assert len(batches) == len(s)


@pytest.mark.parametrize("name", NAMES)
def test_pure_function_of_seed_and_epoch(name):
    a, b = build(name, seed=3), build(name, seed=3)
    assert epoch(a, 2) == epoch(b, 2)
    assert epoch(a, 2) != epoch(a, 3)
    assert epoch(build(name, seed=4), 2) != epoch(b, 2)
    assert epoch(a, 2) == epoch(a, 2)  # re-iterating the same epoch repeats it


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_union_equals_single_process_global_batch(name, world_size):
    b = 4 if name != "identity" else 5
    single = epoch(build(name, batch_size=b * world_size, seed=1), 5)
    per_rank = [epoch(build(name, batch_size=b, seed=1, rank=r, world_size=world_size), 5)
                for r in range(world_size)]
    assert all(len(p) == len(single) for p in per_rank)
    for step, global_batch in enumerate(single):
        assert [i for r in range(world_size) for i in per_rank[r][step]] == global_batch
        if len(global_batch) == b * world_size:
            assert all(len(per_rank[r][step]) == b for r in range(world_size))
    if name == "shuffle":
        flat = [i for p in per_rank for batch in p for i in batch]
        assert len(flat) == len(set(flat))  # ranks never see the same sample twice in an epoch


def test_shuffle_tail_split_across_ranks():
    labels = np.arange(21) % 3
    single = list(samplers.build_batch_sampler("shuffle", labels, 8, seed=0))
    ranks = [list(samplers.build_batch_sampler("shuffle", labels, 4, seed=0, rank=r, world_size=2))
             for r in range(2)]
    assert [len(b) for b in single] == [8, 8, 5]
    assert [len(b) for b in ranks[0]] == [4, 4, 3] and [len(b) for b in ranks[1]] == [4, 4, 2]
    tiny = samplers.build_batch_sampler("shuffle", np.arange(9) % 3, 2, world_size=4)  # tail of 1 < 4 ranks
    assert len(tiny) == 1 and len(list(tiny)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_mid_epoch_resume(name):
    s = build(name, seed=2)
    full = epoch(s, 4)
    k = len(full) // 2
    resumed = build(name, seed=2)
    resumed.load_state_dict({"epoch": 4, "start": k})
    resumed.set_epoch(4)  # the trainer's loop re-selects the resumed epoch: the offset stays
    assert list(resumed) == full[k:]
    assert resumed.state_dict() == {"epoch": 4, "start": k}
    resumed.set_epoch(5)  # a new epoch starts from its first batch
    assert resumed.state_dict() == {"epoch": 5, "start": 0}
    assert list(resumed) == epoch(build(name, seed=2), 5)
    with pytest.raises(ValueError, match="start"):
        resumed.load_state_dict({"epoch": 0, "start": len(full) + 1})


def test_works_as_dataloader_batch_sampler():
    data = torch.utils.data.TensorDataset(torch.arange(N))
    s = build("class_random", batch_size=8)
    loader = torch.utils.data.DataLoader(data, batch_sampler=s)
    got = [b[0].tolist() for b in loader]
    assert got == epoch(s, 0) and len(loader) == len(s)


def test_errors():
    with pytest.raises(ValueError, match="multiple of m"):
        build("class_random", batch_size=7, m=2)
    with pytest.raises(ValueError, match="rank"):
        build("shuffle", rank=2, world_size=2)
    with pytest.raises(ValueError, match="no batch"):
        samplers.build_batch_sampler("class_random", [0, 0, 1, 1], 8)
    with pytest.raises(ValueError, match="at most"):
        samplers.build_batch_sampler("m_per_class", [0, 0, 1, 1] * 4, 12, m=2)
    with pytest.raises(ValueError, match="unknown batch sampler 'pk'.*class_random"):
        build("pk")
    with pytest.raises(TypeError):
        build("class_random", drop_last=True)
    with pytest.raises(ValueError, match="1-D"):
        samplers.build_batch_sampler("shuffle", [[0, 1]], 1)
