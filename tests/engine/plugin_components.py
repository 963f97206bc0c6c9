"""A test-local plug-in module: one new, working component of each kind, each declaring its options.

Importing it is the only thing ``tests/engine/test_components.py`` does to make them part of ``train.py``
(flags, YAML keys, range checks, ``--list``, building and training): no other file is edited, and each
component costs its own code plus the one registration line above it.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric_retrieval import optim
from metric_retrieval.data.common import SplitRecords, layout_error, read_rows, require_file
from metric_retrieval.data.registry import DATASETS, Reader, SynthLayout
from metric_retrieval.data.synth import SynthWriter
from metric_retrieval.losses._registry import LOSSES, MINERS
from metric_retrieval.losses._utils import all_triplets, pairwise_distances, to_triplets, zero_loss
from metric_retrieval.losses.base import EmbeddingLoss
from metric_retrieval.losses.miners.base import BaseMiner
from metric_retrieval.models.backbones import BACKBONES
from metric_retrieval.models.backbones.base import FROZEN_BN, Backbone
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.models.heads import HEADS, Head
from metric_retrieval.models.heads.base import EMBEDDING_NORM, l2n
from metric_retrieval.producers._registry import PRODUCERS
from metric_retrieval.samplers._registry import SAMPLERS
from metric_retrieval.samplers.base import BaseBatchSampler
from metric_retrieval.utils.options import Option, declare


@LOSSES.register("plugin_loss")
class PluginLoss(EmbeddingLoss):
    """Soft-margin triplet loss: ``mean softplus(scale · (d(a, p) − d(a, n)))`` over the miner's triplets (every
    valid triplet of the batch without a miner), d the Euclidean distance."""

    options = (Option("scale", float, help="multiplies the distance difference", low=0.0, low_ok=False),)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def compute_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple) -> Tensor:
        a, p, n = to_triplets(indices_tuple, labels)
        if a.numel() == 0:
            return zero_loss(embeddings)
        d_ap = (embeddings[a] - embeddings[p]).pow(2).sum(1).clamp_min(1e-12).sqrt()
        d_an = (embeddings[a] - embeddings[n]).pow(2).sum(1).clamp_min(1e-12).sqrt()
        return F.softplus(self.scale * (d_ap - d_an)).mean()


@MINERS.register("plugin_miner")
class PluginMiner(BaseMiner):
    """The ``keep`` valid triplets with the largest ``d(a, p) − d(a, n)`` (ties: lowest triplet index first)."""

    options = (Option("keep", int, help="triplets kept", low=1),)

    def __init__(self, keep: int = 32, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.keep = keep

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, p, n = all_triplets(labels)
        d = pairwise_distances(embeddings)
        violation = d[a, p] - d[a, n]
        order = torch.sort(violation, descending=True, stable=True).indices[:self.keep]
        return a[order], p[order], n[order]


@SAMPLERS.register("plugin_sampler")
class PluginSampler(BaseBatchSampler):
    """An epoch is ``passes`` independent shuffles of the training set, concatenated and cut into full batches."""

    options = (Option("plugin_sampler_passes", int, 1, "passes over the data per epoch", low=1, kwarg="passes"),)

    def __init__(self, labels, batch_size: int, m: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, passes: int = 1) -> None:
        super().__init__(labels, batch_size, m, seed, rank, world_size)
        self.passes = passes

    def num_global_batches(self) -> int:
        return self.passes * len(self.labels) // self.global_batch_size

    def global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = np.concatenate([rng.permutation(len(self.labels)) for _ in range(self.passes)])
        g = self.global_batch_size
        return [order[i * g:(i + 1) * g] for i in range(self.num_global_batches())]


@optim.OPTIMIZERS.register("plugin_sgd")
@declare(optim.WEIGHT_DECAY, Option("dampening", float, 0.0, "SGD dampening", low=0.0, high=1.0))
def plugin_sgd(groups, lr: float, dampening: float = 0.0) -> torch.optim.Optimizer:
    """SGD with momentum 0.5; each parameter group carries its own weight decay (--weight_decay)."""
    return torch.optim.SGD(groups, lr=lr, momentum=0.5, dampening=dampening)


def write_plugin_data(w: SynthWriter, ipc: int, num_classes: int = 8) -> None:
    """``images/<class>/<k>.png`` and ``split.csv`` (``split,path,class``): the first half of the classes train."""
    rows = []
    for c in range(num_classes):
        for k in range(ipc):
            rel = f"images/{c:02d}/{k}.png"
            w.image(rel, c)
            rows.append(f"{'train' if c < num_classes // 2 else 'test'},{rel},{c:02d}")
    (w.out / "split.csv").write_text("".join(row + "\n" for row in rows), encoding="utf-8")


@DATASETS.register("plugin_data")
class PluginReader(Reader):
    """``split.csv`` (or the file ``--plugin_data_listing`` names) lists ``split,relative image path,class`` per
    line."""

    name = "plugin_data"
    layout = "<root>/split.csv    lines: split,images/<class>/<file>,<class>\n<root>/images/<class>/*.png\n"
    synth = SynthLayout(write_plugin_data, images_per_class=4)
    options = (Option("plugin_data_listing", str, "split.csv", "the listing file under the root", kwarg="listing"),)

    def __init__(self, root, listing: str = "split.csv") -> None:
        super().__init__(root)
        self.listing = listing

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        listing = require_file(self.root / self.listing, self.layout)
        paths, labels = [], []
        for number, parts in read_rows(listing, 1, "split,path,class"):
            fields = " ".join(parts).split(",")
            if len(fields) != 3:
                raise layout_error(f"line {number} has {len(fields)} fields, expected 3", listing, self.layout)
            if fields[0] == split:
                paths.append(str(self.root / fields[1]))
                labels.append(fields[2])
        return SplitRecords(paths, labels)


class PluginNet(Backbone):
    """Two strided 3×3 conv + BN + ReLU stages of ``8·w`` and ``16·w`` channels (w = ``width_mult``)."""

    def __init__(self, width_mult: float = 1.0, frozen_bn: bool = False) -> None:
        super().__init__(frozen_bn)
        c1, c2 = max(1, round(8 * width_mult)), max(1, round(16 * width_mult))
        self.stem = nn.Sequential(nn.Conv2d(3, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())
        self.num_features = c2
        self.stage_info = [dict(num_chs=c1, reduction=2, module="stem"), dict(num_chs=c2, reduction=4, module="stage")]
        self._set_taps(None, ("stage",))

    def _stages(self):
        yield "stem", self.stem
        yield "stage", self.stage


@BACKBONES.register("plugin_backbone")
@declare(FROZEN_BN, Option("plugin_width_mult", float, None, "channel width multiplier", low=0.0, low_ok=False))
def plugin_backbone(pretrained=None, frozen_bn: bool = False, plugin_width_mult: float = 1.0) -> PluginNet:
    if pretrained not in (None, False, "", "none"):
        raise ModelConfigError(f"plugin_backbone has no pretrained weights, got pretrained={pretrained!r}")
    return PluginNet(plugin_width_mult, frozen_bn)


@PRODUCERS.register("plugin_producer")
class PluginProducer(nn.Module):
    """Appends one noisy copy ``e + σ·N(0, I)`` of every real row (same label)."""

    options = (Option("plugin_producer", bool, False, "add noisy copies of the embeddings"),
               Option("plugin_producer_noise", float, 0.1, "noise standard deviation", low=0.0))
    produced_rows: ClassVar[int] = 0  # over every instance: lets a test see that training called it

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__()
        self.noise = noise
        self.last_stats: dict[str, float] = {}

    @staticmethod
    def enabled(cfg) -> bool:
        return bool(cfg.get("plugin_producer"))

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_dim: int) -> PluginProducer:
        return cls(cfg["plugin_producer_noise"])

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        shift = self.noise * torch.randn_like(embeddings)
        PluginProducer.produced_rows += len(embeddings)
        self.last_stats = {"shift": float(shift.norm(dim=1).mean())}
        return torch.cat([embeddings, embeddings + shift]), torch.cat([labels, labels])


@HEADS.register("plugin_head")
class PluginHead(Head):
    """Average pooling → ``Linear(C, D)`` → L2; with classes, cosine logits ``l2n(e) · l2n(W)ᵀ / temperature``."""

    options = (Option("plugin_head_temperature", float, None, "cosine-classifier temperature", low=0.0,
                      low_ok=False, kwarg="temperature"),
               EMBEDDING_NORM)

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 temperature: float = 0.1, embedding_norm: bool = True) -> None:
        super().__init__()
        self.feature_dim = self._positive("feature_dim", feature_dim or in_channels)
        self.num_classes = self._num_classes(num_classes)
        self.temperature, self.embedding_norm = temperature, embedding_norm
        self.fc = nn.Linear(in_channels, self.feature_dim)
        self.classes = nn.Parameter(torch.randn(self.num_classes, self.feature_dim)) if self.num_classes else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        e = self.fc(x.mean(dim=(2, 3)))
        logits = l2n(e) @ l2n(self.classes).t() / self.temperature if self.classes is not None else None
        return (l2n(e) if self.embedding_norm else e), logits
