"""Backbones (``BACKBONES`` registry): trunks mapping images to feature maps (timm-style contract).

Every entry is a builder with explicit keyword options (``pretrained``, ``stage3_stride``, ``frozen_bn``,
``taps``; VGG16 has no ``stage3_stride``) returning a :class:`Backbone`; the options that are ``train.py``
flags are declared on the builder (:func:`utils.options.declare`), and so are its torchvision ImageNet weights
(``builder.imagenet_weights()``, absent when it has none); ``timm:<name>`` builds any timm model
(:mod:`models.backbones.timm_backbone`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from models.backbones.base import CAFFE_BGR255, DEEP_METRIC_BGR255, IMAGENET_RGB, Backbone, InputSpec
from models.backbones.caffe_resnet import CaffeResNet, caffe_resnet101, convert_cadene_se_resnet50, seresnet50
from models.backbones.pretrained import cached_weight_file
from models.backbones.resnet import TorchvisionResNet, resnet18, resnet50, resnet101, resnext50_32x4d
from models.backbones.timm_backbone import TimmBackbone, timm_backbone
from models.backbones.vgg import VGG16Trunk, vgg16
from utils.registry import Registry

__all__ = ["BACKBONES", "CAFFE_BGR255", "DEEP_METRIC_BGR255", "IMAGENET_RGB", "Backbone", "CaffeResNet", "InputSpec",
           "TimmBackbone", "TorchvisionResNet", "VGG16Trunk", "build_backbone", "convert_cadene_se_resnet50",
           "imagenet_weight_file", "imagenet_weights"]

BACKBONES = Registry("backbone")
BACKBONES.register("resnet18")(resnet18)
BACKBONES.register("resnet50")(resnet50)
BACKBONES.register("resnet101")(resnet101)
BACKBONES.register("resnext50", aliases=("resnext50_32x4d",))(resnext50_32x4d)
BACKBONES.register("seresnet50", aliases=("se_resnet50",))(seresnet50)
BACKBONES.register("caffe_resnet101", aliases=("resnet101_caffe",))(caffe_resnet101)
BACKBONES.register("vgg16")(vgg16)
BACKBONES.register_family("timm", timm_backbone)  # timm:<any timm model name>


def build_backbone(name: str, **options: Any) -> Backbone:
    """Build the backbone registered as ``name`` (unknown name → ``UnknownOptionError`` listing the names)."""
    return BACKBONES.build(name, **options)


def imagenet_weights(name: str) -> Any | None:
    """The torchvision weights that ``pretrained="imagenet"`` loads for backbone ``name``, as its builder declares
    them (``builder.imagenet_weights()``); ``None`` if it has none (the Caffe/Cadene trunks need a file)."""
    declared = getattr(BACKBONES.get(name), "imagenet_weights", None)
    return None if declared is None else declared()


def imagenet_weight_file(name: str) -> Path | None:
    """The cached file of backbone ``name``'s ImageNet weights (``$TORCH_HOME/hub/checkpoints``), if present."""
    weights = imagenet_weights(name)
    return None if weights is None else cached_weight_file(weights)
