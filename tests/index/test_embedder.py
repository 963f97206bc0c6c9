"""The embedding width of :class:`metric_retrieval.retrieval.embedder.Embedder`: known from the first batch, probed only
when asked before one."""
from __future__ import annotations

import torch

from metric_retrieval.retrieval.embedder import Embedder


def test_dim_comes_from_the_recipe_without_a_forward(checkpoint):
    embedder = Embedder(checkpoint)
    forwards = []
    embedder.model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    assert embedder.dim == embedder.recipe.embedding_dim == 8 and forwards == []
    out = embedder(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    assert out.shape == (3, 8) and forwards == [3]


def test_an_unnormalised_models_embeddings_are_not_normalised(tmp_path):
    """The Embedder returns the model's own output: what the run's evaluation and database ranked."""
    from tests.index.conftest import save_checkpoint

    embedder = Embedder(save_checkpoint(tmp_path / "m.pth", embedding_norm=False))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = embedder.model(embedder.prepare(images))[0]
    torch.testing.assert_close(embedder(images), expected)
    assert not torch.allclose(expected.norm(dim=1), torch.ones(2))
    assert embedder.recipe.metric == "l2" and not embedder.recipe.normalized
