"""Embedding producers: training-time modules that add generated rows to a batch of embeddings.

A producer maps ``(embeddings (B, D), labels (B,))`` to ``(E' (B', D), y' (B',))`` with the real rows
first; the criterion's embedding losses see its output, logits losses and evaluation never do. Producers
are registered in ``PRODUCERS`` and describe themselves (fairseq style):

- ``add_args(group)`` declares the producer's own flags (and its switch, e.g. ``--das``) on the
  ``train.py`` parser; the YAML keys are the same names;
- ``enabled(cfg)`` says whether the resolved config turns it on; ``check_config(cfg)`` lists problems;
- ``from_config(cfg, num_classes, embedding_dim)`` builds it;
- ``last_stats`` (a dict of floats) is what the trainer logs after each step.

Adding one is one module here plus its import line below.
"""
from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from producers._registry import PRODUCERS
from producers.das import DAS

__all__ = ["DAS", "PRODUCERS", "add_producer_args", "build_producer", "check_producer_config"]


def add_producer_args(parser: argparse.ArgumentParser) -> None:
    """Every registered producer's flags, one argument group each."""
    for name in PRODUCERS.names():
        PRODUCERS.get(name).add_args(parser.add_argument_group(f"embedding producer: {name}"))


def _enabled(cfg: dict[str, Any]) -> list[str]:
    return [name for name in PRODUCERS.names() if PRODUCERS.get(name).enabled(cfg)]


def check_producer_config(cfg: dict[str, Any]) -> list[str]:
    """Problems with the producer settings: at most one producer on, and each producer's own checks."""
    problems = [p for name in PRODUCERS.names() for p in PRODUCERS.get(name).check_config(cfg)]
    on = _enabled(cfg)
    if len(on) > 1:
        problems.append(f"only one embedding producer can be on, got {', '.join(on)}")
    return problems


def build_producer(cfg: dict[str, Any], num_classes: int, embedding_dim: int) -> nn.Module | None:
    """The producer the config turns on, or None."""
    on = _enabled(cfg)
    return PRODUCERS.get(on[0]).from_config(cfg, num_classes, embedding_dim) if on else None
