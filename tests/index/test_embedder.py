"""The embedding width of :class:`metric_retrieval.retrieval.embedder.Embedder`: known from the first batch, probed only
when asked before one."""
from __future__ import annotations

import torch

from metric_retrieval.retrieval.embedder import Embedder


def test_dim_comes_from_the_first_batch_or_a_probe(checkpoint):
    embedder = Embedder(checkpoint)
    forwards = []
    embedder.model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    out = embedder(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    assert embedder.dim == out.shape[1] == 8 and forwards == [3]  # no probe: the batch told the width
    probed = Embedder(checkpoint)
    probed.model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    assert probed.dim == 8 and forwards == [3, 1]  # asked before any batch: one one-image forward
    assert probed.dim == 8 and forwards == [3, 1]
