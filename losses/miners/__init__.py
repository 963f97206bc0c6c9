"""Batch miners: index-tuple producers for the embedding losses."""
from losses.miners.base import BaseMiner
from losses.miners.batch_hard import BatchHardMiner
from losses.miners.distance import DistanceWeightedMiner
from losses.miners.lifted import LiftedMiner
from losses.miners.npair import NPairMiner
from losses.miners.random import RandomMiner
from losses.miners.semihard import SemihardMiner

__all__ = [
    "BaseMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "LiftedMiner",
    "NPairMiner",
    "RandomMiner",
    "SemihardMiner",
]
