"""Context-aware regional attention — Kim & Yoon, "Regional Attention Based Deep Feature for Image
Retrieval", BMVC 2018 (jaeyoon1603/Retrieval-RegionalAttention).

For the R-MAC regions r of the backbone map h (``grid``: ``original``, the default, is the original's grid on the
image's pixel size rounded to the 1/32 map, :func:`~metric_retrieval.models.heads.rmac.original_map_boxes`;
``cirtorch`` is the feature-map grid of Tolias/cirtorch, see :mod:`metric_retrieval.models.heads.rmac`):

* ``m_r`` = region max (RoI-MAC), ``z_r = P (m_r − μ)`` PCA-whitening (buffers; identity by default; RA learns
  it on raw region vectors, no L2 before it), ``N(z_r)`` = L2;
* attention ``α_r = softplus(conv2(φ(conv1([mean_r(h) ‖ mean(h)]))))``: 1x1 ``Conv1d(2C → 64)`` → φ (``tanh``,
  as the authors' test script that evaluates the released weights; ``softplus`` as their training script) →
  ``Conv1d(64 → 1)`` → softplus, so ``α_r ≥ 0``; it sees the raw, un-whitened map;
* descriptor ``v = (1/R) Σ_r α_r N(z_r)``, embedding ``L2(v)``.

With ``grid: original`` the head reads the input image's pixel size (``uses_image_size``) and a landmark loader
resizes images as the original's ``Measure_OxfordParis.py`` (``landmark_resize = "bilinear"``: the long side
exactly ``imsize``, bilinear, small images upsampled; queries cropped from the resized image); ``grid: cirtorch``
keeps cirtorch's thumbnail. Deviation: RA's "max-then-L2" normalisation (divide by the row max, then L2) is
plain L2 here — identical whenever the row max is positive, without RA's sign flip otherwise.

Only the attention parameters are learnable: the whitening is a buffer, :func:`models.build_model` freezes
the backbone for this head by default (``freeze_backbone``), and the optional ImageNet training classifier
(``num_classes > 0``: ``Linear(C, M)`` on the attention-weighted mean of the raw RoI-MACs, no PCA,
no L2; initialise it from the backbone's ImageNet classifier with :meth:`set_classifier`) is frozen.
The attention module's keys (``attention.conv_att_1``/``conv_att_2``) match RA's released
``ContextAwareRegionalAttention_weights.pth``: ``head.attention.load_state_dict(...)`` loads it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metric_retrieval.evaluation.whitening import load_whitening
from metric_retrieval.models.checkpoint import load_model_state, read_state_dict
from metric_retrieval.models.heads.base import EMBEDDING_NORM, Head, ModelConfigError, l2n
from metric_retrieval.models.heads.rmac import (
    RegionWhitening,
    box_pool,
    check_fixed_width,
    map_regions,
    original_map_boxes,
    region_pool,
)
from metric_retrieval.utils.options import Option

__all__ = ["ATTENTION_ACTIVATIONS", "GRIDS", "ContextAwareRegionalAttention", "RegionalAttentionHead"]

ATTENTION_ACTIVATIONS = {"tanh": torch.tanh, "softplus": F.softplus}
GRIDS = ("original", "cirtorch")


class ContextAwareRegionalAttention(nn.Module):
    """Region weights from ``[region mean ‖ global mean]``: ``(B, R, C), (B, C)`` → ``(B, R)``, ≥ 0."""

    def __init__(self, channels: int, hidden: int = 64, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ATTENTION_ACTIVATIONS:
            raise ModelConfigError(f"unknown attention_activation {activation!r}; choose one of: "
                                   f"{', '.join(ATTENTION_ACTIVATIONS)}")
        self.activation = activation
        self.conv_att_1 = nn.Conv1d(2 * channels, hidden, kernel_size=1)
        self.conv_att_2 = nn.Conv1d(hidden, 1, kernel_size=1)

    def forward(self, region_means: torch.Tensor, global_mean: torch.Tensor) -> torch.Tensor:
        context = global_mean.unsqueeze(1).expand_as(region_means)
        c = torch.cat([region_means, context], dim=2).transpose(1, 2)  # (B, 2C, R)
        hidden = ATTENTION_ACTIVATIONS[self.activation](self.conv_att_1(c))
        return F.softplus(self.conv_att_2(hidden)).squeeze(1)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class RegionalAttentionHead(Head):
    """Attention-weighted aggregation of whitened R-MAC regions.

    Args:
        in_channels: backbone width C (2048 for ResNet-101); the embedding has the same width.
        feature_dim: must be ``None`` or C.
        num_classes: M > 0 adds the frozen training classifier (ImageNet: 1000); logits are then returned.
        levels: R-MAC levels L (default 5, RA's test setting).
        attention_activation: ``tanh`` (default, released weights) or ``softplus`` (RA training script).
        attention_hidden: hidden width of the attention network (default 64).
        grid: ``original`` (default: the original's pixel grid, needs ``image_size`` in :meth:`forward`) or
            ``cirtorch`` (the feature-map grid).
        embedding_norm: L2-normalise the descriptor (default True).
    """

    options = (Option("levels", int, 5, "R-MAC grid levels L of the regions", low=1, flag=False),
               Option("attention_activation", str, "tanh", "attention non-linearity (tanh: released weights, "
                      "softplus: RA training script)", choices=tuple(ATTENTION_ACTIVATIONS), flag=False),
               Option("attention_hidden", int, 64, "hidden width of the attention network", low=1, flag=False),
               Option("grid", str, "original", "region grid: original (the authors' pixel grid, resize to exactly "
                      "--imsize, bilinear) or cirtorch (the feature-map grid, thumbnail)", choices=GRIDS, flag=False),
               EMBEDDING_NORM)
    backbone_defaults = {"frozen_bn": True}
    freeze_backbone_default = True

    def __init__(self, in_channels: int, feature_dim: int | None = None, num_classes: int | None = None,
                 levels: int = 5, attention_activation: str = "tanh", attention_hidden: int = 64,
                 grid: str = "original", embedding_norm: bool = True) -> None:
        super().__init__()
        if grid not in GRIDS:
            raise ModelConfigError(f"unknown grid {grid!r}; choose one of: {', '.join(GRIDS)}")
        self.grid = grid
        self.uses_image_size = grid == "original"
        self.landmark_resize = "bilinear" if grid == "original" else "thumbnail"
        self.feature_dim = check_fixed_width("regional_attention", in_channels, feature_dim)
        self.num_classes = self._num_classes(num_classes)
        self.levels = self._positive("levels", levels)
        self.embedding_norm = embedding_norm
        self.whitening = RegionWhitening(in_channels)
        self.attention = ContextAwareRegionalAttention(in_channels, attention_hidden, attention_activation)
        self.classifier = nn.Linear(in_channels, self.num_classes) if self.num_classes else None
        if self.classifier is not None:
            self.classifier.requires_grad_(False)

    extra_files = {"attention_weights": "the released attention weights (RA's "
                                        "ContextAwareRegionalAttention_weights.pth)",
                   "region_whitening": "per-region PCA-whitening file (evaluation.save_whitening)"}

    def load_extra(self, name: str, path: str) -> None:
        """``attention_weights``: a state dict of :attr:`attention`; ``region_whitening``: a whitening file."""
        if name == "attention_weights":
            load_model_state(self.attention, read_state_dict(path), what=path)
        elif name == "region_whitening":
            mean, projection = load_whitening(path)
            self.set_whitening(torch.as_tensor(mean).float(), torch.as_tensor(projection).float())
        else:
            super().load_extra(name, path)

    def set_whitening(self, mean: torch.Tensor, projection: torch.Tensor) -> None:
        """PCA-whitening ``P (m_r − mean)`` of the raw region MACs (``mean (C,)``, ``projection (C, C)``)."""
        self.whitening.set(mean, projection)

    def set_classifier(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Copy a ``(M, C)`` weight and ``(M,)`` bias (e.g. the ImageNet fc) into the classifier."""
        if self.classifier is None:
            raise ModelConfigError("this regional_attention head was built with num_classes=0: no classifier")
        with torch.no_grad():
            self.classifier.weight.copy_(weight)
            self.classifier.bias.copy_(bias)

    def _pool(self, x: torch.Tensor, image_size: tuple[int, int] | None, mode: str) -> torch.Tensor:
        """Each region of ``x (B, C, H, W)`` pooled (``max`` or ``mean``): ``(B, R, C)``."""
        if self.grid == "cirtorch":
            return region_pool(x, map_regions(x, self.levels), mode)
        if image_size is None:
            raise ModelConfigError("the regional_attention head's original grid needs the input image's pixel "
                                   "size: call it through the model (or pass image_size), or use grid=cirtorch")
        boxes = original_map_boxes(image_size[0], image_size[1], int(x.shape[-2]), int(x.shape[-1]), self.levels)
        return box_pool(x, boxes, mode)

    def region_weights(self, x: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Attention ``α`` ``(B, R)`` of the regions of ``x (B, C, H, W)`` (an ``image_size`` ``(H, W)`` pixel
        image for the original grid)."""
        return self.attention(self._pool(x, image_size, "mean"), x.mean(dim=(-2, -1)))

    def forward(self, x: torch.Tensor, image_size: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, C, H, W)`` (of ``image_size`` ``(H, W)`` pixel images) → ``(embedding (B, C), logits (B, M) or
        None)``."""
        macs = self._pool(x, image_size, "max")  # (B, R, C), raw
        alpha = self.region_weights(x, image_size).unsqueeze(2)  # (B, R, 1)
        v = (alpha * l2n(self.whitening(macs))).mean(dim=1)
        logits = self.classifier((alpha * macs).mean(dim=1)) if self.classifier is not None else None
        return (l2n(v) if self.embedding_norm else v), logits
