"""Caffe-style ResNets: SE-ResNet-50 (Cadene weights, CLF) and ResNet-101 (regional attention).

* SE-ResNet-50 — Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv 1709.01507), in the layout of
  Cadene's ``pretrainedmodels`` ``se_resnet50`` (weights ``se_resnet50-ce0d4300.pth``): bottleneck with the
  stride on the FIRST 1x1 conv, SE on the residual branch before the addition (GAP → 1x1 conv C→C/16 with
  bias → ReLU → 1x1 conv C/16→C with bias → sigmoid → channel scale). Stem max-pool k3/s2/**pad 1**/ceil as in
  CLF's ``EResNet`` (Cadene's own uses pad 0): 112 → 57, final map 2048x15x15 at 224 px
  with ``stage3_stride=1``. :func:`convert_cadene_se_resnet50` renames a Cadene state dict into these keys.
* ResNet-101 (Caffe) — the converted Caffe ResNet-101 used by Kim & Yoon, "Regional Attention Based Deep
  Feature for Image Retrieval", BMVC 2018: stride on the first 1x1 conv, max-pool
  k3/s2/pad 0/ceil, BGR 0–255 mean-subtracted input (mean 103.939, 116.779, 123.68; std 1).
  There are no torchvision weights for it: pass the converted file (keys ``conv1``, ``bn1``,
  ``layer1.0.conv1``, ..., ``fc.*`` ignored) as ``pretrained=PATH``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metric_retrieval.models.backbones.base import (
    CAFFE_BGR255,
    FROZEN_BN,
    IMAGENET_RGB,
    RESNET_STAGES,
    STAGE3_STRIDE,
    TAPS,
    Backbone,
    InputSpec,
    check_stage3_stride,
    resnet_stage_info,
    resnet_stages,
    set_stage_stride,
)
from metric_retrieval.models.backbones.pretrained import load_pretrained
from metric_retrieval.models.se import SqueezeExcite
from metric_retrieval.utils.options import declare

__all__ = ["CaffeBottleneck", "CaffeResNet", "caffe_resnet101", "convert_cadene_se_resnet50",
           "seresnet50"]

class CaffeBottleneck(nn.Module):
    """ResNet v1 (Caffe) bottleneck: 1x1 (stride) → 3x3 → 1x1, optional SE on the branch before the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 se_reduction: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SqueezeExcite(planes * 4, se_reduction) if se_reduction else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se_module is not None:
            out = self.se_module(out)
        return self.relu(out + identity)


class CaffeResNet(Backbone):
    """Caffe-layout ResNet trunk ``conv1, bn1, relu, maxpool, layer1..layer4`` (torchvision key names).

    Args:
        layers: blocks per stage (``[3, 4, 6, 3]`` for 50 layers, ``[3, 4, 23, 3]`` for 101).
        se_reduction: SE reduction ratio (``None`` = plain bottleneck).
        maxpool_padding: stem max-pool padding (k3, s2, ceil_mode=True always).
        input_spec: the normalisation the weights expect.
        pretrained: ``False`` or a local file / state dict (see :mod:`metric_retrieval.models.backbones.pretrained`).
        stage3_stride: 2, or 1 for an un-downsampled ``layer3`` (CLF).
        frozen_bn: keep BatchNorm statistics fixed in ``train()``.
        taps: stages returned by :meth:`forward_intermediates` (default ``layer1..layer4``).
        convert: key conversion applied to loaded files (Cadene names → ours).
        display_name: name used in tables.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), se_reduction: int | None = None,
                 maxpool_padding: int = 0, input_spec: InputSpec = CAFFE_BGR255, pretrained: Any = False,
                 stage3_stride: int = 2, frozen_bn: bool = False, taps: list[str] | str | None = None,
                 convert=None, display_name: str = "CaffeResNet") -> None:
        super().__init__(frozen_bn=frozen_bn)
        check_stage3_stride(stage3_stride)
        self.display_name = display_name
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=maxpool_padding, ceil_mode=True)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * 4))
            stage = [CaffeBottleneck(inplanes, planes, stride, downsample, se_reduction)]
            inplanes = planes * 4
            stage += [CaffeBottleneck(inplanes, planes, 1, None, se_reduction) for _ in range(1, blocks)]
            self.add_module(RESNET_STAGES[i], nn.Sequential(*stage))
        self.stage3_stride = stage3_stride
        if stage3_stride == 1:
            set_stage_stride(self.layer3, 1)
        self.stage_info = resnet_stage_info([256, 512, 1024, 2048], stage3_stride)
        self.num_features = 2048
        self.input_spec = input_spec
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self._set_taps(taps, RESNET_STAGES)
        self.pretrained_source = load_pretrained(self, pretrained, convert=convert,
                                                 hint=" (use a converted Caffe/Cadene file)")

    def _stages(self):
        return resnet_stages(self)


def convert_cadene_se_resnet50(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Cadene ``se_resnet50`` state dict to :class:`CaffeResNet` keys.

    ``layer0.conv1.*`` → ``conv1.*``, ``layer0.bn1.*`` → ``bn1.*``, ``last_linear.*`` dropped; the block keys
    (``layerN.i.conv1``, ``.bn1``, ..., ``.se_module.fc1``, ``.se_module.fc2``, ``.downsample.0/1``) are the
    same in both. A dict without ``layer0.`` keys is returned unchanged (already converted).
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("last_linear."):
            continue
        if key.startswith("layer0."):
            key = key[len("layer0."):]
        out[key] = value
    return out


@declare(STAGE3_STRIDE, FROZEN_BN, TAPS)
def seresnet50(pretrained: Any = False, stage3_stride: int = 2, frozen_bn: bool = False,
               taps: list[str] | str | None = None) -> CaffeResNet:
    """SE-ResNet-50 (Cadene layout, CLF pad-1 stem pool); ``pretrained`` = a local Cadene/converted file."""
    return CaffeResNet((3, 4, 6, 3), se_reduction=16, maxpool_padding=1, input_spec=IMAGENET_RGB,
                       pretrained=pretrained, stage3_stride=stage3_stride, frozen_bn=frozen_bn, taps=taps,
                       convert=convert_cadene_se_resnet50, display_name="SEResNet50")


@declare(STAGE3_STRIDE, FROZEN_BN, TAPS)
def caffe_resnet101(pretrained: Any = False, stage3_stride: int = 2, frozen_bn: bool = False,
                    taps: list[str] | str | None = None) -> CaffeResNet:
    """Caffe ResNet-101 (regional attention backbone): BGR 0–255 input, pad-0 ceil stem pool."""
    return CaffeResNet((3, 4, 23, 3), se_reduction=None, maxpool_padding=0, input_spec=CAFFE_BGR255,
                       pretrained=pretrained, stage3_stride=stage3_stride, frozen_bn=frozen_bn, taps=taps,
                       display_name="ResNet101-Caffe")
