"""Metric-learning losses, batch miners and the weighted training criterion.

``build_loss(name, **hparams)``, ``build_miner(name, **kw)`` and ``build_criterion(terms, ...)`` are the entry
points; ``LOSSES`` / ``MINERS`` are the registries (``list_losses()`` / ``list_miners()`` name them).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from metric_retrieval.losses._registry import LOSSES, MINERS, build_loss, check_kwargs
from metric_retrieval.losses.arcface import ArcFaceLoss
from metric_retrieval.losses.base import EmbeddingLoss, LogitsLoss
from metric_retrieval.losses.batch_hard_triplet import BatchHardTripletLoss
from metric_retrieval.losses.binomial import BinomialDevianceLoss
from metric_retrieval.losses.contrastive import ContrastiveLoss
from metric_retrieval.losses.criterion import Criterion, build_criterion
from metric_retrieval.losses.lifted import LiftedLoss
from metric_retrieval.losses.ls_ce import LabelSmoothingCELoss, balanced_class_weights
from metric_retrieval.losses.margin import MarginLoss
from metric_retrieval.losses.miners import (
    BaseMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    LiftedMiner,
    NPairMiner,
    RandomMiner,
    SemihardMiner,
)
from metric_retrieval.losses.multi_similarity import MultiSimilarityLoss
from metric_retrieval.losses.normalized_softmax import NormalizedSoftmaxLoss
from metric_retrieval.losses.npair import NPairLoss
from metric_retrieval.losses.proxy_anchor import ProxyAnchorLoss
from metric_retrieval.losses.proxy_nca import ProxyNCALoss
from metric_retrieval.losses.triplet import TripletLoss


def build_miner(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered miner (``generator=`` gives it its own ``torch.Generator``)."""
    cls = MINERS.get(name)
    check_kwargs("miner", name, cls, kwargs)
    return cls(**kwargs)


def list_losses() -> list[str]:
    return LOSSES.names()


def list_miners() -> list[str]:
    return MINERS.names()


__all__ = [
    "LOSSES",
    "MINERS",
    "ArcFaceLoss",
    "BaseMiner",
    "BatchHardMiner",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "ContrastiveLoss",
    "Criterion",
    "DistanceWeightedMiner",
    "EmbeddingLoss",
    "LabelSmoothingCELoss",
    "LiftedLoss",
    "LiftedMiner",
    "LogitsLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairLoss",
    "NPairMiner",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RandomMiner",
    "SemihardMiner",
    "TripletLoss",
    "balanced_class_weights",
    "build_criterion",
    "build_loss",
    "build_miner",
    "list_losses",
    "list_miners",
]
