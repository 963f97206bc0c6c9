"""torchvision ResNet-18/50/101 and ResNeXt-50 32x4d trunks (avgpool and fc dropped).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv 1512.03385); Xie et al.,
"Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017 (arXiv 1611.05431).
Built from the torchvision definitions (V1.5 bottleneck: stride on the 3x3 conv), so torchvision state dicts
load unchanged. ``stage3_stride=1`` rebuilds ``layer3`` without downsampling (no dilation) as CGD and CLF do:
ResNet-50 at 224 px then ends in a 2048x14x14 map instead of 2048x7x7.
"""
from __future__ import annotations

import functools
from typing import Any

from metric_retrieval.models.backbones.base import (
    FROZEN_BN,
    IMAGENET_RGB,
    RESNET_STAGES,
    STAGE3_STRIDE,
    TAPS,
    Backbone,
    check_stage3_stride,
    resnet_stage_info,
    resnet_stages,
    set_stage_stride,
)
from metric_retrieval.models.backbones.pretrained import load_pretrained
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.options import declare

torchvision = lazy_module("torchvision")  # imported when a trunk is built: `--help` needs no torchvision

__all__ = ["TorchvisionResNet", "imagenet_weights"]

# arch -> (weights enum class name, default member for pretrained=True, display name)
_ARCHS = {
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1", "ResNet18"),
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V1", "ResNet50"),  # resnet50-19c8e357, as CGD used
    "resnet101": ("ResNet101_Weights", "IMAGENET1K_V1", "ResNet101"),
    "resnext50_32x4d": ("ResNeXt50_32X4D_Weights", "IMAGENET1K_V1", "ResNeXt50"),
}


def imagenet_weights(arch: str) -> Any:
    """The torchvision weights ``pretrained="imagenet"`` loads for ``arch``."""
    enum_name, default, _ = _ARCHS[arch]
    return getattr(torchvision.models, enum_name)[default]


class TorchvisionResNet(Backbone):
    """A torchvision ResNet/ResNeXt trunk: ``conv1, bn1, relu, maxpool, layer1..layer4`` (same key names).

    Args:
        arch: ``resnet18``, ``resnet50``, ``resnet101`` or ``resnext50_32x4d``.
        pretrained: see :mod:`metric_retrieval.models.backbones.pretrained` (default ``False``; ``True`` = ImageNet V1).
        stage3_stride: 2 (torchvision) or 1 (CGD/CLF: no downsampling in ``layer3``).
        frozen_bn: keep BatchNorm statistics fixed in ``train()`` (affine parameters stay trainable).
        taps: stages returned by :meth:`forward_intermediates` (default all four ``layer1..layer4``).
    """

    def __init__(self, arch: str = "resnet50", pretrained: Any = False, stage3_stride: int = 2,
                 frozen_bn: bool = False, taps: list[str] | str | None = None) -> None:
        super().__init__(frozen_bn=frozen_bn)
        if arch not in _ARCHS:
            raise ModelConfigError(f"unknown torchvision ResNet arch {arch!r}; choose one of: "
                                   f"{', '.join(_ARCHS)}")
        check_stage3_stride(stage3_stride)
        self.arch = arch
        self.display_name = _ARCHS[arch][2]
        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage3_stride = stage3_stride
        if stage3_stride == 1:
            set_stage_stride(self.layer3, 1)
        last_convs = [getattr(stage[-1], "conv3", None) or stage[-1].conv2  # Bottleneck or BasicBlock
                      for stage in (self.layer1, self.layer2, self.layer3, self.layer4)]
        widths = [conv.out_channels for conv in last_convs]
        self.stage_info = resnet_stage_info(widths, stage3_stride)
        self.num_features = widths[-1]
        self.input_spec = IMAGENET_RGB
        self._set_taps(taps, RESNET_STAGES)
        enum_name, default, _ = _ARCHS[arch]
        self.pretrained_source = load_pretrained(self, pretrained,
                                                 weights_enum=getattr(torchvision.models, enum_name),
                                                 default=default)

    def _stages(self):
        return resnet_stages(self)


def _make(arch: str):
    @declare(STAGE3_STRIDE, FROZEN_BN, TAPS)
    def builder(pretrained: Any = False, stage3_stride: int = 2, frozen_bn: bool = False,
                taps: list[str] | str | None = None) -> TorchvisionResNet:
        return TorchvisionResNet(arch, pretrained=pretrained, stage3_stride=stage3_stride,
                                 frozen_bn=frozen_bn, taps=taps)

    builder.__name__ = arch
    builder.__doc__ = f"torchvision ``{arch}`` trunk; see :class:`TorchvisionResNet` for the options."
    builder.imagenet_weights = functools.partial(imagenet_weights, arch)  # what pretrained="imagenet" loads
    return builder


resnet18 = _make("resnet18")
resnet50 = _make("resnet50")
resnet101 = _make("resnet101")
resnext50_32x4d = _make("resnext50_32x4d")


