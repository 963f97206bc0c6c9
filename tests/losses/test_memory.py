"""Cross-batch memory: batch-vs-(batch ∪ memory) equals brute force on the concatenation, enqueue order and
timing, warm-up, DAS rows kept out, refusals, exact state_dict round trip."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metric_retrieval import losses
from metric_retrieval.losses.memory import CrossBatchMemory
from metric_retrieval.producers import DAS

D = 6


def batch(seed: int, n: int = 8, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    return emb, torch.randint(0, classes, (n,), generator=g)


def d(u, v, squared=False):
    sq = sum((a - b) ** 2 for a, b in zip(u.tolist(), v.tolist()))
    return sq if squared else math.sqrt(sq)


def s(u, v):
    return sum(a * b for a, b in zip(u.tolist(), v.tolist()))


def anchored(y, n):
    """All (a, p) and (a, n) pairs with the anchor among the first n rows, by loops."""
    pos = [(a, j) for a in range(n) for j in range(len(y)) if j != a and y[j] == y[a]]
    neg = [(a, j) for a in range(n) for j in range(len(y)) if y[j] != y[a]]
    return pos, neg


def bf_triplet(x, y, n, margin=0.2):
    pos, neg = anchored(y, n)
    vals = [max(d(x[a], x[p], True) - d(x[a], x[q], True) + margin, 0.0)
            for a, p in pos for b, q in neg if a == b]
    return sum(vals) / len(vals)


def bf_contrastive(x, y, n, pos_margin=0.0, neg_margin=1.0):
    pos, neg = anchored(y, n)
    return (sum(max(d(x[a], x[p]) - pos_margin, 0.0) for a, p in pos) / len(pos)
            + sum(max(neg_margin - d(x[a], x[q]), 0.0) for a, q in neg) / len(neg))


def bf_margin(x, y, n, beta=1.25, alpha=0.2):
    """RDML margin loss over every batch-anchored triplet; mean over triplets with a non-zero part."""
    pos, neg = anchored(y, n)
    parts = [(max(math.sqrt(d(x[a], x[p], True) + 1e-8) - beta + alpha, 0.0),
              max(beta - math.sqrt(d(x[a], x[q], True) + 1e-8) + alpha, 0.0))
             for a, p in pos for b, q in neg if a == b]
    return sum(u + v for u, v in parts) / max(sum(u > 0 or v > 0 for u, v in parts), 1)


def bf_multi_similarity(x, y, n, alpha=2.0, beta=40.0, base=0.5, eps=0.1):
    out = []
    for i in range(n):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [j for j in range(len(y)) if y[j] != y[i]]
        if not pos or not neg:
            continue
        kn = [j for j in neg if s(x[i], x[j]) + eps > min(s(x[i], x[p]) for p in pos)]
        kp = [j for j in pos if s(x[i], x[j]) - eps < max(s(x[i], x[q]) for q in neg)]
        if kn and kp:
            out.append(math.log(1 + sum(math.exp(-alpha * (s(x[i], x[p]) - base)) for p in kp)) / alpha
                       + math.log(1 + sum(math.exp(beta * (s(x[i], x[q]) - base)) for q in kn)) / beta)
    return sum(out) / len(out)


def bf_triplet_batch_hard(x, y, n, margin=0.2):
    vals = []
    for a in range(n):
        pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        neg = [j for j in range(len(y)) if y[j] != y[a]]
        if pos and neg:
            p = max(pos, key=lambda j: d(x[a], x[j]))
            q = min(neg, key=lambda j: d(x[a], x[j]))
            vals.append(max(d(x[a], x[p], True) - d(x[a], x[q], True) + margin, 0.0))
    return sum(vals) / len(vals)


CASES = [({"name": "triplet"}, bf_triplet), ({"name": "contrastive"}, bf_contrastive),
         ({"name": "margin", "beta": 1.25, "beta_per_class": False}, bf_margin),
         ({"name": "multi_similarity"}, bf_multi_similarity),
         ({"name": "triplet", "miner": "batch_hard"}, bf_triplet_batch_hard)]


def memory_criterion(term, size=16, warmup=0):
    crit = losses.build_criterion([{**term, "memory_size": size, "memory_warmup": warmup}], embedding_dim=D)
    return crit.double()


@pytest.mark.parametrize("term, brute", CASES, ids=[c[0]["name"] + ("+" + c[0].get("miner", "")) for c in CASES])
def test_loss_with_memory_equals_brute_force_on_the_concatenation(term, brute):
    crit = memory_criterion(term)
    first, y1 = batch(1)
    second, y2 = batch(2)
    crit(first, None, y1)  # fills the memory with the first batch
    total, _ = crit(second, None, y2)
    x, y = torch.cat([second, first]).detach(), torch.cat([y2, y1]).tolist()
    assert float(total.detach()) == pytest.approx(brute(x, y, len(y2)), rel=1e-9, abs=1e-12)
    total.backward()
    assert second.grad is not None and second.grad.abs().sum() > 0


def test_first_step_equals_the_plain_loss_so_rows_never_meet_their_copy():
    """Enqueue-before-loss would pair every row with its own copy (distance 0) on the very first step."""
    emb, y = batch(3)
    plain = losses.build_criterion([{"name": "contrastive"}]).double()
    crit = memory_criterion({"name": "contrastive"})
    assert crit(emb, None, y)[0].item() == pytest.approx(plain(emb, None, y)[0].item(), rel=1e-12)
    assert len(crit.memories["contrastive"]) == len(y)  # ... and enqueued afterwards


def test_enqueue_order_ring_buffer_and_warmup():
    memory = CrossBatchMemory(size=5, embedding_dim=2, warmup_steps=1)
    rows = [torch.full((3, 2), float(i)) + torch.arange(3.0)[:, None] / 10 for i in range(4)]
    for i, r in enumerate(rows):
        memory.enqueue(r, torch.arange(3) + 10 * i)
        if i == 0:
            assert len(memory) == 0  # warm-up step: nothing stored
    emb, labels = memory.get()
    # steps 2-4 stored 9 rows; the last 5, oldest first, are rows[2][1:] and rows[3]
    assert labels.tolist() == [21, 22, 30, 31, 32]
    assert torch.equal(emb, torch.cat([rows[2][1:], rows[3]]))
    assert int(memory.ptr) == 4 and int(memory.steps) == 4
    memory.enqueue(torch.zeros(7, 2), torch.arange(7))  # larger than the memory: its last 5 rows
    assert memory.get()[1].tolist() == [2, 3, 4, 5, 6]


def test_warmup_steps_leave_the_loss_plain():
    emb, y = batch(4)
    plain = losses.build_criterion([{"name": "triplet"}]).double()
    crit = memory_criterion({"name": "triplet"}, warmup=2)
    for _ in range(2):
        assert crit(emb, None, y)[0].item() == pytest.approx(plain(emb, None, y)[0].item(), rel=1e-12)
    assert len(crit.memories["triplet"]) == 0
    crit(emb, None, y)
    assert len(crit.memories["triplet"]) == len(y)


def test_das_rows_are_never_enqueued_and_eval_leaves_memory_alone():
    emb, y = batch(5, n=8, classes=2)
    das = DAS(num_classes=2, embedding_dim=D, num_produce=3, seed=0)
    crit = losses.build_criterion([{"name": "multi_similarity", "memory_size": 64}], embedding_dim=D, producer=das)
    crit = crit.double()
    crit(emb, None, y)
    stored, labels = crit.memories["multi_similarity"].get()
    assert torch.equal(stored, emb.detach()) and torch.equal(labels, y)
    crit.eval()
    crit(emb, None, y)
    assert len(crit.memories["multi_similarity"]) == 8


@pytest.mark.parametrize("term, why", [
    ({"name": "proxy_anchor"}, "learned proxies"), ({"name": "batch_hard_triplet"}, "mines inside the batch"),
    ({"name": "ls_ce"}, "reads classifier logits"), ({"name": "lifted"}, "change its normalisation")])
def test_losses_without_a_reference_path_refuse_memory(term, why):
    with pytest.raises(ValueError, match=why):
        losses.build_criterion([{**term, "memory_size": 8}], num_classes=3, embedding_dim=D)


def test_warmup_without_memory_is_an_error():
    with pytest.raises(ValueError, match="memory_warmup only applies with memory_size"):
        losses.build_criterion([{"name": "triplet", "memory_warmup": 3}], embedding_dim=D)


def test_state_dict_round_trip_resumes_exactly():
    """A criterion restored from the state_dict of one mid-run continues exactly like the original."""
    term = {"name": "multi_similarity"}
    a = memory_criterion(term, size=12)
    for seed in range(3):
        a(*batch(seed)[:1], None, batch(seed)[1])
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert {"memories.multi_similarity.embeddings", "memories.multi_similarity.ptr"} <= set(state)
    b = memory_criterion(term, size=12)
    b.load_state_dict(state)
    emb, y = batch(7)
    assert a(emb, None, y)[0].item() == b(emb, None, y)[0].item()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert set(losses.build_criterion([term]).state_dict()) == set()  # no memory: no new keys
