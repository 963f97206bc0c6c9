"""Batch miners: index-tuple producers for the embedding losses."""
from metric_retrieval.losses.miners.base import BaseMiner
from metric_retrieval.losses.miners.batch_hard import BatchHardMiner
from metric_retrieval.losses.miners.distance import DistanceWeightedMiner
from metric_retrieval.losses.miners.lifted import LiftedMiner
from metric_retrieval.losses.miners.npair import NPairMiner
from metric_retrieval.losses.miners.random import RandomMiner
from metric_retrieval.losses.miners.semihard import SemihardMiner

__all__ = [
    "BaseMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "LiftedMiner",
    "NPairMiner",
    "RandomMiner",
    "SemihardMiner",
]
