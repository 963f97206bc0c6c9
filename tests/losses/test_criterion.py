"""The weighted criterion: term wiring, runtime kwargs, miners, an embedding producer (DAS) inside, param groups."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from metric_retrieval import losses
from metric_retrieval.producers import DAS

C, D, B = 5, 8, 10


def batch(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(B, D, generator=g), dim=1).to(dtype).requires_grad_()
    logits = torch.randn(B, C, generator=g).to(dtype).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    return emb, logits, labels


def test_cgd_recipe_sums_terms():
    emb, logits, y = batch()
    crit = losses.build_criterion([{"name": "ls_ce"}, {"name": "batch_hard_triplet", "weight": 2.0}],
                                  num_classes=C, embedding_dim=D)
    total, terms = crit(emb, logits, y)
    ce = losses.build_loss("ls_ce")(logits, y)
    bh = losses.build_loss("batch_hard_triplet")(emb, y)
    assert set(terms) == {"ls_ce", "batch_hard_triplet"}
    assert float(total.detach()) == pytest.approx(float(ce.detach()) + 2 * float(bh.detach()), rel=1e-6)
    assert float(terms["ls_ce"]) == pytest.approx(float(ce.detach()))
    total.backward()
    assert emb.grad is not None and logits.grad is not None


def test_miner_is_used_and_inherits_margin():
    emb, logits, y = batch()
    crit = losses.build_criterion([{"name": "triplet", "margin": 0.35, "miner": "semihard"}])
    assert crit.miners[0].margin == 0.35
    crit2 = losses.build_criterion([{"name": "triplet", "miner": {"name": "semihard", "margin": 0.1}}])
    assert crit2.miners[0].margin == 0.1
    crit3 = losses.build_criterion([{"name": "contrastive", "miner": {"name": "batch_hard"}}])
    a, p, n = losses.build_miner("batch_hard")(emb, y)
    expected = losses.build_loss("contrastive")(emb, y, (a, p, n))
    assert float(crit3(emb, None, y)[0].detach()) == pytest.approx(float(expected.detach()))


def test_names_are_unique_and_keys_respected():
    crit = losses.build_criterion([{"name": "triplet"}, {"name": "triplet", "margin": 0.5},
                                   {"name": "ms", "key": "msl"}])
    assert crit.names == ["triplet", "triplet_2", "msl"]


def test_runtime_kwargs_only_where_declared_and_user_wins():
    counts = [2, 2, 2, 2, 10]
    crit = losses.build_criterion(
        [{"name": "ls_ce", "class_balanced": True, "temperature": 1.0}, {"name": "triplet"},
         {"name": "proxy_anchor", "embedding_dim": D}],
        num_classes=C, embedding_dim=999, class_counts=counts)
    assert torch.allclose(crit.losses[0].class_weights, losses.balanced_class_weights(counts).float())
    assert crit.losses[2].proxies.shape == (C, D)
    unweighted = losses.build_criterion([{"name": "ls_ce"}], num_classes=C, class_counts=counts)
    assert unweighted.losses[0].class_weights is None


def test_errors():
    with pytest.raises(TypeError, match="'triplet'.*marjin"):
        losses.build_criterion([{"name": "triplet", "marjin": 1}])
    with pytest.raises(TypeError, match="'semihard'.*foo"):
        losses.build_criterion([{"name": "triplet", "miner": {"name": "semihard", "foo": 1}}])
    with pytest.raises(ValueError, match="takes no miner"):
        losses.build_criterion([{"name": "batch_hard_triplet", "miner": "semihard"}])
    with pytest.raises(ValueError, match="unknown loss"):
        losses.build_criterion([{"name": "nope"}])
    with pytest.raises(ValueError, match="aux_loss_weight"):
        losses.build_criterion([{"name": "triplet"}], aux_loss_weight=1.0)
    emb, _, y = batch()
    crit = losses.build_criterion([{"name": "ls_ce"}])
    with pytest.raises(ValueError, match="logits"):
        crit(emb, None, y)


def _das_kwargs():
    return dict(num_produce=2, dfs_num_scale=3, mts_scale=0.1, seed=7)


@pytest.mark.parametrize("aux", [None, 0.5])
def test_das_inside_criterion(aux):
    emb, logits, y = batch()
    crit = losses.build_criterion([{"name": "multi_similarity"}, {"name": "ls_ce"}], num_classes=C,
                                  embedding_dim=D, producer=DAS(C, D, **_das_kwargs()),
                                  aux_loss_weight=aux)
    reference_das = DAS(C, D, **_das_kwargs())
    total, terms = crit(emb, logits, y)
    emb_all, y_all = reference_das(emb, y)
    assert emb_all.shape == (3 * B, D)
    ms = losses.build_loss("multi_similarity")
    expected_ms = ms(emb_all, y_all) if aux is None else ms(emb, y) + aux * ms(emb_all, y_all)
    assert float(terms["multi_similarity"]) == pytest.approx(float(expected_ms.detach()), rel=1e-6)
    assert float(terms["ls_ce"]) == pytest.approx(float(losses.build_loss("ls_ce")(logits, y).detach()))
    assert "producer.frm" in crit.state_dict() and "producer._extra_state" in crit.state_dict()
    assert set(crit.stats()) == {"das_mean_dist"}
    # eval mode: DAS passes through, state untouched
    crit.eval()
    frm = crit.producer.frm.clone()
    _, terms_eval = crit(emb, logits, y)
    assert torch.equal(frm, crit.producer.frm)
    assert float(terms_eval["multi_similarity"]) == pytest.approx(float(ms(emb, y).detach()), rel=1e-6)


def test_producer_module_instance_accepted():
    das = DAS(C, D)
    crit = losses.build_criterion([{"name": "triplet", "miner": "distance"}], producer=das)
    assert crit.producer is das and crit.stats() == {}
    emb, _, y = batch()
    total, _ = crit(emb, None, y)
    total.backward()
    assert torch.isfinite(emb.grad).all()


def test_param_groups():
    crit = losses.build_criterion(
        [{"name": "proxy_anchor"}, {"name": "margin", "miner": "distance"}, {"name": "triplet"},
         {"name": "arcface", "lr": None, "lr_multiplier": 10.0}, {"name": "proxy_nca"}],
        num_classes=C, embedding_dim=D)
    groups = {g["name"]: g for g in crit.param_groups(1e-5)}
    assert set(groups) == {"loss.proxy_anchor", "loss.margin", "loss.arcface", "loss.proxy_nca"}
    assert groups["loss.proxy_anchor"]["lr"] == pytest.approx(1e-3)
    assert groups["loss.margin"]["lr"] == pytest.approx(5e-4)
    assert groups["loss.arcface"]["lr"] == pytest.approx(1e-4)
    assert groups["loss.proxy_nca"]["lr"] == pytest.approx(5e-4)
    assert all(g["weight_decay"] == 0.0 for g in groups.values())
    assert groups["loss.margin"]["params"][0].shape == (C,)
    torch.optim.Adam(crit.param_groups(1e-5))  # valid optimiser groups


def test_half_precision_inputs_are_cast():
    emb, logits, y = batch()
    crit = losses.build_criterion([{"name": "ls_ce"}, {"name": "multi_similarity"}])
    total, _ = crit(emb.detach().half().requires_grad_(), logits.detach().bfloat16(), y)
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_criterion_is_deepcopyable_and_loads_state():
    crit = losses.build_criterion([{"name": "proxy_anchor"}], num_classes=C, embedding_dim=D, producer=DAS(C, D))
    clone = copy.deepcopy(crit)
    clone.load_state_dict(crit.state_dict())
    assert torch.equal(clone.losses[0].proxies, crit.losses[0].proxies)


@pytest.mark.parametrize("name", losses.list_losses())
def test_every_registered_loss_trains_inside_a_das_criterion(name):
    """Registry-wide: default hparams, runtime kwargs filled in, DAS on, one backward pass, finite grads."""
    emb, logits, y = batch(seed=3)
    normalize = name not in ("lifted", "npair")
    crit = losses.build_criterion([{"name": name}], num_classes=C, embedding_dim=D,
                                  class_counts=[2] * C, producer=DAS(C, D, normalize=normalize))
    total, terms = crit(emb, logits, y)
    assert set(terms) == {name} and torch.isfinite(total)
    total.backward()
    grads = [emb.grad, logits.grad, *[p.grad for p in crit.parameters()]]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", losses.list_miners())
def test_every_miner_composes_with_triplet_and_contrastive(name):
    emb, _, y = batch(seed=4)
    for loss in ("triplet", "contrastive", "margin"):
        crit = losses.build_criterion([{"name": loss, "miner": name}], num_classes=C)
        total, _ = crit(emb, None, y)
        assert torch.isfinite(total)


# -- the loss kinds are classes, not attribute conventions (losses/base.py) -------------------------------------
from metric_retrieval.losses.base import EmbeddingLoss, ProxyLoss, reads_logits, takes_miner  # noqa: E402

MINED = ["binomial", "contrastive", "lifted", "margin", "multi_similarity", "npair", "triplet"]
PROXY = {"arcface": "weight", "normalized_softmax": "weight", "proxy_anchor": "proxies", "proxy_nca": "proxies"}


def test_which_losses_take_a_miner_read_logits_or_learn_proxies():
    names = losses.LOSSES.names()
    assert [n for n in names if takes_miner(losses.LOSSES.get(n))] == MINED
    assert [n for n in names if reads_logits(losses.LOSSES.get(n))] == ["ls_ce"]
    assert [n for n in names if issubclass(losses.LOSSES.get(n), ProxyLoss)] == sorted(PROXY)
    assert not takes_miner(losses.build_loss("batch_hard_triplet"))  # an embedding loss that mines itself


@pytest.mark.parametrize("name, key", sorted(PROXY.items()))
def test_a_proxy_loss_owns_one_vector_per_class_and_takes_no_miner(name, key):
    loss = losses.build_loss(name, {"num_classes": C, "embedding_dim": D})
    assert list(loss.state_dict()) == [key] and loss.class_vectors.shape == (C, D)  # checkpoints keep their key
    emb, _, y = batch()
    with pytest.raises(ValueError, match="takes no indices_tuple"):
        loss(emb, y, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {C}\)"):
        loss(emb, torch.full((B,), C))
    empty = loss(emb[:0], y[:0])
    empty.backward()
    assert empty.item() == 0 and torch.equal(loss.class_vectors.grad, torch.zeros(C, D))
    with pytest.raises(ValueError, match="needs num_classes"):
        losses.build_loss(name, {"embedding_dim": D})


def test_a_module_that_is_no_loss_kind_is_refused_by_the_criterion():
    class Norm(torch.nn.Module):  # a loss in all but name: no base says what it reads
        def forward(self, embeddings, labels):
            return embeddings.norm()

    with pytest.raises(TypeError, match="must derive from EmbeddingLoss or LogitsLoss"):
        losses.Criterion([Norm()], [1.0], [None], ["norm"])
    assert isinstance(losses.build_loss("triplet"), EmbeddingLoss)


def test_proxy_nca_needs_two_classes():
    with pytest.raises(ValueError, match="ProxyNCALoss needs num_classes >= 2, got 1"):
        losses.build_loss("proxy_nca", {"num_classes": 1, "embedding_dim": D})
