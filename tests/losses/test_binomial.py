"""Binomial deviance: the positive rule of Deep_Metric ``losses/Binomial.py`` (ABIR's default) and the index rule.

The reference below transcribes Deep_Metric's per-anchor arithmetic (no hard mining): positives are the
same-label similarities below 1 (the anchor itself included when S_ii rounds below 1), the means over
positives and negatives, anchors without negatives skipped but counted in n.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metric_retrieval.losses import LOSSES


def deep_metric_binomial(x: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, margin: float = 0.5
                         ) -> torch.Tensor:
    sim = x @ x.t()
    total = []
    for i in range(x.shape[0]):
        same = sim[i][labels == labels[i]]
        pos = same[same < 1]
        neg = sim[i][labels != labels[i]]
        if len(neg) == 0:
            continue
        pos_cost = torch.log(1 + torch.exp(-2 * (pos - margin))).mean()  # NaN when pos is empty
        neg_cost = torch.log(1 + torch.exp(alpha * (neg - margin))).mean()
        total.append(pos_cost + neg_cost)
    return sum(total) / x.shape[0]


def index_rule_reference(x: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, margin: float = 0.5
                         ) -> torch.Tensor:
    sim = x @ x.t()
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        others = torch.arange(x.shape[0]) != i
        pos = sim[i][(labels == labels[i]) & others]
        neg = sim[i][labels != labels[i]]
        if len(pos) and len(neg):
            total = total + F.softplus(-2 * (pos - margin)).mean() + F.softplus(alpha * (neg - margin)).mean()
    return total / x.shape[0]


def _batch(seed: int, b: int = 32, d: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=1)
    return x, torch.arange(b) // 4  # 8 classes x 4 images, as ABIR's batches


@pytest.mark.parametrize("seed", range(5))
def test_similarity_rule_equals_deep_metric_and_differs_from_the_index_rule(seed):
    x, labels = _batch(seed)
    self_sim = (x * x).sum(dim=1)
    assert (self_sim < 1).any() and (self_sim >= 1).any()  # fp32 rounding splits the rows both ways
    original = LOSSES.build("binomial")  # the default is ABIR's (Deep_Metric's) rule
    index = LOSSES.build("binomial", positive_rule="index")
    expected = deep_metric_binomial(x, labels)
    torch.testing.assert_close(original(x, labels), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(index(x, labels), index_rule_reference(x, labels), atol=1e-6, rtol=1e-6)
    assert abs(index(x, labels).item() - expected.item()) > 1e-3 * expected.item()


def test_similarity_rule_gradients_equal_deep_metric():
    x, labels = _batch(7)
    ours = x.clone().requires_grad_(True)
    ref = x.clone().requires_grad_(True)
    LOSSES.build("binomial")(ours, labels).backward()
    deep_metric_binomial(ref, labels).backward()
    torch.testing.assert_close(ours.grad, ref.grad, atol=1e-6, rtol=1e-5)


def test_an_anchor_without_positives():
    # rows 0 and 1 are exact unit vectors (S_ii = 1 exactly): row 0 is alone in its class
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    assert math.isnan(deep_metric_binomial(x, labels).item())  # Deep_Metric: the mean of no positives
    for rule in ("similarity", "index"):
        loss = LOSSES.build("binomial", positive_rule=rule)(x, labels)
        assert torch.isfinite(loss)
    # here: anchor 0 adds 0 and counts in B; anchors 1 and 2 are each other's only positive (S = 0.8),
    # with S_11 = 1 (dropped by the similarity rule) and S_22 = 0.36 + 0.64 (kept only if it rounds below 1)
    s = 0.8
    anchor = math.log1p(math.exp(-2 * (s - 0.5))), [math.log1p(math.exp(2 * (0.0 - 0.5))),
                                                     math.log1p(math.exp(2 * (0.6 - 0.5)))]
    expected_index = (anchor[0] + anchor[1][0] + anchor[0] + anchor[1][1]) / 3
    index = LOSSES.build("binomial", positive_rule="index")(x, labels)
    assert index.item() == pytest.approx(expected_index, rel=1e-6)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="positive_rule"):
        LOSSES.build("binomial", positive_rule="nearest")
