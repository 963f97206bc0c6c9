"""Backbone contract shared by every trunk (timm style: ``forward_features``, ``forward_intermediates``,
``feature_info``).

A backbone maps images ``(B, 3, H, W)`` to its last feature map ``(B, C, H', W')`` through
:meth:`Backbone.forward_features`; :meth:`Backbone.forward_intermediates` returns the maps of the configured
``taps`` (for multi-level heads such as ABIR), described one-to-one by ``feature_info``. ``num_features`` is
``C`` and ``input_spec`` says how images must be normalised. ``frozen_bn=True`` keeps every BatchNorm layer of
the trunk in eval mode (running statistics fixed) whatever ``train()`` is called with, while its affine
parameters stay trainable (CGD/CLF ``set_bn_eval``, RDML ``frozen``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.utils.options import Option

__all__ = ["CAFFE_BGR255", "DEEP_METRIC_BGR255", "FROZEN_BN", "IMAGENET_RGB", "RESNET_STAGES", "STAGE3_STRIDE", "TAPS",
           "Backbone", "InputSpec", "check_stage3_stride", "resnet_stage_info", "resnet_stages", "set_stage_stride"]

# Options the backbone builders declare (metric_retrieval.utils.options); None leaves the builder's (or the head's)
# default.
FROZEN_BN = Option("frozen_bn", bool, None, "keep backbone BatchNorm2d statistics fixed (affine still trained)",
                   negatable=True)
STAGE3_STRIDE = Option("stage3_stride", int, None, "1 keeps a 14x14 map at 224 (ResNets)", low=1, high=2)
TAPS = Option("taps", str, None, "maps forward_intermediates returns for multi-level heads, comma-separated stage "
                                 "names (or a YAML list); default: the backbone's", flag=False)

COLOURS = ("RGB", "BGR255")


@dataclass(frozen=True)
class InputSpec:
    """How input images must be prepared for a backbone.

    Args:
        mean: per-channel mean subtracted after the colour conversion (channel order of ``colour``).
        std: per-channel divisor applied after the mean subtraction.
        colour: ``"RGB"`` = RGB scaled to [0, 1] (``ToTensor``) then ``(x - mean) / std`` (torchvision);
            ``"BGR255"`` = channels reversed to BGR, kept in [0, 255], then ``(x - mean) / std`` (Caffe).
        interpolation: resize filter the weights were trained with (timm ``pretrained_cfg``: ``bicubic``
            for most ViTs).
        input_size: ``(3, H, W)`` the weights were trained at, or ``None`` when any size is native (CNNs).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    colour: str = "RGB"
    interpolation: str = "bilinear"
    input_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour convention {self.colour!r}; choose one of: "
                             f"{', '.join(COLOURS)}")

    def as_dict(self) -> dict:
        return asdict(self)


IMAGENET_RGB = InputSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), colour="RGB")
CAFFE_BGR255 = InputSpec(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), colour="BGR255")
# Deep_Metric's transform (ABIR's released code): RGB→BGR, ToTensor, Normalize([104, 117, 128]/255, 1/255)
DEEP_METRIC_BGR255 = InputSpec(mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), colour="BGR255")


class Backbone(nn.Module):
    """Base class: the forward contract, ``taps`` bookkeeping and frozen BatchNorm.

    Subclasses set ``num_features``, ``input_spec``, ``stage_info`` (one ``dict(num_chs, reduction, module)``
    per tappable stage, in forward order), ``self.taps`` and implement :meth:`_stages` (yields
    ``(name, callable)`` pairs that transform the running tensor stage by stage).
    """

    num_features: int
    input_spec: InputSpec = IMAGENET_RGB
    stage_info: list[dict]

    def __init__(self, frozen_bn: bool = False) -> None:
        super().__init__()
        self.frozen_bn = bool(frozen_bn)
        self.taps: tuple[str, ...] = ()

    # -- taps --------------------------------------------------------------------------------------------
    def _set_taps(self, taps: list[str] | tuple[str, ...] | str | None, default: tuple[str, ...]) -> None:
        names = [info["module"] for info in self.stage_info]
        if taps is None:
            taps = default
        elif isinstance(taps, str):
            taps = tuple(t.strip() for t in taps.split(",") if t.strip())
        unknown = [t for t in taps if t not in names]
        if unknown or not taps:
            raise ModelConfigError(f"unknown tap(s) {unknown or taps!r} for {type(self).__name__}; "
                                   f"choose among: {', '.join(names)}")
        self.taps = tuple(sorted(set(taps), key=names.index))

    @property
    def feature_info(self) -> list[dict]:
        """One ``dict(num_chs, reduction, module)`` per map returned by :meth:`forward_intermediates`."""
        return [dict(info) for info in self.stage_info if info["module"] in self.taps]

    def _stages(self):
        """Yield ``(stage name, callable)`` in forward order; every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define _stages()")

    # -- forward -----------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` → last feature map ``(B, num_features, H', W')``."""
        for _, stage in self._stages():
            x = stage(x)
        return x

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, 3, H, W)`` → the maps of ``self.taps`` in forward order (see ``feature_info``)."""
        outs = []
        last = self.taps[-1]
        for name, stage in self._stages():
            x = stage(x)
            if name in self.taps:
                outs.append(x)
                if name == last:
                    break
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    # -- frozen BatchNorm --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Backbone:
        """Like :meth:`nn.Module.train`, but BatchNorm layers stay in eval mode when ``frozen_bn``."""
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, _BatchNorm):  # also SyncBatchNorm after convert_sync_batchnorm
                    module.eval()
        return self


RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def resnet_stage_info(widths: list[int], stage3_stride: int) -> list[dict]:
    """``feature_info`` rows of ``layer1..layer4``: reductions 4, 8, 16, 32 (8, 8, 16 with stage-3 stride 1)."""
    reductions = (4, 8, 16, 32) if stage3_stride == 2 else (4, 8, 8, 16)
    return [dict(num_chs=c, reduction=r, module=n) for c, r, n in zip(widths, reductions, RESNET_STAGES)]


def resnet_stages(net: nn.Module):
    """``_stages`` of a trunk with torchvision ResNet attribute names (``conv1, bn1, relu, maxpool, layerN``)."""
    yield "stem", lambda x: net.maxpool(net.relu(net.bn1(net.conv1(x))))
    for name in RESNET_STAGES:
        yield name, getattr(net, name)


def check_stage3_stride(stage3_stride: int) -> int:
    if stage3_stride not in (1, 2):
        raise ModelConfigError(f"stage3_stride must be 1 or 2, got {stage3_stride!r}")
    return int(stage3_stride)


def set_stage_stride(stage: nn.Module, stride: int) -> None:
    """Set the spatial stride of a ResNet stage's first block (every strided conv in it, incl. downsample).

    Works for torchvision V1.5 blocks (stride on the 3x3), Caffe blocks (stride on the first 1x1) and
    BasicBlocks alike; no dilation is added (CGD/CLF "stage 3 with stride 1").
    """
    first_block = stage[0]
    for module in first_block.modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (stride, stride)
