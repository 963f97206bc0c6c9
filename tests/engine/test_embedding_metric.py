"""Evaluation compares embeddings the way the model makes them: cosine when L2-normalised, else Euclidean."""
from __future__ import annotations

import pytest
import torch

from metric_retrieval import models
from metric_retrieval.training import evaluate as evaluate_module

# Two classes; each point's own-class neighbour is the nearest in Euclidean distance, but class 1's points are
# 10x longer, so an inner product ranks them first for every query (class 0 then never finds its pair).
EMBEDDINGS = torch.tensor([[1.0, 0.0], [1.1, 0.0], [10.0, 1.0], [10.0, 1.2]])
LABELS = torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("embedding_norm, metric", [(True, "ip"), (False, "l2")])
def test_the_models_embedding_metric_follows_its_head(embedding_norm, metric):
    model = models.build_model("resnet18", "baseline", 8, embedding_norm=embedding_norm)
    assert model.embedding_metric == metric


def test_unnormalised_embeddings_are_evaluated_by_euclidean_distance(monkeypatch):
    model = models.build_model("resnet18", "baseline", 2, embedding_norm=False)
    monkeypatch.setattr(evaluate_module, "embed_dataset",
                        lambda *a, **k: {"embeddings": EMBEDDINGS, "labels": LABELS, "paths": []})
    cfg = {"knn_backend": "torch", "eval_chunk_size": None, "image_size": 32, "transform": "cgd"}
    metrics, _ = evaluate_module.evaluate_split(model, {"test": None}, "leave_one_out", [1], cfg, "cpu", None)
    # brute force: each point's Euclidean nearest other point is its own class's partner -> R@1 = 1; by inner
    # product class 0's queries would retrieve class 1 (R@1 = 0.5)
    distances = torch.cdist(EMBEDDINGS, EMBEDDINGS).fill_diagonal_(float("inf"))
    assert (LABELS[distances.argmin(1)] == LABELS).float().mean() == 1.0
    assert metrics["recall@1"] == 1.0
