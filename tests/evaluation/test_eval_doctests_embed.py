"""The doctest examples of the evaluation modules, and embed()."""
import doctest
import importlib

import pytest
import torch
from torch import nn

from metric_retrieval.evaluation.embed import embed

MODULES = ["metric_retrieval.evaluation.knn", "metric_retrieval.evaluation.metrics",
"metric_retrieval.evaluation.landmark_metrics", "metric_retrieval.evaluation.whitening",
           "metric_retrieval.evaluation.query_expansion"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x)), None


def test_embed_order_labels_and_mode():
    data = [(torch.randn(4), i % 2, i) for i in range(10)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model = _Model().train()
    e, y, idx = embed(model, loader)
    assert e.shape == (10, 3) and y.tolist() == [i % 2 for i in range(10)] and idx.tolist() == list(range(10))
    assert model.training
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(e, model(torch.stack([d[0] for d in data]))[0])
