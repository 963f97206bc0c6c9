"""What every head shares: the forward contract, output width and paper-default backbone options.

A head maps the backbone output (one map ``(B, C, H, W)``, or the list of tapped maps when
``uses_intermediates``) to ``(embedding (B, D), logits (B, M) or None)``. Its constructor takes
``in_channels`` (``C``, or the list of tap widths), ``feature_dim`` (``D``; ``None`` = the head's default),
``num_classes`` (``M``; ``None``/0 = no classifier) and keyword options. ``backbone_defaults`` are the
backbone options the paper used with this head and ``freeze_backbone_default`` whether the paper kept the
trunk fixed; :func:`models.build_model` applies both unless the caller sets the option. ``input_spec`` is
``None`` (the model takes the backbone's) unless the head's recipe trains the trunk on another input (ABIR).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metric_retrieval.models.backbones.base import InputSpec
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.utils.options import Option

__all__ = ["EMBEDDING_NORM", "Head", "ModelConfigError", "l2n"]

# every head's last step (a constructor option, set with --model_option or the head's YAML node)
EMBEDDING_NORM = Option("embedding_norm", bool, True, "L2-normalise the embedding", flag=False)


def l2n(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise L2 normalisation ``x / max(||x||_2, eps)`` over the last dimension."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


class Head(nn.Module):
    """Base class of the heads in ``HEADS`` (one level deep; subclasses write ``forward``)."""

    uses_intermediates: ClassVar[bool] = False
    # forward(x, image_size=(H, W)): the head needs the input image's pixel size (the network input's H x W),
    # not only its map (a grid computed on pixels, as the regional-attention original's)
    uses_image_size: bool = False
    # how a landmark loader resizes images for this head: thumbnail (cirtorch: LANCZOS, never upsampled) or
    # bilinear (exactly imsize, upsampling small images: the regional-attention original)
    landmark_resize: str = "thumbnail"
    backbone_defaults: ClassVar[dict[str, Any]] = {}
    freeze_backbone_default: ClassVar[bool] = False  # off-the-shelf descriptors train only their head
    # parameter-name suffix -> learning-rate multiplier for parameters trained at their own rate without
    # weight decay (e.g. cirtorch's GeM p: x10); the trainer turns them into optimiser parameter groups
    lr_multipliers: ClassVar[dict[str, float]] = {}
    # the network input this head's recipe feeds the backbone, when it is not what the backbone declares
    input_spec: ClassVar[InputSpec | None] = None
    feature_dim: int
    num_classes: int

    # files shipped apart from the weights that a command line may load into this head: flag dest -> help
    extra_files: ClassVar[dict[str, str]] = {}

    # -- self-description (see README "Architecture") ------------------------------------------------------
    # the head's own options (metric_retrieval.utils.options): train.py flags / YAML keys, or (flag=False) constructor
    # options set with --model_option / the YAML head node; those with to_builder go to the constructor as is
    options: ClassVar[tuple[Option, ...]] = ()

    @staticmethod
    def options_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
        """Constructor options translated from the head's ``to_builder=False`` options (none by default)."""
        return {}

    def load_extra(self, name: str, path: str) -> None:
        """Load the :attr:`extra_files` entry ``name`` from ``path``."""
        raise ModelConfigError(f"{type(self).__name__} loads no extra file {name!r}")

    @staticmethod
    def _num_classes(num_classes: int | None) -> int:
        if num_classes is None:
            return 0
        if int(num_classes) < 0:
            raise ModelConfigError(f"num_classes must be >= 0, got {num_classes}")
        return int(num_classes)

    @staticmethod
    def _positive(name: str, value: int) -> int:
        if int(value) <= 0:
            raise ModelConfigError(f"{name} must be a positive integer, got {value!r}")
        return int(value)
