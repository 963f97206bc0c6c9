"""Every loss against the brute-force loops of ``brute_force.py``, in float64 and float32, on random batches
and the edge cases (a class with one sample, a one-class batch, all-equal embeddings, a single sample)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metric_retrieval import losses
from tests.losses import brute_force as bf

TOL = {torch.float64: dict(rel=1e-7, abs=1e-9), torch.float32: dict(rel=2e-4, abs=2e-5)}
C, D = 6, 5


def make_batch(kind: str, dtype: torch.dtype, seed: int = 0, normalize: bool = True):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":  # classes 3, 4, 5 have one sample each
        y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 4, 5])
    elif kind == "one_class":
        y = torch.zeros(5, dtype=torch.long)
    elif kind == "all_equal":
        y = torch.tensor([0, 0, 1, 1, 2])
    elif kind == "single":
        y = torch.tensor([2])
    else:
        raise ValueError(kind)
    x = torch.randn(len(y), D, generator=g, dtype=torch.float64)
    if kind == "all_equal":
        x = x[:1].expand(len(y), D).clone()
    if normalize:
        x = F.normalize(x, dim=1)
    return x.to(dtype).requires_grad_(), y


KINDS = ["random", "one_class", "all_equal", "single"]
DTYPES = [torch.float64, torch.float32]


def check(loss_value: torch.Tensor, expected: float, dtype: torch.dtype, inputs) -> None:
    assert loss_value.dim() == 0 and loss_value.dtype == dtype
    assert float(loss_value.detach()) == pytest.approx(expected, **TOL[dtype])
    grads = torch.autograd.grad(loss_value, inputs, allow_unused=True)
    for g in grads:
        assert g is not None, "the loss must stay attached to the graph of every input"
        assert torch.isfinite(g).all()


def lists(x, y):
    return x.detach().double().tolist(), y.tolist()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
class TestEmbeddingLosses:
    def test_contrastive(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        check(losses.build_loss("contrastive")(x, y), bf.contrastive(*lists(x, y)), dtype, [x])

    @pytest.mark.parametrize("squared", [True, False])
    def test_triplet(self, kind, dtype, squared):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("triplet", squared=squared)
        check(loss(x, y), bf.triplet(*lists(x, y), squared=squared), dtype, [x])

    def test_batch_hard_triplet(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        check(losses.build_loss("batch_hard_triplet")(x, y), bf.batch_hard_triplet(*lists(x, y)), dtype, [x])

    def test_margin(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("margin", num_classes=C).to(dtype)
        with torch.no_grad():
            loss.beta.copy_(torch.linspace(0.8, 1.3, C))
        expected = bf.margin(*lists(x, y), beta=loss.beta.detach().double().tolist())
        check(loss(x, y), expected, dtype, [x, loss.beta])

    def test_margin_global_fixed_beta(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("margin", beta_per_class=False, learn_beta=False, nu=0.1).to(dtype)
        assert not list(loss.parameters())
        check(loss(x, y), bf.margin(*lists(x, y), beta=[1.2] * C, nu=0.1), dtype, [x])

    @pytest.mark.parametrize("beta", [40.0, 50.0])
    def test_multi_similarity(self, kind, dtype, beta):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("multi_similarity", beta=beta)
        check(loss(x, y), bf.multi_similarity(*lists(x, y), beta=beta), dtype, [x])

    def test_lifted(self, kind, dtype):
        x, y = make_batch(kind, dtype, normalize=False)
        check(losses.build_loss("lifted")(x, y), bf.lifted(*lists(x, y)), dtype, [x])

    @pytest.mark.parametrize("divisor", [1.0, 4.0])
    def test_npair(self, kind, dtype, divisor):
        x, y = make_batch(kind, dtype, normalize=False)
        loss = losses.build_loss("npair", input_divisor=divisor)
        check(loss(x, y), bf.npair(*lists(x, y), divisor=divisor), dtype, [x])

    def test_proxy_nca(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("proxy_nca", num_classes=C, embedding_dim=D).to(dtype)
        expected = bf.proxy_nca(*lists(x, y), proxies=loss.proxies.detach().double().tolist())
        check(loss(x, y), expected, dtype, [x, loss.proxies])

    def test_proxy_anchor(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("proxy_anchor", num_classes=C, embedding_dim=D).to(dtype)
        expected = bf.proxy_anchor(*lists(x, y), proxies=loss.proxies.detach().double().tolist())
        check(loss(x, y), expected, dtype, [x, loss.proxies])

    def test_normalized_softmax(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("normalized_softmax", num_classes=C, embedding_dim=D).to(dtype)
        expected = bf.normalized_softmax(*lists(x, y), weight=loss.weight.detach().double().tolist())
        check(loss(x, y), expected, dtype, [x, loss.weight])

    @pytest.mark.parametrize("m,s", [(0.5, 16.0), (0.3, 64.0)])
    def test_arcface(self, kind, dtype, m, s):
        x, y = make_batch(kind, dtype)
        loss = losses.build_loss("arcface", num_classes=C, embedding_dim=D, margin=m, scale=s).to(dtype)
        expected = bf.arcface(*lists(x, y), weight=loss.weight.detach().double().tolist(), m=m, s=s)
        check(loss(x, y), expected, dtype, [x, loss.weight])

    def test_binomial(self, kind, dtype):
        x, y = make_batch(kind, dtype)
        check(losses.build_loss("binomial", positive_rule="index")(x, y), bf.binomial(*lists(x, y)), dtype, [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [None, "counts", "tensor"])
def test_ls_ce(dtype, weighted):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, C, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.tensor([0, 1, 1, 2, 5, 5, 5])
    counts = [3, 1, 2, 4, 1, 6]
    kw, weights = {}, None
    if weighted == "counts":
        kw = dict(class_balanced=True, class_counts=counts, temperature=1.0)
        inv = [sum(counts) / n for n in counts]
        weights = [w * C / sum(inv) for w in inv]
    elif weighted == "tensor":
        weights = [0.5, 1.0, 2.0, 1.0, 1.0, 3.0]
        kw = dict(class_weights=torch.tensor(weights))
    loss = losses.build_loss("ls_ce", **kw)
    expected = bf.ls_ce(logits.detach().double().tolist(), y.tolist(), temperature=kw.get("temperature", 0.5),
                        weights=weights)
    check(loss(logits, y), expected, dtype, [logits])


def test_balanced_class_weights_mean_one():
    w = losses.balanced_class_weights(torch.tensor([10, 5, 1]))
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[2] / w[0]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="classes \\[1\\]"):
        losses.balanced_class_weights([3, 0])


def test_arcface_margin_only_on_target():
    """The RDML bug (margin added to every column) would leave the loss equal to the m = 0 loss."""
    x, y = make_batch("random", torch.float64)
    x = x.detach()
    with_m = losses.build_loss("arcface", num_classes=C, embedding_dim=D, margin=0.5)
    no_m = losses.build_loss("arcface", num_classes=C, embedding_dim=D, margin=0.0)
    no_m.weight.data.copy_(with_m.weight.data)
    logits_m, logits_0 = with_m.logits(x, y), no_m.logits(x, y)
    off_target = ~F.one_hot(y, C).bool()
    assert torch.equal(logits_m[off_target], logits_0[off_target])
    assert (logits_m[~off_target] < logits_0[~off_target]).all()
    assert float(with_m(x, y).detach()) > float(no_m(x, y).detach())


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_with_mined_triplets(dtype):
    x, y = make_batch("random", dtype)
    x = x.detach()
    a, p, n = torch.tensor([0, 1, 3, 5]), torch.tensor([1, 2, 4, 6]), torch.tensor([3, 7, 0, 9])
    trip = [(0, 1, 3), (1, 2, 7), (3, 4, 0), (5, 6, 9)]
    xl, yl = lists(x, y)
    assert float(losses.build_loss("triplet")(x, y, (a, p, n))) == pytest.approx(
        bf.triplet(xl, yl, triplets=trip), **TOL[dtype])
    assert float(losses.build_loss("contrastive")(x, y, (a, p, n))) == pytest.approx(
        bf.contrastive(xl, yl, triplets=trip), **TOL[dtype])
    margin = losses.build_loss("margin", num_classes=C).to(dtype)
    expected = bf.margin(xl, yl, [1.2] * C, triplets=trip)
    assert float(margin(x, y, (a, p, n)).detach()) == pytest.approx(expected, **TOL[dtype])
    # pair tuples from the npair miner format: one positive per anchor, all negatives
    pairs = [(0, 2), (3, 4)]
    a1, p1 = torch.tensor([0, 3]), torch.tensor([2, 4])
    a2 = torch.tensor([i for i, _ in pairs for j in bf.negatives(yl, i)])
    n2 = torch.tensor([j for i, _ in pairs for j in bf.negatives(yl, i)])
    xr = make_batch("random", dtype, normalize=False)[0].detach()
    assert float(losses.build_loss("npair")(xr, y, (a1, p1, a2, n2))) == pytest.approx(
        bf.npair(lists(xr, y)[0], yl, pairs=pairs), **TOL[dtype])


@pytest.mark.parametrize("nu", [0.0, 0.1])
def test_margin_counts_triplets_with_an_active_term_once(nu):
    """Hand-computed, α = 0.2, β = 1.2, anchor at 0 on a line (d = |x_i − x_j|):
    (d_ap, d_an) = (1.2, 1.2) → pos 0.2, neg 0.2 (both active); (0.5, 1.3) → 0, 0.1; (0.5, 2.0) → 0, 0.
    Σ = 0.5 over 2 triplets with an active term → 0.25 (RDML); PML's #pos>0 + #neg>0 = 3 would give 0.1667.
    ν adds ν·Σ_t β = ν·3·1.2 after the division."""
    x = torch.tensor([[0.0], [1.2], [-1.2], [0.5], [1.3], [2.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 0, 1, 1])
    triplets = tuple(torch.tensor(v) for v in ([0, 0, 0], [1, 3, 3], [2, 4, 5]))
    loss = losses.build_loss("margin", num_classes=2, nu=nu).double()
    assert float(loss(x, y, triplets).detach()) == pytest.approx(0.25 + nu * 3 * 1.2, abs=1e-7)


def test_proxy_and_internal_mining_losses_reject_indices():
    x, y = make_batch("random", torch.float32)
    t = (torch.tensor([0]), torch.tensor([1]), torch.tensor([3]))
    for name in ("batch_hard_triplet", "proxy_nca", "proxy_anchor", "normalized_softmax", "arcface"):
        loss = losses.build_loss(name, **({} if name == "batch_hard_triplet" else dict(num_classes=C, embedding_dim=D)))
        with pytest.raises(ValueError, match="indices_tuple"):
            loss(x, y, t)


def test_all_losses_registered_and_documented():
    expected = {"contrastive", "triplet", "batch_hard_triplet", "margin", "multi_similarity", "lifted", "npair",
                "proxy_nca", "proxy_anchor", "ls_ce", "normalized_softmax", "arcface", "binomial"}
    assert expected <= set(losses.list_losses())
    for name in losses.list_losses():
        cls = losses.LOSSES.get(name)
        assert cls.input in ("embedding", "logits")
        module = __import__(cls.__module__, fromlist=["x"])
        assert module.__doc__ and "default" in module.__doc__.lower(), name


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match="unknown loss 'tripplet'.*triplet"):
        losses.build_loss("tripplet")
    with pytest.raises(TypeError, match="'triplet'.*marjin"):
        losses.build_loss("triplet", marjin=0.3)
    with pytest.raises(ValueError, match="num_classes"):
        losses.build_loss("proxy_anchor", embedding_dim=4)
    with pytest.raises(ValueError, match="labels"):
        losses.build_loss("triplet")(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        losses.build_loss("proxy_nca", num_classes=3, embedding_dim=2)(torch.randn(2, 2), torch.tensor([0, 3]))


def test_numerics_extreme_scales_are_finite():
    """MS with β = 40 and ProxyAnchor with α = 32 on far-apart points must not overflow."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    for loss in (losses.build_loss("multi_similarity"), losses.build_loss("proxy_anchor", num_classes=2,
                                                                           embedding_dim=2)):
        value = loss(x, y)
        assert math.isfinite(float(value.detach()))
        assert torch.isfinite(torch.autograd.grad(value, x)[0]).all()


@pytest.mark.parametrize("squared", [False, True])
def test_gathered_distances_dense_and_row_paths_agree(squared):
    from metric_retrieval.losses._utils import gathered_distances, row_distances

    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    i, j = torch.randint(0, 6, (40,)), torch.randint(0, 6, (40,))
    dense = gathered_distances(x, i, j, squared)  # 40 > 2·6 pairs → cdist path
    rows = row_distances(x, i, j, squared)
    assert torch.allclose(dense, rows)
    g1, = torch.autograd.grad(dense.sum(), x)
    g2, = torch.autograd.grad(rows.sum(), x)
    assert torch.allclose(g1, g2)
