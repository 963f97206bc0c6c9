"""VGG16 convolutional trunk with taps at conv3_3, conv4_3 and conv5_3 (ABIR).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015
(arXiv 1409.1556). ``features`` is torchvision's ``vgg16().features`` without its last max-pool (as cirtorch
does), so torchvision VGG16 state dicts load unchanged (``classifier.*`` dropped). Taps are taken after the
ReLU of each named conv, before the next max-pool: at 224 px conv3_3 → 256x56x56,
conv4_3 → 512x28x28, conv5_3 → 512x14x14 (= ``forward_features``).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from metric_retrieval.models.backbones.base import FROZEN_BN, IMAGENET_RGB, TAPS, Backbone
from metric_retrieval.models.backbones.pretrained import load_pretrained
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.options import declare

torchvision = lazy_module("torchvision")  # imported when the trunk is built: `--help` needs no torchvision
tv_vgg = lazy_module("torchvision.models.vgg")

__all__ = ["VGG16Trunk", "vgg16"]

# tap name -> index (exclusive end) in vgg16().features right after that conv's ReLU
_TAP_ENDS = {"conv1_2": 4, "conv2_2": 9, "conv3_3": 16, "conv4_3": 23, "conv5_3": 30}
_TAP_INFO = {"conv1_2": (64, 1), "conv2_2": (128, 2), "conv3_3": (256, 4), "conv4_3": (512, 8),
             "conv5_3": (512, 16)}
DEFAULT_TAPS = ("conv3_3", "conv4_3", "conv5_3")


class VGG16Trunk(Backbone):
    """VGG16 ``features[:30]`` (ends with conv5_3 + ReLU).

    Args:
        pretrained: see :mod:`metric_retrieval.models.backbones.pretrained` (``True`` = torchvision ``IMAGENET1K_V1``).
        frozen_bn: accepted for a uniform interface; VGG16 has no BatchNorm, so it changes nothing.
        taps: named convs returned by :meth:`forward_intermediates` (default conv3_3, conv4_3, conv5_3).
    """

    def __init__(self, pretrained: Any = False, frozen_bn: bool = False,
                 taps: list[str] | str | None = None) -> None:
        super().__init__(frozen_bn=frozen_bn)
        self.display_name = "VGG16"
        # torchvision's own layer factory and config "D" (= vgg16().features) without building the 120M-param
        # classifier; the init is torchvision VGG's (kaiming-normal fan_out, zero bias).
        self.features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)[:30]
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.stage_info = [dict(num_chs=c, reduction=r, module=n) for n, (c, r) in _TAP_INFO.items()]
        self.num_features = 512
        self.input_spec = IMAGENET_RGB
        self._set_taps(taps, DEFAULT_TAPS)
        self.pretrained_source = load_pretrained(self, pretrained, default="IMAGENET1K_V1",
                                                 weights_enum=torchvision.models.VGG16_Weights)

    def _stages(self):
        start = 0
        for name, end in _TAP_ENDS.items():
            yield name, self.features[start:end]
            start = end


@declare(FROZEN_BN, TAPS)
def vgg16(pretrained: Any = False, frozen_bn: bool = False,
          taps: list[str] | str | None = None) -> VGG16Trunk:
    """VGG16 conv trunk; see :class:`VGG16Trunk`."""
    return VGG16Trunk(pretrained=pretrained, frozen_bn=frozen_bn, taps=taps)


vgg16.imagenet_weights = lambda: torchvision.models.VGG16_Weights.IMAGENET1K_V1  # what pretrained="imagenet" loads
