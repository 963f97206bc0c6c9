"""Embedding producers: training-time modules that add generated rows to a batch of embeddings.

A producer maps ``(embeddings (B, D), labels (B,))`` to ``(E' (B', D), y' (B',))`` with the real rows
first; the criterion's embedding losses see its output, logits losses and evaluation never do. Producers
are registered in ``PRODUCERS`` and describe themselves (fairseq style):

- ``options`` (:mod:`metric_retrieval.utils.options`) declares the producer's own flags (and its switch, e.g. ``--das``)
  with their ranges; the ``train.py`` parser and the YAML keys (the same names) are assembled from them;
- ``enabled(cfg)`` says whether the resolved config turns it on; ``check_config(cfg)`` lists problems;
- ``from_config(cfg, num_classes, embedding_dim)`` builds it;
- ``last_stats`` (a dict of floats) is what the trainer logs after each step.

Adding one is one module here plus its import line below.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from metric_retrieval.producers._registry import PRODUCERS
from metric_retrieval.producers.das import DAS

__all__ = ["DAS", "PRODUCERS", "build_producer", "producer_conflicts"]


def _enabled(cfg: dict[str, Any]) -> list[str]:
    return [name for name in PRODUCERS.names() if PRODUCERS.get(name).enabled(cfg)]


def producer_conflicts(cfg: dict[str, Any]) -> list[str]:
    """At most one producer may be on (each producer's own ``check_config`` runs with the other components')."""
    on = _enabled(cfg)
    return [f"only one embedding producer can be on, got {', '.join(on)}"] if len(on) > 1 else []


def build_producer(cfg: dict[str, Any], num_classes: int, embedding_dim: int) -> nn.Module | None:
    """The producer the config turns on, or None."""
    on = _enabled(cfg)
    return PRODUCERS.get(on[0]).from_config(cfg, num_classes, embedding_dim) if on else None
