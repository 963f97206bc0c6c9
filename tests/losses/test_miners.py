"""Miners on hand-made 2-D batches whose right tuples are known."""
from __future__ import annotations

import pytest
import torch

from metric_retrieval import losses


def line(xs):
    return torch.tensor([[float(v), 0.0] for v in xs])


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_batch_hard_picks_farthest_positive_and_closest_negative():
    x = line([0, 1, 3, 1.5, 10])
    y = torch.tensor([0, 0, 0, 1, 1])
    a, p, n = losses.build_miner("batch_hard")(x, y)
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [2, 2, 0, 4, 3]
    assert n.tolist() == [3, 3, 3, 1, 2]
    assert a.dtype == torch.long


def test_batch_hard_skips_anchors_without_positive_or_negative():
    x = line([0, 1, 2])
    a, _, _ = losses.build_miner("batch_hard")(x, torch.tensor([0, 0, 1]))
    assert a.tolist() == [0, 1]
    a, _, _ = losses.build_miner("batch_hard")(x, torch.tensor([0, 0, 0]))
    assert a.numel() == 0


def test_semihard_picks_the_only_semihard_negative():
    # anchor 0 at 0, positive 1 at 0.1 (d_ap = 0.1); negatives: 0.05 (hard), 0.2 (semi-hard), 1.0 (easy)
    x = line([0, 0.1, 0.05, 0.2, 1.0])
    y = torch.tensor([0, 0, 1, 2, 3])
    for seed in range(20):
        a, p, n = losses.build_miner("semihard", margin=0.2, generator=gen(seed))(x, y)
        row = a.tolist().index(0)
        assert p[row] == 1 and n[row] == 3


def test_semihard_falls_back_to_a_random_negative():
    x = line([0, 0.1, 5.0, 6.0])  # both negatives far beyond d_ap + margin
    y = torch.tensor([0, 0, 1, 2])
    seen = set()
    for seed in range(30):
        a, p, n = losses.build_miner("semihard", generator=gen(seed))(x, y)
        assert a.tolist() == [0, 1]  # anchors 2, 3 have no positive
        assert p.tolist() == [1, 0]
        seen.update(n.tolist())
    assert seen == {2, 3}


def test_random_miner_valid_uniform_and_deterministic():
    x = torch.randn(8, 2)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    a, p, n = losses.build_miner("random", generator=gen(0))(x, y)
    assert len(a) == 8
    assert ((y[a] == y[p]) & (a != p) & (y[n] != y[a])).all()
    a2, p2, n2 = losses.build_miner("random", generator=gen(0))(x, y)
    assert torch.equal(a, a2) and torch.equal(p, p2) and torch.equal(n, n2)
    # a batch with exactly two valid triplets (0,1,2) and (1,0,2)
    a, p, n = losses.build_miner("random", num_triplets=50, generator=gen(1))(torch.randn(3, 2),
                                                                               torch.tensor([0, 0, 1]))
    assert set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == {(0, 1, 2), (1, 0, 2)}
    a, _, _ = losses.build_miner("random")(torch.randn(3, 2), torch.tensor([0, 0, 0]))
    assert a.numel() == 0


def test_distance_miner_valid_tuples_and_self_positive_for_singletons():
    x = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen(3)), dim=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    a, p, n = losses.build_miner("distance", generator=gen(0))(x, y)
    assert a.tolist() == list(range(7))
    assert (y[a] == y[p]).all() and (y[n] != y[a]).all()
    assert ((p != a) | torch.isin(a, torch.tensor([5, 6]))).all()
    assert p[5] == 5 and p[6] == 6  # singleton classes: the positive is self (RDML)


def _angle(theta):
    return torch.tensor([[torch.cos(torch.tensor(t)), torch.sin(torch.tensor(t))] for t in theta])


def test_distance_miner_weights_follow_inverse_density():
    # D = 2: q^-1(d) ∝ (1 − d²/4)^{1/2}; negatives at d = 0.5 (angle ≈ 0.505) and d = 1.9 (angle ≈ 2.5)
    theta = [0.0, 2 * torch.asin(torch.tensor(0.25)).item(), 2 * torch.asin(torch.tensor(0.95)).item()]
    x, y = _angle(theta), torch.tensor([0, 1, 2])
    w1, w2 = (1 - 0.25 / 4) ** 0.5, (1 - 3.61 / 4) ** 0.5
    miner = losses.build_miner("distance", generator=gen(0))
    picks = [int(miner(x, y)[2][0]) for _ in range(3000)]
    assert picks.count(1) / len(picks) == pytest.approx(w1 / (w1 + w2), abs=0.03)


def test_distance_miner_upper_cutoff():
    theta = [0.0, 0.3, 2.0, 2.5]  # negatives of anchor 0: d(0.3)≈0.3 (<1.4), d(2.0)≈1.68, d(2.5)≈1.9
    x, y = _angle(theta), torch.tensor([0, 1, 2, 3])
    with_cut = losses.build_miner("distance", upper_cutoff=1.4, generator=gen(0))
    assert {int(with_cut(x, y)[2][0]) for _ in range(50)} == {1}
    without = losses.build_miner("distance", generator=gen(0))
    assert {int(without(x, y)[2][0]) for _ in range(400)} == {1, 2, 3}


def test_distance_miner_survives_antipodal_and_unnormalised_points():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    a, p, n = losses.build_miner("distance")(x, torch.tensor([0, 1, 2, 3]))
    assert len(a) == 4 and (n != a).all()


def test_lifted_miner_returns_all_pairs_of_anchors_with_positives():
    y = torch.tensor([0, 0, 1, 2])
    a1, p, a2, n = losses.build_miner("lifted")(torch.randn(4, 2), y)
    assert sorted(zip(a1.tolist(), p.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert sorted(zip(a2.tolist(), n.tolist(), strict=True)) == [(0, 2), (0, 3), (1, 2), (1, 3)]


def test_npair_miner_one_positive_all_negatives():
    y = torch.tensor([0, 0, 0, 1, 2])
    a1, p, a2, n = losses.build_miner("npair", generator=gen(0))(torch.randn(5, 2), y)
    assert a1.tolist() == [0, 1, 2]
    assert ((y[p] == y[a1]) & (p != a1)).all()
    assert sorted(zip(a2.tolist(), n.tolist(), strict=True)) == [(i, j) for i in range(3) for j in (3, 4)]


@pytest.mark.parametrize("name", losses.MINERS.names())
def test_every_miner_runs_without_grad_on_edge_batches(name):
    for y in (torch.tensor([0]), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2])):
        x = torch.nn.functional.normalize(torch.randn(len(y), 3), dim=1).requires_grad_()
        out = losses.build_miner(name)(x, y)
        assert len(out) in (3, 4)
        assert all(t.dtype == torch.long and not t.requires_grad for t in out)


def test_unknown_miner_and_kwarg():
    with pytest.raises(ValueError, match="unknown miner 'semi'"):
        losses.build_miner("semi")
    with pytest.raises(TypeError, match="'batch_hard'.*generator"):
        losses.build_miner("batch_hard", generator=gen(0))
