"""A test-local plug-in module: one new component of each kind, each declaring one option.

Importing it is the only thing ``tests/engine/test_components.py`` does to make them part of ``train.py``
(flags, YAML keys, range checks, ``--list``): no other file is edited.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metric_retrieval import optim
from metric_retrieval.data.registry import DATASETS, Reader
from metric_retrieval.losses._registry import LOSSES, MINERS
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.losses.miners.base import BaseMiner
from metric_retrieval.models.backbones import BACKBONES, build_backbone
from metric_retrieval.models.heads import HEADS, Head
from metric_retrieval.producers._registry import PRODUCERS
from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.shuffle import ShuffleBatchSampler
from metric_retrieval.utils.options import Option, declare


@LOSSES.register("plugin_loss")
class PluginLoss(EmbeddingLoss):
    options = (Option("scale", float, help="multiplies the mean squared norm", low=0.0, low_ok=False),)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple) -> Tensor:
        return self.scale * embeddings.pow(2).sum(1).mean()


@MINERS.register("plugin_miner")
class PluginMiner(BaseMiner):
    options = (Option("keep", int, help="triplets kept", low=1),)

    def __init__(self, keep: int = 4, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.keep = keep


@SAMPLERS.register("plugin_sampler")
class PluginSampler(ShuffleBatchSampler):
    options = (Option("plugin_sampler_passes", int, 1, "passes over the data per epoch", low=1, kwarg="passes"),)

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, passes: int = 1) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        self.passes = passes


@optim.OPTIMIZERS.register("plugin_sgd")
@declare(optim.WEIGHT_DECAY, Option("dampening", float, 0.0, "SGD dampening", low=0.0, high=1.0))
def plugin_sgd(groups, lr: float, dampening: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=0.5, dampening=dampening)


@DATASETS.register("plugin_data")
class PluginReader(Reader):
    name = "plugin_data"
    options = (Option("plugin_data_fraction", float, 1.0, "fraction of the images read", low=0.0, low_ok=False,
                      high=1.0, to_builder=False),)


@BACKBONES.register("plugin_backbone")
@declare(Option("plugin_width_mult", float, None, "channel width multiplier", low=0.0, low_ok=False))
def plugin_backbone(pretrained=False, frozen_bn: bool = False, plugin_width_mult: float = 1.0):
    return build_backbone("resnet18", pretrained=pretrained, frozen_bn=frozen_bn)


@PRODUCERS.register("plugin_producer")
class PluginProducer(nn.Module):
    options = (Option("plugin_producer", bool, False, "add noisy copies of the embeddings"),
               Option("plugin_producer_noise", float, 0.1, "noise standard deviation", low=0.0))

    @staticmethod
    def enabled(cfg) -> bool:
        return bool(cfg.get("plugin_producer"))

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_dim: int) -> PluginProducer:
        return cls()


@HEADS.register("plugin_head")
class PluginHead(Head):
    options = (Option("plugin_head_temperature", float, None, "embedding temperature", low=0.0, low_ok=False,
                      kwarg="temperature"),)
